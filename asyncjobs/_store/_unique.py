"""Unique jobs, expiring jobs and paused queues: their reads and writes.

A job without a lock never comes here: it goes through ``push.lua`` and its success is
acknowledged by ``done.lua`` as before, with no extra command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from redis.asyncio.cluster import RedisCluster

from .._errors import AsyncJobsError
from .._payload import DECODE_ERRORS, DECODER, Lock
from .._redis import STORE_ERRORS, Script
from ._base import mapped
from ._durable import DurableOps

log = logging.getLogger("asyncjobs.unique")

__all__ = ["UNIQUE_MARK", "Pushed", "UniqueOps"]

# What every payload that carries a unique lock contains (the encoder writes no spaces):
# the scripts that hand back payloads to release (drain.lua, reap.lua) search for it.
UNIQUE_MARK = b'"unique":['


class Pushed(NamedTuple):
    """What ``push_unique.lua`` did with one job."""

    enqueued: bool
    holder: str | None = None  # the jid that held the lock (a conflict or a replace)
    removed: bool = False  # a replace dropped the holder's job (it had not started)


def _pushed(reply: Any) -> Pushed:
    status = int(reply[0])
    if status == 1:
        return Pushed(True)
    holder = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
    if status == 0:
        return Pushed(False, holder)
    return Pushed(True, holder, bool(int(reply[2])))


class UniqueOps(DurableOps):
    """Locks of unique jobs, the expired counter, the paused set."""

    def _unique_call(
        self, queue: str, at: float | None, data: bytes, lock: Lock, jid: str
    ) -> tuple[list[str], tuple[Any, ...]]:
        k = self.keys
        keys = [
            k.queues,
            k.queue(queue),
            k.wake(queue),
            k.schedule,
            k.wake_scheduler,
            k.unique(lock.key),
        ]
        # A scheduled job's lock lives its TTL from its due time, as Sidekiq
        # Enterprise's: a job due in two hours keeps a one-hour lock until it has run.
        ttl = lock.ttl if at is None else lock.ttl + max(0.0, at - time.time())
        args = (
            queue,
            jid,
            max(1, int(ttl * 1000)),
            lock.conflict,
            "" if at is None else repr(at),
            data,
        )
        return keys, args

    @mapped
    async def push_unique(
        self, queue: str, at: float | None, data: bytes, lock: Lock, jid: str
    ) -> Pushed:
        """Enqueue (``at`` None) or schedule one unique job and take its lock, in one
        script call (one round trip)."""
        keys, args = self._unique_call(queue, at, data, lock, jid)
        if self.durable is not None:
            [reply] = await self.durable_calls([(self.scripts.push_unique, keys, args)])
            return _pushed(reply)
        return _pushed(await self.scripts.push_unique(self.fast or self.client, keys, args))

    @mapped
    async def push_unique_many(
        self, items: Sequence[tuple[str, float | None, bytes, Lock, str]]
    ) -> list[Pushed]:
        """``push_unique`` for many jobs, in order (a later job of the same lock sees
        the earlier one's): pipelined in one round trip on a single server, one by one
        on a cluster."""
        script = self.scripts.push_unique
        calls = [self._unique_call(*item) for item in items]
        if self.durable is not None:
            replies = await self.durable_calls([(script, k, a) for k, a in calls])
            return [_pushed(r) for r in replies]
        return [_pushed(r) for r in await self._each(script, calls)]

    @mapped
    async def unlock(self, lock: str, jid: str) -> bool:
        """Release a lock if ``jid`` holds it (its token); False if it does not."""
        c = self.fast or self.client
        return bool(await self.scripts.unlock(c, [self.keys.unique(lock)], [jid]))

    @mapped
    async def unlock_many(self, locks: Sequence[tuple[str, str]]) -> list[bool]:
        """:meth:`unlock` for many ``(lock, jid)`` pairs: whether each was released;
        pipelined in one round trip on a single server, one by one on a cluster."""
        script = self.scripts.unlock
        calls = [([self.keys.unique(lock)], [jid]) for lock, jid in locks]
        return [bool(r) for r in await self._each(script, calls)]

    async def _each(
        self, script: Script, calls: Sequence[tuple[list[str], Sequence[Any]]]
    ) -> list[Any]:
        """The replies of ``script`` for each (keys, args), in order: pipelined in one
        round trip on a single server, one by one on a cluster (the keys of one call
        share a slot, those of two calls need not)."""
        fast = self.fast
        if fast is not None and not isinstance(self.client, RedisCluster):
            replies = await asyncio.gather(
                *(script(fast, keys, args) for keys, args in calls), return_exceptions=True
            )
            for r in replies:
                if isinstance(r, BaseException):
                    if isinstance(r, STORE_ERRORS):
                        self.fail(r)
                    raise r
            return replies
        return [await script(self.client, keys, args) for keys, args in calls]

    async def release_locks(self, payloads: Iterable[bytes]) -> int:
        """Release the unique locks of these jobs, which left for good without running
        again (deleted, cleared or killed by hand; sent to the dead set by the
        reaper), each only if its jid still holds it (``unlock.lua``: a lock another
        job took over stays). A lock held ``until="ttl"`` is a throttle that only its
        TTL ends: it stays too. Plain jobs cost nothing (a byte search, no command);
        returns how many locks were released. The jobs are gone already, so this
        never raises for Redis: a failure is logged, and the locks' TTLs free them."""
        locks: list[tuple[str, str]] = []
        for raw in payloads:
            if UNIQUE_MARK not in raw:
                continue
            try:
                p = DECODER.decode(raw)
            except DECODE_ERRORS:
                continue
            if p.unique is not None and p.unique.until != "ttl":
                locks.append((p.unique.key, p.jid))
        if not locks:
            return 0
        try:
            return sum(await self.unlock_many(locks))
        except AsyncJobsError as exc:
            log.warning(
                "cannot release the unique locks of %d removed jobs (%s); their TTLs will",
                len(locks),
                exc,
            )
            return 0

    @mapped
    async def lock(self, lock: str, jid: str, ttl: float) -> bool:
        """Take a while-executing lock for ``jid`` (or keep it, if it is its own)."""
        c = self.fast or self.client
        args = [jid, max(1, int(ttl * 1000))]
        return bool(await self.scripts.lock(c, [self.keys.unique(lock)], args))

    @mapped
    async def lock_holder(self, lock: str) -> tuple[str, float] | None:
        """Who holds a lock (a jid) and for how many more seconds; None if free."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.unique(lock))
            pipe.pttl(self.keys.unique(lock))
            value, ttl = await pipe.execute()
        if value is None:
            return None
        return value.split(b" ", 1)[0].decode(errors="replace"), max(0, int(ttl)) / 1000

    @mapped
    async def count_expired(self, n: int = 1) -> None:
        """Count jobs dropped because their ``expires_in`` had passed."""
        await self.client.incrby(self.keys.stat_expired, n)

    # -- paused queues ---------------------------------------------------------------

    @mapped
    async def pause_queue(self, queue: str) -> bool:
        """Add ``queue`` to the paused set; False if it was paused already."""
        return bool(await self.client.sadd(self.keys.paused, queue))

    @mapped
    async def resume_queue(self, queue: str) -> bool:
        """Remove ``queue`` from the paused set; False if it was not paused."""
        return bool(await self.client.srem(self.keys.paused, queue))

    @mapped
    async def paused_queues(self) -> set[str]:
        """The names of paused queues."""
        names: set[Any] = await self.client.smembers(self.keys.paused)
        return {n.decode() if isinstance(n, bytes) else str(n) for n in names}
