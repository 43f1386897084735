"""Queues: their sizes and latencies, their entries, clearing one."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from .._payload import DECODE_ERRORS, DECODER
from ._common import _client, _text
from ._records import JobRecord

if TYPE_CHECKING:
    from .._app import App


class QueueInfo(msgspec.Struct, frozen=True):
    """A queue's size and latency (age in seconds of its oldest job)."""

    name: str
    size: int
    latency: float


async def queues(app: App) -> list[QueueInfo]:
    """Every known queue, by name."""
    client = await _client(app)
    k = app.keys
    names = sorted(_text(n) for n in await client.smembers(k.queues))
    if not names:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for n in names:
            pipe.llen(k.queue(n))
            pipe.lindex(k.queue(n), -1)
        res = await pipe.execute()
    now = time.time()
    out = []
    for i, n in enumerate(names):
        size, oldest = int(res[2 * i]), res[2 * i + 1]
        latency = 0.0
        if oldest is not None:
            try:
                p = DECODER.decode(oldest)
                latency = max(0.0, now - (p.enqueued_at or p.created_at))
            except DECODE_ERRORS:
                pass
        out.append(QueueInfo(n, size, round(latency, 3)))
    return out


async def queue_entries(app: App, name: str, offset: int = 0, limit: int = 50) -> list[JobRecord]:
    """Jobs waiting in a queue, oldest (next to run) first."""
    client = await _client(app)
    key = app.keys.queue(name)
    raws: list[Any] = await client.lrange(key, -(offset + limit), -(offset + 1))
    return [JobRecord.from_raw(r) for r in reversed(raws)]


async def clear_queue(app: App, name: str) -> int:
    """Delete every job waiting in a queue; returns how many there were."""
    client = await _client(app)
    k = app.keys
    async with client.pipeline(transaction=False) as pipe:
        pipe.llen(k.queue(name))
        pipe.delete(k.queue(name), k.wake(name))
        pipe.srem(k.queues, name)
        size, _, _ = await pipe.execute()
    return int(size)
