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
from collections.abc import Callable, Coroutine, Sequence, Sized
from typing import TYPE_CHECKING, Any, Protocol

from .backoff import Backoff
from .health import Health

if TYPE_CHECKING:
    from .tasks import TaskOwner

log = logging.getLogger("asyncjobs.isolation")


# What isolation needs of a capsule and a fetcher: protocols, so that this module, which
# the capsule uses, does not import the capsule (or the fetcher, which imports it).
class Capsule(Protocol):
    @property
    def running(self) -> Sized: ...

    def start(self, pairs: list[bytes], *, isolate: bool = True) -> None: ...

    async def wait_idle(self) -> None: ...


class Fetcher(Protocol):
    @property
    def fetching(self) -> int: ...

    async def settled(self) -> None: ...


SUSPECT_MARK = b'"recoveries":'  # present in a payload only when recoveries > 0


class Isolation:
    """Holds suspects back and runs them one at a time in an otherwise idle process."""

    def __init__(
        self,
        requeue: Callable[[dict[bytes, bytes]], Coroutine[Any, Any, int]],
        tasks: TaskOwner,
        health: Health | None = None,
    ) -> None:
        # Gives suspects back to their queues: only one waits in the in-flight hash at a
        # time, so a crash while it runs counts against it alone, not against suspects
        # that were merely fetched beside it. The give-backs are tasks of ``tasks``,
        # which shutdown awaits.
        self._requeue = requeue
        self._tasks = tasks
        self.health = health or Health()
        self.pending: collections.deque[tuple[Capsule, bytes, bytes]] = collections.deque()
        self.running = False
        self.quiet = False  # shutting down: held suspects stay in flight, to be requeued
        self._clear = asyncio.Event()
        self._clear.set()
        self._work = asyncio.Event()
        self.capsules: list[Capsule] = []
        self.fetchers: list[Fetcher] = []
        self.isolated = 0

    def watch(self, capsules: Sequence[Capsule], fetchers: Sequence[Fetcher]) -> None:
        """The capsules whose jobs a suspect waits for, and their fetchers (built after
        the capsules, which are given this isolation)."""
        self.capsules = list(capsules)
        self.fetchers = list(fetchers)

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
        self._tasks.start_soon(self._give_back, entries, name="isolation give-back")

    async def _give_back(self, entries: dict[bytes, bytes]) -> None:
        try:
            await self._requeue(entries)
        except Exception as exc:
            if await self.health.failed("isolation", exc, log, None):
                # Redis is away: they stay in flight; shutdown or a reaper puts them back.
                log.warning("cannot give back %d recovered jobs now: %s", len(entries), exc)

    def quiet_down(self) -> None:
        """Quiet: run no more suspects; the ones held go back to their queues."""
        self.quiet = True
        held = {field: raw for _, field, raw in self.pending}
        self.pending.clear()
        if held:
            self.give_back(held)
        if not self.running:
            self._clear.set()
        self._work.set()

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
        backoff = Backoff()
        while True:
            try:
                await self._run_once()
            except Exception as exc:
                self.health.mark("isolation", exc, log)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            self.health.ok("isolation")

    async def _run_once(self) -> None:
        await self._work.wait()
        self._work.clear()
        while self.pending and not self.quiet:
            await self._wait_alone()
            if self._quieted() or not self.pending:  # the worker began shutting down
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
