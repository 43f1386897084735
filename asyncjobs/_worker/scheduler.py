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

from .backoff import Backoff, after_failure
from .health import Health

if TYPE_CHECKING:
    from .._store import Store

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
    def __init__(self, store: Store, *, poll: float = 5.0, health: Health | None = None) -> None:
        self.store = store
        self.poll = poll
        self.processes = 1
        self.promoted = 0
        self.quiet = False
        self.health = health or Health()
        self._wake = asyncio.Event()
        self._rng = random.Random()

    def quiet_down(self) -> None:
        """A quiet process promotes nothing more (its queues may not be drained)."""
        self.quiet = True
        self._wake.set()

    def notify(self, at: float) -> None:
        """A job due at ``at`` was added by this process: wake to reconsider."""
        self._wake.set()

    async def listen(self) -> None:
        """Turn hints pushed by ``defer`` (a sooner scheduled job) into local wake-ups."""
        store = self.store
        backoff = Backoff()
        while not self.quiet:
            try:
                got = await store.wait_scheduler_hint(min(self.poll, 5.0))
            except Exception as exc:
                if await self.health.failed("scheduler.listen", exc, log, store):
                    await after_failure(store, exc)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            self.health.ok("scheduler.listen")
            if got:
                self._wake.set()

    async def run(self) -> None:
        """Read the upcoming entries, sleep until the earliest is due, promote it straight
        from what was read (one round trip on the critical path: the promote script
        skips anything another process moved first), and read again when the list runs
        out, a hint or notify() arrives, or the poll interval passes."""
        backoff = Backoff()
        while not self.quiet:
            # Cleared before reading, so a notify() during the read is not lost.
            self._wake.clear()
            try:
                upcoming = await self.read_upcoming()
                while not self.quiet:
                    now = time.time()
                    due = [e for e in upcoming if e[0] <= now]
                    if due:
                        # Read again afterwards: entries added meanwhile between two we
                        # know of sent no hint (they were not the soonest).
                        await self.promote_entries(due, now)
                        break
                    earliest = upcoming[0][0] if upcoming else None
                    wait = next_wait(now, earliest, self.poll, self.processes, self._rng)
                    if await self._sleep(wait) or earliest is None or earliest > now + wait:
                        break  # woken by news, or the poll interval passed: read again
            except Exception as exc:
                if await self.health.failed("scheduler", exc, log, self.store):
                    await after_failure(self.store, exc)
                    log.debug("scheduler: Redis unavailable: %s", exc)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            self.health.ok("scheduler")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if woken early by a hint or notify()."""
        if seconds <= 0:
            return False
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def read_upcoming(self) -> list[tuple[float, bytes, str]]:
        """The earliest ``BATCH`` entries of the schedule and retry sets, by due time."""
        k = self.store.keys
        first_s, first_r = await self.store.upcoming(BATCH)
        entries = [(float(sc), m, k.schedule) for m, sc in first_s]
        entries += [(float(sc), m, k.retry) for m, sc in first_r]
        entries.sort(key=lambda e: e[0])
        if len(first_s) == BATCH or len(first_r) == BATCH:
            # The list is complete only up to the earlier of the two last scores.
            horizon = min(
                float(first_s[-1][1]) if len(first_s) == BATCH else float("inf"),
                float(first_r[-1][1]) if len(first_r) == BATCH else float("inf"),
            )
            entries = [e for e in entries if e[0] <= horizon]
        return entries

    async def promote_entries(self, due: list[tuple[float, bytes, str]], now: float) -> None:
        for zset in {z for _, _, z in due}:
            members = [m for _, m, z in due if z == zset]
            self.promoted += await self.store.promote(zset, members, now)
