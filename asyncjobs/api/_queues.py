"""Queues: their sizes and latencies, their entries, clearing one."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from .._payload import DECODE_ERRORS, DECODER
from ._common import _store
from ._records import JobNotFound, JobRecord, check_jid

if TYPE_CHECKING:
    from .._app import App


class QueueInfo(msgspec.Struct, frozen=True):
    """A queue's size and latency (age in seconds of its oldest job)."""

    name: str
    size: int
    latency: float


def latency(oldest: bytes | None, now: float) -> float:
    """Seconds the oldest job of a queue has waited: 0.0 for an empty queue (or an
    undecodable head), as Sidekiq's ``Queue#latency``."""
    if oldest is None:
        return 0.0
    try:
        p = DECODER.decode(oldest)
    except DECODE_ERRORS:
        return 0.0
    return round(max(0.0, now - (p.enqueued_at or p.created_at)), 3)


async def queues(app: App) -> list[QueueInfo]:
    """Every known queue, by name."""
    heads = await (await _store(app)).queue_heads()
    now = time.time()
    return [QueueInfo(n, size, latency(oldest, now)) for n, size, oldest in heads]


async def queue_entries(app: App, name: str, offset: int = 0, limit: int = 50) -> list[JobRecord]:
    """Jobs waiting in a queue, oldest (next to run) first."""
    raws = await (await _store(app)).queue_entries(name, offset, limit)
    return [JobRecord.from_raw(r) for r in raws]


async def clear_queue(app: App, name: str) -> int:
    """Delete every job waiting in a queue; returns how many there were."""
    return await (await _store(app)).clear_queue(name)


async def find_queued(app: App, name: str, jid: str) -> JobRecord:
    """The job with this jid waiting in queue ``name``; :class:`JobNotFound` if none.
    Reads the queue through (a thousand jobs a round trip), as Sidekiq's
    ``Queue#find_job`` does: meant for an operator, not a hot path."""
    raw = await (await _store(app)).queue_find(name, check_jid(jid))
    if raw is None:
        raise JobNotFound(f"no job with jid {jid} waiting in queue {name}")
    return JobRecord.from_raw(raw)


async def delete_queued(app: App, name: str, jid: str) -> JobRecord:
    """Delete the job with this jid from queue ``name``; returns what it was."""
    store = await _store(app)
    raw = await store.queue_find(name, check_jid(jid))
    if raw is None or not await store.queue_remove(name, raw):
        raise JobNotFound(f"no job with jid {jid} waiting in queue {name}")
    return JobRecord.from_raw(raw)
