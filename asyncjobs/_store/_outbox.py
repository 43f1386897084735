"""The transactional outbox's relay in Redis: rows moved once each (outbox.lua)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any, NamedTuple

from .._redis import Script
from ._base import StoreBase, mapped

__all__ = ["OutboxOps", "OutboxRow"]

# Loaded here rather than in the shared script registry: only an outbox relay sends it.
OUTBOX = Script("outbox", (resources.files("asyncjobs._scripts") / "outbox.lua").read_text())


class OutboxRow(NamedTuple):
    """One row of an outbox table, as the relay read (and deleted) it."""

    id: int
    jid: str
    queue: str
    at: float | None
    payload: bytes


class OutboxOps(StoreBase):
    """Move outbox rows into their queues or the schedule, once per row."""

    @mapped
    async def outbox_move(self, rows: Sequence[OutboxRow], ttl: int) -> int:
        """Push (or schedule) each row unless its mark says an earlier call did, and
        mark it for ``ttl`` seconds: one script call. Returns how many were moved (the
        others were moved before). Safe to send again: the marks make it idempotent."""
        if not rows:
            return 0
        k = self.keys
        keys: list[str] = [k.queues, k.schedule, k.wake_scheduler]
        args: list[Any] = [ttl]
        for row in rows:
            keys.extend((k.outbox(row.jid, row.id), k.queue(row.queue), k.wake(row.queue)))
            args.extend((row.queue, "" if row.at is None else repr(row.at), row.payload))
        return int(await OUTBOX(self.fast or self.client, keys, args))

    @mapped
    async def outbox_forget(self, rows: Sequence[OutboxRow]) -> None:
        """Delete the marks of rows whose delete has committed (no relay can see them
        again): the marks live only while a move may be repeated."""
        if rows:
            await self.client.unlink(*(self.keys.outbox(r.jid, r.id) for r in rows))
