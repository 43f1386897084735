"""Queues: their sizes and latencies, their entries, clearing one."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from .._payload import DECODE_ERRORS, DECODER
from ._common import _clear, _stores
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
    """Every known queue, by name (with shards: sizes summed, the oldest job's wait)."""
    now = time.time()
    merged: dict[str, QueueInfo] = {}
    for store in await _stores(app):
        for n, size, oldest in await store.queue_heads():
            info = QueueInfo(n, size, latency(oldest, now))
            had = merged.get(n)
            if had is not None:
                info = QueueInfo(n, had.size + size, max(had.latency, info.latency))
            merged[n] = info
    return [merged[n] for n in sorted(merged)]


async def queue_entries(app: App, name: str, offset: int = 0, limit: int = 50) -> list[JobRecord]:
    """Jobs waiting in a queue, oldest (next to run) first (with shards, each shard's
    first ``offset + limit``, merged by the time they were enqueued)."""
    stores = await _stores(app)
    if len(stores) == 1:
        return [JobRecord.from_raw(r) for r in await stores[0].queue_entries(name, offset, limit)]
    merged = [
        JobRecord.from_raw(r)
        for store in stores
        for r in await store.queue_entries(name, 0, offset + limit)
    ]
    merged.sort(key=lambda r: r.enqueued_at or r.created_at)
    return merged[offset : offset + limit]


async def clear_queue(app: App, name: str) -> int:
    """Delete every job waiting in a queue; returns how many there were. The unique
    jobs among them release their locks (each only if it still holds its lock). Jobs
    pushed while it runs stay; jobs a worker took before it are not touched."""
    return sum([await _clear(store, store.keys.queue(name), name) for store in await _stores(app)])


async def find_queued(app: App, name: str, jid: str) -> JobRecord:
    """The job with this jid waiting in queue ``name``; :class:`JobNotFound` if none.
    Reads the queue through (a thousand jobs a round trip), as Sidekiq's
    ``Queue#find_job`` does: meant for an operator, not a hot path."""
    check_jid(jid)
    for store in await _stores(app):
        raw = await store.queue_find(name, jid)
        if raw is not None:
            return JobRecord.from_raw(raw)
    raise JobNotFound(f"no job with jid {jid} waiting in queue {name}")


async def delete_queued(app: App, name: str, jid: str) -> JobRecord:
    """Delete the job with this jid from queue ``name``; returns what it was. A unique
    job releases its lock (if it still holds it)."""
    check_jid(jid)
    for store in await _stores(app):
        raw = await store.queue_find(name, jid)
        if raw is not None:
            if not await store.queue_remove(name, raw):
                break
            await store.release_locks([raw])
            return JobRecord.from_raw(raw)
    raise JobNotFound(f"no job with jid {jid} waiting in queue {name}")
