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
import random
import time
import types
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .._errors import JobTimeout
from .._job import JobContext, _current
from .._payload import DECODE_ERRORS, DECODER, ENCODER, Payload
from .._queues import QueueOrder
from .._retry import decide, format_backtrace
from .isolation import SUSPECT_MARK, Isolation

if TYPE_CHECKING:
    from .._app import App
    from .acker import Acker

log = logging.getLogger("asyncjobs.capsule")
joblog = logging.getLogger("asyncjobs.job")


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


class CapsuleSpec(msgspec.Struct, frozen=True):
    """A capsule's configuration: name, ``(queue, weight)`` pairs, concurrency, order."""

    name: str
    queues: Sequence[tuple[str, int]]
    concurrency: int = 10
    strict: bool = False


class _Running:
    """One job task and what shutdown and the timeout watchdog need to know of it."""

    __slots__ = ("deadline", "field", "payload", "raw", "reason", "task")

    def __init__(self, field: bytes, raw: bytes) -> None:
        self.field = field
        self.raw = raw
        self.payload: Payload | None = None
        self.deadline = 0.0
        self.reason: str | None = None  # why we cancelled it: "timeout" | "shutdown"
        self.task: asyncio.Task[None] | None = None


class Capsule:
    """Runs the jobs its fetcher hands it, at most ``concurrency`` at a time."""

    def __init__(
        self, app: App, spec: CapsuleSpec, acker: Acker, *, prefetch: int | None = None
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
        self.running: dict[bytes, _Running] = {}
        self.processed = 0
        self.failed = 0
        self._freed = asyncio.Event()
        self._waiting = 0  # fetch lanes waiting for a free slot
        self._idle = asyncio.Event()
        self._idle.set()
        self._timed = 0  # running jobs with a deadline: the watchdog sleeps when zero
        self._timed_event = asyncio.Event()
        self._rng = random.Random()
        self._debug = log.isEnabledFor(logging.DEBUG)
        self.isolation: Isolation | None = None
        # Prefetch: a few jobs fetched ahead (in the in-flight hash, so as safe as running
        # ones) start the moment a slot frees, without waiting for a fetch round trip.
        # A quarter of the concurrency kept 1-50 ms jobs at 96% busy slots where none
        # gave 71% (benchmarks/mixed.py); Celery prefetches four times its concurrency.
        self.prefetch = spec.concurrency // 4 if prefetch is None else prefetch
        self.ready: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._ready_scheduled = False
        self.quiet = False  # stopping (not just quiet): prefetched jobs stay unstarted

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

    def statistics(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queues": [q for q, _ in self.spec.queues],
            "concurrency": self.concurrency,
            "busy": len(self.running),
            "processed": self.processed,
            "failed": self.failed,
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
        batch: list[_Running] = []
        for field, raw in jobs:
            rec = _Running(field, raw)
            running[field] = rec
            batch.append(rec)
        self._spawn(batch)
        self._idle.clear()

    def _spawn(self, batch: list[_Running]) -> None:
        task = asyncio.get_running_loop().create_task(self._runner(batch))
        for rec in batch:
            rec.task = task

    async def _runner(self, batch: list[_Running]) -> None:
        for i, rec in enumerate(batch):
            if rec.reason is not None:  # cancelled by shutdown before it started
                self._finished(rec)
                continue
            coro = self._run(rec)
            ctx = contextvars.copy_context()
            try:
                yielded = ctx.run(coro.send, None)
            except StopIteration:
                continue  # finished without waiting; _run recorded the outcome
            except BaseException:  # pragma: no cover - _run catches everything
                log.exception("job runner failed for %r", rec.field)
                self.running.pop(rec.field, None)
                continue
            # The job waits: this task is its task now; the rest go to a new runner.
            if i + 1 < len(batch):
                self._spawn(batch[i + 1 :])
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

    def _finished(self, rec: _Running) -> None:
        running = self.running
        running.pop(rec.field, None)
        if rec.deadline:
            self._timed -= 1
        if self.ready and not self._ready_scheduled and not self.quiet:
            self._ready_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_ready)
        if self._waiting:
            self._freed.set()
        if not running:
            self._idle.set()

    async def _run(self, rec: _Running) -> None:
        app = self.app
        try:
            if len(rec.raw) > app.max_payload_bytes:
                self._dead_raw(
                    rec,
                    f"payload of {len(rec.raw)} bytes is over the limit of "
                    f"{app.max_payload_bytes} (App(max_payload_bytes=...))",
                    keep=1000,
                )
                return
            try:
                payload = DECODER.decode(rec.raw)
            except DECODE_ERRORS as exc:
                self._dead_raw(rec, f"undecodable payload: {exc}")
                return
            job = app.jobs.get(payload.job)
            if job is None:
                self._dead(
                    rec,
                    payload,
                    "UnknownJobError",
                    f"no job named {payload.job!r} is registered in this worker",
                )
                return
            try:
                args, kwargs = job.decode_call(payload.args)
            except DECODE_ERRORS as exc:
                self._dead(
                    rec, payload, "ArgumentError", f"arguments no longer fit {job.name}: {exc}"
                )
                return
            rec.payload = payload
            timeout = payload.timeout or job.timeout
            if timeout:
                rec.deadline = time.monotonic() + timeout
                self._timed += 1
                if self._timed == 1:
                    self._timed_event.set()
            _current.set(payload)
            if self._debug:
                joblog.debug("start %s jid=%s queue=%s", payload.job, payload.jid, payload.queue)
                t0 = time.perf_counter()
            try:
                if app.server_middleware:
                    await self._through_middleware(JobContext(payload), job.fn, args, kwargs, 0)
                else:
                    await job.fn(*args, **kwargs)
            except asyncio.CancelledError:
                if rec.reason == "timeout":
                    self._failed(
                        rec,
                        payload,
                        JobTimeout(f"job {payload.job} ran past its timeout of {timeout}s"),
                    )
                # Cancelled by shutdown: no outcome; the job stays in the in-flight hash
                # and the launcher puts it back at the head of its queue.
                return
            except Exception as exc:
                self._failed(rec, payload, exc)
                return
            self.processed += 1
            self.acker.done(rec.field)
            if self._debug:
                joblog.debug(
                    "done %s jid=%s in %.3fs", payload.job, payload.jid, time.perf_counter() - t0
                )
        finally:
            self._finished(rec)

    async def _through_middleware(
        self, ctx: JobContext, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], i: int
    ) -> Any:
        chain = self.app.server_middleware
        if i == len(chain):
            return await fn(*args, **kwargs)

        async def call_next() -> Any:
            return await self._through_middleware(ctx, fn, args, kwargs, i + 1)

        return await chain[i](ctx, call_next)

    # -- outcomes --------------------------------------------------------------------

    def _failed(self, rec: _Running, payload: Payload, exc: BaseException) -> None:
        self.failed += 1
        job = self.app.jobs.get(payload.job)
        now = time.time()
        d = decide(
            exc=exc,
            retry_count=payload.retry_count,
            retry=payload.retry,
            dead=payload.dead,
            now=now,
            rng=self._rng,
            retry_in=job.retry_in if job else None,
            discard_on=job.discard_on if job else (),
            dead_on=job.dead_on if job else (),
        )
        failed = msgspec.structs.replace(
            payload,
            error_class=_clean(type(exc).__name__),
            error_message=_clean(_describe(exc))[:1000],
            error_backtrace=[_clean(line) for line in format_backtrace(exc)],
            failed_at=payload.failed_at or now,
            retried_at=now if payload.retry_count else None,
            enqueued_at=None,
        )
        if d.target == "retry":
            failed = msgspec.structs.replace(failed, retry_count=payload.retry_count + 1, at=d.at)
            joblog.warning(
                "fail %s jid=%s: %s: %s; retry %d/%d in %.0fs",
                payload.job,
                payload.jid,
                type(exc).__name__,
                _describe(exc),
                payload.retry_count + 1,
                payload.retry,
                d.at - now,
            )
            self.acker.move(rec.field, "retry", d.at, ENCODER.encode(failed))
            return
        if d.target == "discard":
            joblog.warning(
                "fail %s jid=%s: %s: %s; discarded (%s)",
                payload.job,
                payload.jid,
                type(exc).__name__,
                _describe(exc),
                d.reason,
            )
            self.acker.move(rec.field, "drop", now, b"")
        else:
            joblog.error(
                "dead %s jid=%s: %s: %s (%s)",
                payload.job,
                payload.jid,
                type(exc).__name__,
                _describe(exc),
                d.reason,
            )
            self.acker.move(rec.field, "dead", now, ENCODER.encode(failed))
        self._after_death(payload, exc, job)

    def _after_death(self, payload: Payload, exc: BaseException, job: Any) -> None:
        hooks = list(self.app.death_handlers)
        if job is not None and job.on_exhausted is not None:
            hooks.insert(0, job.on_exhausted)
        if hooks:
            asyncio.get_running_loop().create_task(self._run_hooks(hooks, payload, exc))

    @staticmethod
    async def _run_hooks(hooks: list[Any], payload: Payload, exc: BaseException) -> None:
        ctx = JobContext(payload)
        for hook in hooks:
            try:
                await hook(ctx, exc)
            except Exception:
                log.exception("death handler %r failed for jid=%s", hook, payload.jid)

    def _dead(self, rec: _Running, payload: Payload, error_class: str, message: str) -> None:
        self.failed += 1
        log.error("dead jid=%s: %s: %s", payload.jid, error_class, message)
        now = time.time()
        dead = msgspec.structs.replace(
            payload, error_class=error_class, error_message=message, failed_at=now
        )
        self.acker.move(rec.field, "dead", now, ENCODER.encode(dead))

    def _dead_raw(self, rec: _Running, reason: str, keep: int | None = None) -> None:
        """A payload we cannot decode is kept, wrapped with the reason, in the dead set."""
        self.failed += 1
        log.error("dead payload %r...: %s", rec.raw[:80], reason)
        now = time.time()
        wrapped = Payload(
            jid=rec.field.decode(errors="replace")[:64] if len(rec.field) <= 64 else "",
            job="<undecodable>",
            retry=0,
            queue="",
            args=msgspec.Raw(b"{}"),
            created_at=now,
            error_class="PayloadError",
            error_message=reason[:1000],
            failed_at=now,
            meta={"raw": rec.raw[:keep].decode(errors="replace")},
        )
        self.acker.move(rec.field, "dead", now, ENCODER.encode(wrapped))

    # -- timeouts and shutdown ---------------------------------------------------------

    async def watchdog(self, interval: float = 0.05) -> None:
        """Cancel jobs past their deadline. One task scanning a few times a second costs
        less than a timer per job; it sleeps while no running job has a timeout."""
        while True:
            if self._timed <= 0:
                self._timed_event.clear()
                await self._timed_event.wait()
            await asyncio.sleep(interval)
            now = time.monotonic()
            for rec in list(self.running.values()):
                if rec.deadline and rec.deadline <= now and rec.reason is None and rec.task:
                    rec.reason = "timeout"
                    rec.task.cancel()

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
            if rec.task is None or rec.task.done():  # its runner ended before it ran
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

    def running_entries(self) -> dict[bytes, bytes]:
        """In-flight field → payload of every job counted as running."""
        return {f: rec.raw for f, rec in self.running.items()}


def _describe(exc: BaseException) -> str:
    """``str(exc)``, even for an exception whose ``__str__`` raises."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


def _clean(text: str) -> str:
    """Text JSON can hold: lone surrogates (from bytes decoded with surrogateescape, say)
    become escapes instead of making the outcome unencodable."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
