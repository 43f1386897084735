"""The scheduler: promotes due entries of ``schedule`` and ``retry`` to their queues.

Each batch moves with one atomic script that moves an entry only if it removed it from
the zset, so schedulers of many processes never promote an entry twice. The scheduler
sleeps until the earliest due time (a local timer, precise to the event loop), capped by
a poll interval scaled by the number of processes, with jitter; a hint pushed by
``defer`` wakes it early when a sooner job is scheduled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from .._client import promote
from .._redis import TRANSIENT, Client, after_error
from .acker import Backoff

if TYPE_CHECKING:
    from .._app import App

log = logging.getLogger("asyncjobs.scheduler")

BATCH = 100


def next_wait(
    now: float, earliest: float | None, poll: float, processes: int, rng: random.Random
) -> float:
    """Seconds to sleep: until ``earliest`` if that is sooner than the poll interval.

    The poll interval is scaled by the number of processes with jitter (Sidekiq's
    ``random_poll_interval``) so that together they poll about every ``poll`` seconds.
    """
    cap = poll * max(1, processes) * (0.5 + rng.random())
    if earliest is None:
        return cap
    return max(0.0, min(cap, earliest - now))


class Scheduler:
    def __init__(self, app: App, client: Client, *, poll: float = 5.0) -> None:
        self.app = app
        self.client = client
        self.poll = poll
        self.processes = 1
        self.promoted = 0
        self._wake = asyncio.Event()
        self._rng = random.Random()

    def notify(self, at: float) -> None:
        """A job due at ``at`` was added by this process: wake to reconsider."""
        self._wake.set()

    async def listen(self) -> None:
        """Turn hints pushed by ``defer`` (a sooner scheduled job) into local wake-ups."""
        key = self.app.keys.wake_scheduler
        backoff = Backoff()
        while True:
            try:
                got = await self.client.brpop([key], timeout=min(self.poll, 5.0))
            except TRANSIENT as exc:
                await after_error(self.app._redis, exc)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            if got:
                self._wake.set()

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            # Cleared before reading, so a notify() during the read is not lost.
            self._wake.clear()
            try:
                earliest = await self.promote_due()
            except TRANSIENT as exc:
                await after_error(self.app._redis, exc)
                log.debug("scheduler: Redis unavailable: %s", exc)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            wait = next_wait(time.time(), earliest, self.poll, self.processes, self._rng)
            if wait > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except TimeoutError:
                    pass

    async def promote_due(self) -> float | None:
        """Promote everything due now; return the earliest due time left, if any."""
        k = self.app.keys
        while True:
            now = time.time()
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zrangebyscore(k.schedule, "-inf", now, start=0, num=BATCH)
                pipe.zrangebyscore(k.retry, "-inf", now, start=0, num=BATCH)
                due_s, due_r = await pipe.execute()
            moved_all = True
            for zset, due in ((k.schedule, due_s), (k.retry, due_r)):
                if due:
                    await self._promote(zset, due, now)
                    if len(due) == BATCH:
                        moved_all = False
            if moved_all:
                break
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrange(k.schedule, 0, 0, withscores=True)
            pipe.zrange(k.retry, 0, 0, withscores=True)
            first_s, first_r = await pipe.execute()
        times = [s for first in (first_s, first_r) for _, s in first]
        return min(times) if times else None

    async def _promote(self, zset: str, members: list[bytes], now: float) -> None:
        self.promoted += await promote(self.app, self.client, zset, members, now)
