"""Moves shared by the scheduler and the introspection API: sorted-set entries to their
queues, one atomic script per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ._keys import Keys
from ._payload import DECODE_ERRORS, DECODER, ENCODER
from ._redis import Client

if TYPE_CHECKING:
    from ._app import App

__all__ = ["QueuePairs", "promote", "trim_dead"]


class QueuePairs:
    """The (queue list, wake list) key pairs of a script that moves jobs to their queues
    (promote, requeue, reap): each queue's pair is appended to ``keys`` once, and jobs
    refer to it by its 1-based index, as the scripts expect."""

    __slots__ = ("_index", "_keys", "keys")

    def __init__(self, app_keys: Keys, keys: list[str]) -> None:
        self._keys = app_keys
        self.keys = keys
        self._index: dict[str, int] = {}

    def index(self, queue: str) -> int:
        idx = self._index.get(queue)
        if idx is None:
            idx = self._index[queue] = len(self._index) + 1
            self.keys.extend((self._keys.queue(queue), self._keys.wake(queue)))
        return idx


async def trim_dead(app: App, client: Client, now: float) -> None:
    """Keep the dead set within ``dead_max_jobs`` entries and ``dead_timeout`` of age
    (ack.lua does the same when a worker adds a failed job)."""
    key = app.keys.dead
    async with client.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(key, "-inf", f"({now - app.dead_timeout!r}")
        pipe.zremrangebyrank(key, 0, -app.dead_max_jobs - 1)
        await pipe.execute()


async def promote(app: App, client: Client, zset: str, members: Sequence[bytes], now: float) -> int:
    """Move ``members`` of ``zset`` into their queues (as newly enqueued jobs), stamping
    ``enqueued_at``. Entries another process moved first are skipped. Returns how many
    moved."""
    if not members:
        return 0
    pairs = QueuePairs(app.keys, [zset])
    args: list[Any] = []
    for m in members:
        try:
            p = DECODER.decode(m)
        except DECODE_ERRORS:
            # Garbage in a zset still moves on; the worker dead-sets it with a reason.
            queue, data = "default", m
        else:
            queue = p.queue
            data = ENCODER.encode(msgspec.structs.replace(p, enqueued_at=now, at=None))
        args.extend((m, data, pairs.index(queue)))
    return int(await app._scripts.promote(client, pairs.keys, args))
