"""A capsule: its queues, its concurrency bound, and the job tasks it runs.

The capsule owns every job task it starts: it tracks them, awaits them at shutdown and
cancels the ones still running when the shutdown timeout is up. A running job stays in
the process's in-flight hash until the acker writes its outcome (invariant 1).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import time
import types
from collections.abc import Callable, Container, Coroutine, Generator
from typing import TYPE_CHECKING, Any

from .._queues import QueueOrder
from .._settings import CapsuleSpec
from .executor import Executor, Running
from .isolation import SUSPECT_MARK, Isolation
from .shield import cancel_unless_shielded
from .tasks import TaskOwner

if TYPE_CHECKING:
    from .._registry import Registry
    from .acker import Acker

log = logging.getLogger("asyncjobs.capsule")


@types.coroutine
def _resume(
    coro: Coroutine[Any, Any, None], yielded: Any, ctx: contextvars.Context
) -> Generator[Any, Any, None]:
    """Drive, from the task this is awaited in, a job coroutine whose first step already
    ran in that same task (and yielded ``yielded``): hand its awaitables to the task,
    pass results and exceptions (cancellation included) back in, each step in the
    job's own context."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = ctx.run(coro.throw, exc)
            except StopIteration:
                return
        else:
            try:
                yielded = ctx.run(coro.send, sent)
            except StopIteration:
                return


class Capsule:
    """Runs the jobs its fetcher hands it, at most ``concurrency`` at a time."""

    def __init__(
        self,
        app: Registry,
        spec: CapsuleSpec,
        acker: Acker,
        *,
        prefetch: int | None = None,
        tasks: TaskOwner | None = None,
        isolation: Isolation | None = None,
        on_give_back: Callable[[dict[bytes, bytes]], None] | None = None,
    ) -> None:
        if spec.concurrency < 1:
            from .._errors import ConfigError

            raise ConfigError(f"capsule {spec.name}: concurrency must be at least 1")
        self.app = app
        self.spec = spec
        self.name = spec.name
        self.concurrency = spec.concurrency
        self.order = QueueOrder(spec.queues, strict=spec.strict)
        self.acker = acker
        self.running: dict[bytes, Running] = {}
        # The capsule's own server middleware runs inside the app's (Sidekiq's capsule
        # middleware): ``app.capsule_middleware(name)``.
        self.executor = Executor(
            app,
            acker,
            middleware=app.capsule_server_middleware.get(spec.name),
            on_finished=self._finished,
            tasks=tasks,
            locks=acker.store,
        )
        # An iterable job (#14) stopped by quiet goes back as jobs fetched ahead do.
        self.executor.give_back = self._give_back_one
        self._freed = asyncio.Event()
        self._waiting = 0  # fetch lanes waiting for a free slot
        self._idle = asyncio.Event()
        self._idle.set()
        self.isolation = isolation
        if on_give_back is not None:
            self.on_give_back = on_give_back
        # Prefetch: a few jobs fetched ahead (in the in-flight hash, so as safe as running
        # ones) start the moment a slot frees, without waiting for a fetch round trip.
        # A quarter of the concurrency kept 1-50 ms jobs at 96% busy slots where none
        # gave 71% (benchmarks/mixed.py); Celery prefetches four times its concurrency.
        self.prefetch = spec.concurrency // 4 if prefetch is None else prefetch
        self.ready: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._ready_scheduled = False
        self.quiet = False  # stopping (not just quiet): prefetched jobs stay unstarted
        # This capsule's queues that are paused (api.pause_queue), as the last heartbeat
        # read them; the fetcher skips them. ``resumed`` is set when one comes back.
        self.paused: frozenset[str] = frozenset()
        self.resumed = asyncio.Event()

    def pause(self, paused: frozenset[str]) -> None:
        """The paused queues, as the heartbeat read them (all of the app's)."""
        mine = paused.intersection(self.order.names) if paused else frozenset()
        if mine == self.paused:
            return
        if self.paused - mine:
            self.resumed.set()  # the fetcher waiting for a queue to fetch from looks again
        else:
            self.resumed.clear()
        self.paused = frozenset(mine)

    # -- slots -------------------------------------------------------------------

    @property
    def free(self) -> int:
        """How many jobs the fetcher may take now: free slots plus prefetch room."""
        return self.concurrency + self.prefetch - len(self.running) - len(self.ready)

    async def wait_free(self, reserved: Callable[[], int] | None = None) -> None:
        """Wait until there is room for at least one more job beyond what ``reserved()``
        (read afresh at each wake-up; see :meth:`poke`) says is spoken for."""
        while self.free <= (reserved() if reserved is not None else 0):
            self._freed.clear()
            self._waiting += 1
            try:
                await self._freed.wait()
            finally:
                self._waiting -= 1

    def poke(self) -> None:
        """Room may have opened without a job finishing (a fetch came back short)."""
        if self._waiting:
            self._freed.set()

    async def wait_idle(self) -> None:
        """Wait until no job of this capsule is running."""
        await self._idle.wait()

    @property
    def processed(self) -> int:
        """Jobs of this capsule that succeeded since the process started."""
        return self.executor.processed

    @property
    def failed(self) -> int:
        """Jobs of this capsule that failed since the process started."""
        return self.executor.failed

    def statistics(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queues": [q for q, _ in self.spec.queues],
            "concurrency": self.concurrency,
            "busy": len(self.running),
            "processed": self.executor.processed,
            "failed": self.executor.failed,
        }

    # -- starting jobs -------------------------------------------------------------

    def start(self, pairs: list[bytes], *, isolate: bool = True) -> None:
        """Start the jobs of a fetch: ``pairs`` is field, payload, field, payload, ...

        The jobs go to a *runner*, one task that runs them one after the other, each in
        a copy of the context. A job that finishes without waiting on anything (no-op,
        cache hit) costs no task of its own. When a job has to wait, the runner becomes
        that job's task for good and hands the jobs after it to a new runner. Either way
        a job runs in one task from its first line to its last, so what binds to the
        current task (asyncio.timeout, anyio's cancel scopes, redis-py's timeouts) works,
        and a batch of no-op jobs costs one task instead of one each.
        """
        if self.quiet:  # fetched as quiet came: back to the queues, unstarted
            self.give_back(dict(zip(pairs[0::2], pairs[1::2], strict=True)))
            return
        isolation = self.isolation if isolate else None
        give_back: dict[bytes, bytes] = {}
        jobs: list[tuple[bytes, bytes]] = []
        room = self.concurrency - len(self.running)
        for i in range(0, len(pairs), 2):
            field = pairs[i]
            raw = pairs[i + 1]
            if isolation is not None and SUSPECT_MARK in raw:
                # Recovered from a dead worker: runs alone; one suspect at a time.
                if not isolation.hold(self, field, raw):
                    give_back[field] = raw
                continue
            if len(jobs) >= room and isolate:
                self.ready.append((field, raw))  # prefetched: starts when a slot frees
                continue
            jobs.append((field, raw))
        self._start_batch(jobs)
        if give_back and isolation is not None:
            isolation.give_back(give_back)

    def _start_batch(self, jobs: list[tuple[bytes, bytes]]) -> None:
        """Count these jobs as running and hand them to a new runner."""
        if not jobs:
            return
        running = self.running
        batch: list[Running] = []
        for field, raw in jobs:
            rec = Running(field, raw)
            running[field] = rec
            batch.append(rec)
        self._spawn(batch)
        self._idle.clear()

    def _spawn(self, batch: list[Running], start: int = 0) -> None:
        asyncio.get_running_loop().create_task(self._runner(batch, start))

    async def _runner(self, batch: list[Running], start: int = 0) -> None:
        """Run ``batch[start:]``. A job's task and start are set as the runner reaches
        it, so handing the rest of a batch on is O(1) (a runner per waiting job, the
        same list and the next index), not a pass over the jobs still waiting: with a
        fetch of a few thousand jobs that each wait, that pass was quadratic. Until
        then a job has no task: nothing can interrupt it but the reason it is marked
        with, which the runner reads before it starts it."""
        task = asyncio.current_task()
        # The wall-clock start `asyncjobs processes` shows: one clock read per runner
        # (its jobs start back to back; the ones after a job that waits get a new one).
        now = time.time()
        for i in range(start, len(batch)):
            rec = batch[i]
            # Cancelled by shutdown (or quiet) before it started; one app.cancel marked
            # runs, to report its outcome (#14).
            if rec.reason is not None and rec.reason != "cancel":
                self._finished(rec)
                continue
            rec.task = task
            rec.started_at = now
            coro = self.executor.run(rec)
            ctx = contextvars.copy_context()
            try:
                yielded = ctx.run(coro.send, None)
            except StopIteration:
                continue  # finished without waiting; the executor reported the outcome
            except BaseException:  # pragma: no cover - the executor catches job errors
                log.exception("job runner failed for %r", rec.field)
                self.running.pop(rec.field, None)
                continue
            # The job waits: this task is its task now; the rest go to a new runner.
            if i + 1 < len(batch):
                self._spawn(batch, i + 1)
            await _resume(coro, yielded, ctx)
            return

    def _start_ready(self) -> None:
        """Start prefetched jobs into free slots (called soon after a job finishes, not
        from inside it)."""
        self._ready_scheduled = False
        if self.quiet:
            return
        room = self.concurrency - len(self.running)
        ready = self.ready
        self._start_batch([ready.popleft() for _ in range(min(room, len(ready)))])

    def _finished(self, rec: Running) -> None:
        running = self.running
        running.pop(rec.field, None)
        if self.ready and not self._ready_scheduled and not self.quiet:
            self._ready_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_ready)
        if self._waiting:
            self._freed.set()
        if not running:
            self._idle.set()

    def cancel(self, field: bytes) -> bool:
        """Cancel the job of this in-flight field (app.cancel, #14): a running job's task
        is cancelled; one not started yet (prefetched, or later in a runner's batch) is
        marked, and the executor reports it cancelled without running it. False if this
        capsule does not hold it, or it is being cancelled already."""
        rec = self.running.get(field)
        if rec is None:
            for i, (f, raw) in enumerate(self.ready):
                if f == field:
                    del self.ready[i]
                    rec = Running(field, raw)
                    rec.reason = "cancel"
                    self.running[field] = rec
                    self._spawn([rec])
                    self._idle.clear()
                    return True
            return False
        if rec.reason is not None:
            return False
        rec.reason = "cancel"
        # A job with a payload has started: it waits in its own task (its runner's).
        # One without has not: its runner reaches it later and reports it.
        if rec.payload is not None and rec.task is not None and not rec.task.done():
            cancel_unless_shielded(rec.task)
        return True

    # -- prefetched jobs held back -----------------------------------------------------

    # Prefetched jobs held back unstarted while this process may have been presumed dead
    # (see heartbeat.py); they stay in the in-flight hash meanwhile.
    held: tuple[tuple[bytes, bytes], ...] = ()

    def hold_ready(self) -> None:
        """Hold every prefetched job back, unstarted, until :meth:`release_held`."""
        self.held = (*self.held, *self.ready)
        self.ready.clear()

    def release_held(self, keep: Container[bytes] | None = None) -> list[bytes]:
        """Put the held jobs back in front of the prefetched ones, to start as slots
        free; with ``keep``, only those whose field is in it. Returns the fields of the
        jobs dropped."""
        held, self.held = self.held, ()
        kept = [(f, raw) for f, raw in held if keep is None or f in keep]
        dropped = [f for f, _ in held if keep is not None and f not in keep]
        if kept:
            self.ready.extendleft(reversed(kept))
            if not self._ready_scheduled and not self.quiet:
                self._ready_scheduled = True
                asyncio.get_running_loop().call_soon(self._start_ready)
        return dropped

    # -- timeouts and shutdown ---------------------------------------------------------

    async def watchdog(self) -> None:
        """Cancel jobs past their timeout (the executor's watchdog; runs until cancelled)."""
        await self.executor.watchdog.run()

    async def cancel_all(self, wait: float | None = None) -> set[asyncio.Task[None]]:
        """Cancel every running job (shutdown timeout is up) and wait up to ``wait``
        seconds (None: no limit; 0: not at all) for them to end; returns the tasks
        still running then. Jobs still waiting in a runner are not started; like the
        cancelled ones, they stay in the in-flight hash, to be put back in their queues.
        A task cancelled already is not cancelled again: a job may be cleaning up."""
        tasks: set[asyncio.Task[None]] = set()
        for rec in list(self.running.values()):
            rec.reason = "shutdown"
            if rec.task is not None and not rec.task.done():
                tasks.add(rec.task)
        for task in tasks:
            if not task.cancelling():
                task.cancel()
        if tasks and wait != 0:
            await asyncio.wait(tasks, timeout=wait)
        for rec in list(self.running.values()):
            if rec.task is None or rec.task.done():  # not started, or its task ended
                self._finished(rec)
        return {t for t in tasks if not t.done()}

    # -- quiet ---------------------------------------------------------------------------

    # Puts jobs fetched ahead back at the head of their queues (the launcher's); without
    # it they stay in the in-flight hash until shutdown puts them back.
    on_give_back: Callable[[dict[bytes, bytes]], None] | None = None

    def quiet_down(self) -> None:
        """Quiet: start nothing more. Jobs fetched ahead (prefetched, or handed to a
        runner that has not begun them) go back to their queues at once."""
        self.quiet = True
        self.executor.stopping = True  # iterable jobs stop at their next item (#14)
        held = dict(self.ready)
        self.ready.clear()
        for rec in self.running.values():
            # No payload yet: its runner has not reached it (a job's first step runs
            # at once, decoding included); marked, the runner skips it.
            if rec.payload is None and rec.reason is None:
                rec.reason = "quiet"
                held[rec.field] = rec.raw
        if held:
            self.give_back(held)

    def give_back(self, entries: dict[bytes, bytes]) -> None:
        if self.on_give_back is not None:
            self.on_give_back(entries)

    def _give_back_one(self, field: bytes, raw: bytes) -> None:
        self.give_back({field: raw})

    def running_entries(self) -> dict[bytes, bytes]:
        """In-flight field → payload of every job counted as running."""
        return {f: rec.raw for f, rec in self.running.items()}
