"""Isolation of suspects: a job recovered from a dead process runs alone.

A job that was in flight when its worker died (``recoveries > 0``) may be what killed it
(a segfault, ``os._exit``, the OOM killer), or it may be an innocent bystander. Running
each suspect alone, with fetching paused and nothing else in the process, makes the next
death attributable: only the job that really kills its worker keeps counting recoveries
and reaches the dead set (invariant 3), while bystanders finish on their next, solitary
run.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .capsule import Capsule
    from .fetcher import Fetcher

log = logging.getLogger("asyncjobs.isolation")

SUSPECT_MARK = b'"recoveries":'  # present in a payload only when recoveries > 0


class Isolation:
    """Holds suspects back and runs them one at a time in an otherwise idle process."""

    def __init__(self, requeue: Callable[[dict[bytes, bytes]], Coroutine[Any, Any, int]]) -> None:
        # Gives suspects back to their queues: only one waits in the in-flight hash at a
        # time, so a crash while it runs counts against it alone, not against suspects
        # that were merely fetched beside it.
        self._requeue = requeue
        self._given_back: set[asyncio.Task[int]] = set()
        self.pending: collections.deque[tuple[Capsule, bytes, bytes]] = collections.deque()
        self.running = False
        self.quiet = False  # shutting down: held suspects stay in flight, to be requeued
        self._clear = asyncio.Event()
        self._clear.set()
        self._work = asyncio.Event()
        self.capsules: list[Capsule] = []
        self.fetchers: list[Fetcher] = []
        self.isolated = 0

    def _quieted(self) -> bool:
        return self.quiet

    @property
    def blocking(self) -> bool:
        """Whether fetchers must wait (a suspect is pending or running)."""
        return not self._clear.is_set()

    async def wait_clear(self) -> None:
        await self._clear.wait()

    def hold(self, capsule: Capsule, field: bytes, raw: bytes) -> bool:
        """Hold a suspect to run alone; False if one is held already (give it back)."""
        if self.pending or self.running:
            return False
        self.pending.append((capsule, field, raw))
        self._clear.clear()
        self._work.set()
        return True

    def give_back(self, entries: dict[bytes, bytes]) -> None:
        task = asyncio.get_running_loop().create_task(self._requeue(entries))
        self._given_back.add(task)
        task.add_done_callback(self._given_back.discard)

    async def _wait_alone(self) -> None:
        """Wait until no fetch is on its way and no job runs, both at once."""
        while True:
            for f in self.fetchers:
                await f.settled()
            for c in self.capsules:
                await c.wait_idle()
            if not any(f.fetching for f in self.fetchers) and not any(
                c.running for c in self.capsules
            ):
                return

    async def run(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while self.pending and not self.quiet:
                await self._wait_alone()
                if self._quieted():  # the worker began shutting down meanwhile
                    break
                capsule, field, raw = self.pending.popleft()
                log.warning(
                    "running recovered job %r alone (it was in flight when a worker died)", field
                )
                self.isolated += 1
                self.running = True
                try:
                    capsule.start([field, raw], isolate=False)
                    await capsule.wait_idle()
                finally:
                    self.running = False
            self._clear.set()
