"""Helpers for testing code that defers jobs, without Redis: Sidekiq's ``Testing.inline!``
and ``Testing.fake!`` for asyncjobs.

Two modes, each a context manager that takes over one :class:`~asyncjobs.App` instance
for the duration of a ``with`` block and gives it back afterwards:

- :func:`inline`: ``await job.defer(...)`` runs the job at once, in the caller's task,
  and returns its jid when it is done.
- :func:`capture`: ``await job.defer(...)`` records the job; the test asserts on
  :attr:`Capture.jobs` and runs them with :meth:`Capture.drain`.

```python
from asyncjobs import testing

async def test_signup_sends_the_welcome_email() -> None:
    with testing.capture(app) as captured:
        await signup("grace@example.com")           # defers send_welcome_email
        [job] = captured.for_job(send_welcome_email)
        assert job.arguments["email"] == "grace@example.com"
        await captured.drain()                      # runs it (and what it defers)
```

Both modes go through the same steps as the real client and worker, so a test sees what
production sees: arguments are validated against the job's signature and type hints
when ``defer`` is called (a bad one raises :class:`~asyncjobs.ArgumentError` and nothing
is recorded or run), client middleware runs around ``defer``, the payload is encoded to
JSON (and refused when over ``max_payload_bytes``) and decoded back, the job receives
its arguments decoded into their annotated types (``datetime``, ``UUID``, ``Decimal``,
Structs ...), ``current_job()`` works inside it, server middleware runs around it, and
its ``timeout`` applies (raising :class:`~asyncjobs.JobTimeout`).

What differs from a real worker: jobs run one at a time in the caller's task, ``delay``
and ``at`` are recorded but not waited for, and a failure is raised to the test instead
of being retried (see :func:`inline` and :meth:`Capture.drain`). Nothing touches Redis:
no connection is opened, so these modes need no server.

Batches, chains and ``after=`` work in both modes, with the same API as with Redis
(``async with app.batch(...)``, ``app.batch_status``, ``app.chain``,
``configure(after=...)``). The mode keeps batches in memory for the length of its block
and counts each job's outcome by the rules of Redis's scripts (the stand-in is
``asyncjobs._membatch``, tested scenario by scenario against Redis and a worker). A
callback is deferred through the mode when the script would push it, without client
middleware: :func:`capture` records it once the job that completes its batch has run,
and :meth:`Capture.drain` runs it; :func:`inline` runs it at once, which is when the
block exits, since inline jobs end inside it. A job runs outside the caller's batch
block, as on a worker. What Redis keeps of tracked jobs (``keep_result=``,
``track_status=True``) is kept for the block too, written when a client and a worker
would write it: so ``handle.result()`` works, a chain passes results from step to step,
``after=`` holds a job until the jobs it waits for succeeded, and ``app.status(jid)``
(``handle.status()``) says ``queued`` or ``scheduled`` from ``defer``, ``running``
(with the last ``ctx.progress``) while the job runs, ``retrying`` after a failure with
retries left, then the outcome, as the store would. ``app.cancel(jid)``
(``handle.cancel()``) acts on the mode's jobs as on Redis's: a job not run yet
(:func:`capture`), or one that failed with retries left (waiting for its retry, as in
Redis's retry set), is removed (``"removed"``; ``cancelled`` if tracked); a running job
is cancelled at its next ``await`` (``"cancelling"``; its outcome ``cancelled``, the
app's ``cancel_handlers`` run, ``asyncjobs.shield()`` holds the request back); anything
else is ``"not found"``. The modes take no unique locks, so there is none to release.

What a failure means for a batch, since nothing is retried here: a job that fails with
retries left counts as a failure waiting for its retry, as in Redis until that retry
runs: its batch can complete (``on_complete``), cannot succeed, and has no death. So a
:meth:`Capture.drain` that raises leaves the batch pending (the jobs after the failure
stay in :attr:`Capture.jobs`), and ``drain(raise_errors=False)`` counts the failure the
same way. Inline, the failure is raised out of ``defer``, and so out of the batch
block, which still closes (its callbacks run first). A job dies, and fires
``on_death``, only as on a worker: out of retries (``retry=0``), ``dead_on=``, or
``"kill"`` from ``retry_in=``; a discarded job is a failure without death. Inline, every
callback that one step fired runs before the first one's failure is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import inspect
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from ._app import TestMode, _count_added, _initial, _test_modes
from ._batch import scope_var
from ._errors import UnknownJobError
from ._job import Job, JobContext, reset_progress_reporter, set_progress_reporter
from ._membatch import MemoryBatches
from ._middleware import Chain, ServerMiddleware, ServerNext
from ._payload import DECODE_ERRORS, DECODER, ENCODER, Payload
from ._seal import unpack
from ._status import JobStatus, Outcome, combine
from ._worker.executor import (
    Executor,
    Running,
    describe,
    progress_json,
    result_json,
    retrying_state,
    running_state,
)
from ._worker.heartbeat import new_process_id
from ._worker.shield import shielded

if TYPE_CHECKING:
    from ._app import App

__all__ = ["Capture", "CapturedJob", "Failure", "Inline", "capture", "inline"]

log = logging.getLogger("asyncjobs.testing")

# How often a cancel request held back by asyncjobs.shield() looks again (seconds).
SHIELD_POLL = 0.005


@dataclasses.dataclass(frozen=True, slots=True)
class CapturedJob:
    """One deferred job, as a worker would receive it.

    Attributes:
        jid: the job id ``defer`` returned.
        name: the job's registered name (``Job.name``).
        queue: the queue it was deferred to (after ``configure(queue=...)``).
        args: the positional arguments the function is called with, decoded.
        kwargs: the keyword arguments the function is called with, decoded.
        arguments: every parameter by name (defaults filled in), decoded; the easiest
            to assert on.
        at: when it was scheduled to run (``configure(delay=...)`` or ``at=``), an aware
            UTC datetime, or ``None`` for "now".
        enqueued_at: when it entered its queue (an aware UTC datetime), or ``None`` for
            a scheduled job (see ``at``).
        retry: how many retries it allows.
        timeout: its timeout in seconds, or ``None``.
        meta: extra payload fields added by client middleware.
    """

    jid: str
    name: str
    queue: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    arguments: dict[str, Any]
    at: dt.datetime | None
    enqueued_at: dt.datetime | None
    retry: int
    timeout: float | None
    meta: dict[str, Any]
    _payload: Payload = dataclasses.field(repr=False, compare=False)

    def is_for(self, job: Job[Any, Any]) -> bool:
        """Whether this is a run of ``job``."""
        return self.name == job.name


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A job that raised during :meth:`Capture.drain` with ``raise_errors=False``.

    Attributes:
        job: the job that failed.
        error: what it raised.
    """

    job: CapturedJob
    error: Exception


class _Mode(TestMode):
    """What both modes share: the worker's executor and running one job with it; the
    batches (an in-memory stand-in that counts as Redis does) and what Redis keeps of
    tracked jobs: their state, outcome (for ``handle.result()``, chains and ``after=``)
    and progress, written when a client and a worker would write them, and read back
    by ``app.status`` as the store's are."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._sink = _Sink()
        # Innermost server middleware of the mode: it keeps the return values of the
        # jobs that keep results (the executor stores them in Redis, which is not here).
        keep: Chain[ServerMiddleware] = Chain([self._keep_value])
        self._executor = Executor(app, self._sink, middleware=keep)
        self._batches = MemoryBatches(self._deliver)
        self._values: dict[str, Any] = {}
        # A tracked job's three keys ({ns}:status, :result, :progress): the state and
        # the progress as stored (JSON), the outcome decoded.
        self._states: dict[str, bytes] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._progress: dict[str, bytes] = {}
        # What a running job's state names as its process: an id of this mode's own, in
        # a worker's form (host:pid:random).
        self._executor.process_id = new_process_id()
        # app.cancel: the jobs running now by jid, the innermost last per task (a job
        # run inline inside another shares its task), and those that failed with
        # retries left (in Redis's retry set: a cancel removes them).
        self._running: dict[str, _Run] = {}
        self._stacks: dict[asyncio.Task[Any], list[_Run]] = {}
        self._retrying: dict[str, Payload] = {}

    def batches(self) -> MemoryBatches:
        return self._batches

    def outcome(self, jid: str) -> Outcome:
        out = self._outcomes.get(jid)
        if out is None:
            raise TimeoutError(
                f"job {jid} has no outcome in this test mode: it has not run yet (capture: "
                "drain it first), it failed with retries left (test modes make no retries), "
                "or it keeps no status"
            )
        return out

    def track(self, payloads: Sequence[Payload]) -> None:
        # SET NX, as the client: a job that ran already (inline) keeps what it has.
        for p in payloads:
            self._states.setdefault(p.jid, ENCODER.encode(_initial(p)))

    def status(self, jid: str) -> JobStatus:
        out = self._outcomes.get(jid)
        raw = None if out is None else ENCODER.encode(out)
        return combine(jid, self._states.get(jid), raw, self._progress.get(jid))

    async def cancel(self, jid: str) -> str:
        """``app.cancel`` as with Redis: a running job is cancelled (``"cancelling"``);
        a waiting one (not run yet, or waiting for a retry) is removed (``"removed"``;
        a tracked one's outcome is ``cancelled``, as ``App.cancel`` stores it); else
        ``"not found"``."""
        run = self._running.get(jid)
        if run is not None:
            rec = run.rec
            if rec.reason is None:  # else ending, or being cancelled: too late, as capsule.cancel
                rec.reason = "cancel"
                run.pending = True
                self._deliver_soon(run)
            return "cancelling"
        payload = self._remove_waiting(jid)
        if payload is None:
            return "not found"
        job = self.app.jobs.get(payload.job)
        if job is not None and job.track_status:
            self._outcomes[jid] = Outcome(state="cancelled", at=time.time(), job=payload.job)
            self._states.pop(jid, None)
            self._batches.ended(jid, "cancelled")  # result.lua: its after= gates learn it
            await self._batches.flush()
        return "removed"

    def _remove_waiting(self, jid: str) -> Payload | None:
        """Take job ``jid`` out of where it waits in the mode; its payload, or None."""
        return self._retrying.pop(jid, None)

    def _deliver_soon(self, run: _Run) -> None:
        """Deliver a cancel request once the loop has run, as a worker's canceller does
        from its own task: the job's task is then suspended at an ``await``."""
        asyncio.get_running_loop().call_soon(self._deliver_cancel, run)

    def _deliver_cancel(self, run: _Run) -> None:
        """Cancel the job's task if the request is still pending and the task waits inside
        the job's own function (not in the mode's code around it, nor in a job it runs
        inline: the request waits until that one has ended)."""
        task = run.rec.task
        if not run.pending or task is None or task.done() or not run.inside:
            return
        stack = self._stacks.get(task)
        if not stack or stack[-1] is not run:
            return
        if shielded(task):
            # Held back while the job is in asyncjobs.shield(), then delivered at its
            # next await; looked at again shortly (a job that ends without another
            # await after the block has succeeded, as on a worker).
            asyncio.get_running_loop().call_later(SHIELD_POLL, self._deliver_cancel, run)
            return
        run.pending = False
        task.cancel()

    def _accepted(self, payloads: Sequence[Payload]) -> None:
        """Jobs now deferred: a batch job is counted by the block it joined, a tracked
        job is known to the in-memory batches (so ``after=`` can wait for it), as after
        a real push. (Its ``queued`` state comes from ``App._track``, as with Redis.)"""
        _count_added([p for p in payloads if p.bid is not None])
        for p in payloads:
            job = self.app.jobs.get(p.job)
            if job is not None and job.track_status:
                self._batches.deferred(p.jid)

    async def _perform(self, payload: Payload) -> None:
        """Run one job as a capsule does (the same executor: decoded arguments,
        ``current_job()``, server middleware, timeout, retry decision, death handlers),
        then count its outcome as the worker's acknowledgement would (its batch, the
        gates waiting for it) and hand on the callbacks that fired. A failure is raised
        to the caller. A tracked job is ``running`` while it runs, and its
        ``ctx.progress`` is kept."""
        job = _job_for(self.app, payload)
        if payload.enqueued_at is None:
            # A scheduled job gets its enqueued_at when the scheduler promotes it.
            payload = msgspec.structs.replace(payload, enqueued_at=time.time())
        log.debug("run %s jid=%s queue=%s", payload.job, payload.jid, payload.queue)
        executor = self._executor
        rec = Running(payload.jid.encode(), ENCODER.encode(payload))
        rec.task = task = asyncio.current_task()
        assert task is not None
        # Running now, where app.cancel finds it; no longer waiting for a retry.
        self._retrying.pop(payload.jid, None)
        run = _Run(rec)
        outer = self._running.get(payload.jid)
        self._running[payload.jid] = run
        stack = self._stacks.setdefault(task, [])
        stack.append(run)
        processed = executor.processed
        reporter = None
        if job.track_status:
            self._states[payload.jid] = running_state(payload, executor.process_id)
            reporter = _Reporter(self._progress, payload.jid)
        # Set for every job (None: untracked), so that a job run inline inside another
        # never reports into the other's progress.
        progress = set_progress_reporter(reporter)
        # A job runs outside any batch block of the caller, as on a worker: what it
        # defers joins a batch only through app.batch() of its own.
        token = scope_var.set(None)
        try:
            try:
                if payload.timeout or job.timeout:
                    # The same watchdog as a worker's capsule, for the length of this job.
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(executor.watchdog.run)
                        await executor.run(rec)
                        tg.cancel_scope.cancel()
                else:
                    await executor.run(rec)
            finally:
                scope_var.reset(token)
                reset_progress_reporter(progress)
                # Ended: app.cancel no longer finds it.
                if outer is not None:
                    self._running[payload.jid] = outer
                else:
                    del self._running[payload.jid]
            # As a worker: the outcome is stored before the death handlers start.
            ran = executor.processed - processed - run.nested > 0  # not counting inline runs
            target, bid = self._ended(payload, job, rec, ran=ran)
            # Death handlers and on_exhausted have run by the time defer or drain returns.
            await executor.wait_background()
            if bid is not None and target is not None:
                self._batches.acked(payload.jid, bid, target)  # ack.lua
            await self._batches.flush()
        finally:
            # Off its task's stack only now, so that a cancel request for the job that
            # runs this one inline waits until this one's acknowledgement is done too.
            stack.pop()
            if stack:
                # What ran here is not the enclosing job's own run.
                stack[-1].nested += executor.processed - processed
                if stack[-1].pending:  # a cancel request for it: its turn now
                    self._deliver_soon(stack[-1])
            else:
                del self._stacks[task]
        if rec.error is not None:
            raise rec.error

    def _ended(
        self, payload: Payload, job: Job[Any, Any], rec: Running, ran: bool
    ) -> tuple[str | None, str | None]:
        """What a worker writes of a tracked job as its run ends: its outcome (result.lua:
        the state goes, the progress stays, the ``after=`` gates waiting for it count
        it), or ``retrying`` when it failed with retries left. Returns the run's target
        (done, retry, dead, drop) and its batch, for the acknowledgement."""
        jid = payload.jid
        target, data = self._sink.outcomes.pop(rec.field, (None, b""))
        bid = self._sink.bids.pop(rec.field, None)
        value = self._values.pop(jid, None)
        if target == "retry":  # waiting for its retry: app.cancel removes it
            self._retrying[jid] = payload
        if job.track_status and target == "retry":
            self._states[jid] = retrying_state(DECODER.decode(data), time.time())
        elif job.track_status and target is not None:
            out = _outcome(payload, job, rec, target, data, ran, value)
            if out is not None:
                self._outcomes[jid] = out
                self._states.pop(jid, None)
                self._batches.ended(jid, out.state)
        return target, bid

    async def _keep_value(self, ctx: JobContext, call_next: ServerNext) -> Any:
        # The job's function runs inside this innermost middleware: a cancel request is
        # delivered only meanwhile (see _deliver_cancel).
        stack = self._stacks.get(asyncio.current_task())  # type: ignore[arg-type]
        run = stack[-1] if stack else None
        if run is not None:
            run.inside = True
            if run.pending:  # asked before the job's function started
                self._deliver_soon(run)
        try:
            value = await call_next()
        finally:
            if run is not None:
                run.inside = False
        job = self.app.jobs.get(ctx.name)
        if job is not None and job.keep_result is not None:
            self._values[ctx.jid] = value
        return value

    async def _deliver(self, fired: list[bytes]) -> None:
        """Callbacks a batch fired (and jobs whose ``after=`` gate opened): deferred
        through this mode, without client middleware, as the script pushes them. Inline
        runs each; the first failure is raised once all have run."""
        now = time.time()
        error: Exception | None = None
        for raw in fired:
            payload = msgspec.structs.replace(DECODER.decode(raw), enqueued_at=now)
            try:
                await self.accept([payload])
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error


def _outcome(
    payload: Payload,
    job: Job[Any, Any],
    rec: Running,
    target: str,
    data: bytes,
    ran: bool,
    value: Any,
) -> Outcome | None:
    """A tracked job's outcome as the executor would store it; None while it waits for
    a retry (or was rescheduled)."""
    now = time.time()
    if target == "done" and not ran and rec.reason == "cancel":
        # Cancelled by app.cancel while running (or before it started), as the
        # executor's _cancelled stores it.
        kept = job.keep_result is not None
        return Outcome(state="cancelled", at=now, job=payload.job, kept=kept)
    if target == "done":
        if not ran:  # dropped unrun (expires_in)
            reason = "expired (expires_in), or replaced by a later unique job"
            return Outcome(
                state="failed", at=now, job=payload.job, error_class="NotRun", error_message=reason
            )
        kept = job.keep_result is not None
        raw = result_json(payload, value) if kept else b"null"
        return Outcome(
            state="succeeded", at=now, job=payload.job, value=msgspec.Raw(raw), kept=kept
        )
    if target not in ("dead", "drop"):
        return None
    error_class: str | None = None
    message: str | None = None
    if target == "dead" and data:
        dead = DECODER.decode(data)
        error_class, message = dead.error_class, dead.error_message
    elif rec.error is not None:
        error_class, message = type(rec.error).__name__, describe(rec.error)
    return Outcome(
        state="dead" if target == "dead" else "failed",
        at=now,
        job=payload.job,
        error_class=error_class,
        error_message=message,
    )


class _Run:
    """A job a mode is running, for ``app.cancel``: its executor record, whether its
    own function runs now (``inside``: between the enter and exit of the mode's
    innermost server middleware), whether a cancel request awaits delivery, and how
    many jobs ran inline inside it (so that their runs do not count as its own)."""

    __slots__ = ("inside", "nested", "pending", "rec")

    def __init__(self, rec: Running) -> None:
        self.rec = rec
        self.inside = False
        self.pending = False
        self.nested = 0  # jobs that ran inline inside this one (the executor counts them)


class _Reporter:
    """A tracked job's ``ctx.progress`` in a test mode: the latest report, kept at once
    (a worker writes it in the background)."""

    __slots__ = ("_jid", "_kept")

    def __init__(self, kept: dict[str, bytes], jid: str) -> None:
        self._kept = kept
        self._jid = jid

    def __call__(self, fraction: float, message: str | None, meta: dict[str, Any] | None) -> None:
        self._kept[self._jid] = progress_json(fraction, message, meta)


class _Sink:
    """Where the executor reports outcomes in a test mode: kept until the mode counts
    them (a failure is also raised to the test)."""

    def __init__(self) -> None:
        self.outcomes: dict[bytes, tuple[str, bytes]] = {}
        self.bids: dict[bytes, str] = {}

    def done(self, field: bytes) -> None:
        self.outcomes[field] = ("done", b"")

    def move(self, field: bytes, target: str, at: float, data: bytes) -> None:
        self.outcomes[field] = (target, data)

    def batch(self, field: bytes, bid: str) -> None:
        self.bids[field] = bid


class Inline(_Mode):
    """The state of an :func:`inline` block.

    Attributes:
        ran: every job run so far in this block, in the order they started.
    """

    def __init__(self, app: App) -> None:
        super().__init__(app)
        self.ran: list[CapturedJob] = []

    def for_job(self, job: Job[Any, Any]) -> list[CapturedJob]:
        """The runs of ``job`` so far, in order."""
        return [c for c in self.ran if c.is_for(job)]

    async def accept(self, payloads: Sequence[Payload]) -> list[str]:
        # Encode them all first: one oversized payload accepts none, as the real client.
        decoded = [_round_trip(self.app, p) for p in payloads]
        jids = []
        for payload in decoded:
            # Counted as it runs: with defer_many, the jobs after a failing one never
            # run, so they do not join its batch either.
            self._accepted([payload])
            self.ran.append(_captured(self.app, payload))
            await self._perform(payload)
            jids.append(payload.jid)
        return jids


class Capture(_Mode):
    """The state of a :func:`capture` block: the jobs deferred and not yet run.

    Attributes:
        jobs: jobs deferred and not yet drained, oldest first.
        ran: jobs run by :meth:`drain` or :meth:`run_one`, in the order they ran
            (failed ones included).
    """

    def __init__(self, app: App) -> None:
        super().__init__(app)
        self.jobs: list[CapturedJob] = []
        self.ran: list[CapturedJob] = []
        self._active = False

    def __len__(self) -> int:
        return len(self.jobs)

    def for_job(self, job: Job[Any, Any]) -> list[CapturedJob]:
        """The pending runs of ``job``, oldest first."""
        return [c for c in self.jobs if c.is_for(job)]

    def for_queue(self, queue: str) -> list[CapturedJob]:
        """The pending jobs of ``queue``, oldest first."""
        return [c for c in self.jobs if c.queue == queue]

    def clear(self) -> None:
        """Forget every pending job (Sidekiq's ``Job.clear_all``)."""
        self.jobs.clear()

    async def accept(self, payloads: Sequence[Payload]) -> list[str]:
        # Encode them all first: one oversized payload accepts none, as the real client.
        decoded = [_round_trip(self.app, p) for p in payloads]
        self._accepted(decoded)
        self.jobs.extend(_captured(self.app, p) for p in decoded)
        return [p.jid for p in decoded]

    def _remove_waiting(self, jid: str) -> Payload | None:
        """A captured job not run yet (queued or scheduled) is removed: it never runs."""
        for i, c in enumerate(self.jobs):
            if c.jid == jid:
                del self.jobs[i]
                return c._payload
        return super()._remove_waiting(jid)

    def _check_active(self, what: str) -> None:
        if not self._active:
            raise RuntimeError(f"{what}() must be called inside the `with capture(app)` block")

    async def run_one(self, job: Job[Any, Any] | None = None) -> CapturedJob:
        """Run the oldest pending job (of ``job``, if given) and return it.

        Jobs it defers are captured, not run. A failure is raised.

        Raises:
            LookupError: no job (of that kind) is pending.
            RuntimeError: called outside the ``capture`` block.
        """
        self._check_active("run_one")
        i = next((i for i, c in enumerate(self.jobs) if job is None or c.is_for(job)), None)
        if i is None:
            what = "job" if job is None else f"job of {job.name}"
            raise LookupError(f"run_one(): no {what} is pending in this capture")
        captured = self.jobs.pop(i)
        self.ran.append(captured)
        await self._perform(captured._payload)
        return captured

    async def drain(
        self,
        job: Job[Any, Any] | None = None,
        *,
        raise_errors: bool = True,
        limit: int = 10_000,
    ) -> list[Failure]:
        """Run the pending jobs, oldest first, until none is left.

        Jobs that the drained jobs defer are captured and run too, in the same call
        (Sidekiq's ``drain_all``). ``delay`` and ``at`` are ignored: a scheduled job runs
        in its turn. Jobs run one at a time, in the caller's task; there are no retries.

        Args:
            job: only run jobs of this kind (and leave others pending), like Sidekiq's
                ``Job.drain``; ``None`` runs everything.
            raise_errors: ``True`` (default): the first job that raises stops the drain
                and its exception propagates; that job is gone from :attr:`jobs`, the
                others stay pending (a failed job of a batch counts there as a failure
                waiting for its retry, which never comes here). ``False``: failures
                are collected and the drain goes on.
            limit: the most jobs one drain runs, so that a job that keeps deferring
                itself fails the test instead of hanging it.

        Returns:
            The failures, in order (always empty with ``raise_errors=True``).

        Raises:
            RuntimeError: called outside the ``capture`` block, or more than ``limit``
                jobs would run.
            Exception: with ``raise_errors=True``, whatever the first failing job raised.
        """
        self._check_active("drain")
        failures: list[Failure] = []
        for _ in range(limit):
            if not any(job is None or c.is_for(job) for c in self.jobs):
                return failures
            try:
                await self.run_one(job)
            except Exception as exc:
                if raise_errors:
                    raise
                failures.append(Failure(self.ran[-1], exc))
        if any(job is None or c.is_for(job) for c in self.jobs):
            raise RuntimeError(
                f"drain() ran {limit} jobs and more are pending: does a job keep deferring "
                "itself? (raise limit= if this is expected)"
            )
        return failures


@contextlib.contextmanager
def inline(app: App) -> Iterator[Inline]:
    """Run every job deferred through ``app`` at once, in the caller's task.

    While the block is active, ``await job.defer(...)`` (and ``configure(...).defer``,
    ``defer_many``) validates the arguments as the real client does, runs the client
    middleware, then the server middleware and the job to completion (as Sidekiq's
    ``perform_inline``), and returns its jid. Jobs deferred by a running job run inline
    too, before its ``defer`` returns. ``delay`` and ``at`` are ignored.

    A job that raises makes ``defer`` raise that exception (no retries; death handlers
    run when the job's retries are exhausted, as in a worker); with ``defer_many`` the
    jobs after the failing one do not run (nor count in a batch). Batch callbacks, a
    chain's next steps and jobs waiting with ``after=`` run inline as soon as Redis
    would push them (see the module's docstring).

    Args:
        app: the app whose jobs run inline (each job's ``job.app``).

    Yields:
        An :class:`Inline` that records the jobs run (``inline.ran``).

    Raises:
        RuntimeError: a test mode is already active for ``app`` in this context.
    """
    state = Inline(app)
    with _activate(app, state):
        yield state


@contextlib.contextmanager
def capture(app: App) -> Iterator[Capture]:
    """Record the jobs deferred through ``app`` instead of enqueueing them.

    While the block is active, ``await job.defer(...)`` validates the arguments and runs
    the client middleware as the real client does, records the job in
    :attr:`Capture.jobs` and returns its jid; the test then asserts on what was deferred
    and runs it with :meth:`Capture.drain` or :meth:`Capture.run_one`. Batch callbacks, a
    chain's next steps and jobs waiting with ``after=`` are recorded as soon as Redis
    would push them (see the module's docstring). Jobs left pending when the block ends
    are dropped.

    Args:
        app: the app whose jobs are captured (each job's ``job.app``).

    Yields:
        A :class:`Capture` holding the pending jobs.

    Raises:
        RuntimeError: a test mode is already active for ``app`` in this context.
    """
    state = Capture(app)
    state._active = True
    try:
        with _activate(app, state):
            yield state
    finally:
        state._active = False


@contextlib.contextmanager
def _activate(app: App, mode: TestMode) -> Iterator[None]:
    modes = _test_modes.get() or {}
    if id(app) in modes:
        raise RuntimeError(
            f"a test mode (capture or inline) is already active for {app!r}: "
            "test modes do not nest; leave the first block before entering another"
        )
    token = _test_modes.set({**modes, id(app): mode})
    try:
        yield
    finally:
        _test_modes.reset(token)


def _round_trip(app: App, payload: Payload) -> Payload:
    """Encode as the client does before it pushes (with its size limit), and decode as
    the worker does after it fetches."""
    return DECODER.decode(app._encode(payload))


def _captured(app: App, payload: Payload) -> CapturedJob:
    job = _job_for(app, payload)
    try:
        args, kwargs = job.decode_call(payload.args)
    except DECODE_ERRORS as exc:  # encrypted or compressed arguments (#15)
        args, kwargs = job.decode_call(
            unpack(app.packer, payload.args, payload.job, payload.jid, exc)
        )
    bound = inspect.signature(job.fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return CapturedJob(
        jid=payload.jid,
        name=payload.job,
        queue=payload.queue,
        args=args,
        kwargs=kwargs,
        arguments=dict(bound.arguments),
        at=None if payload.at is None else dt.datetime.fromtimestamp(payload.at, dt.UTC),
        enqueued_at=(
            None
            if payload.enqueued_at is None
            else dt.datetime.fromtimestamp(payload.enqueued_at, dt.UTC)
        ),
        retry=payload.retry,
        timeout=payload.timeout,
        meta=dict(payload.meta),
        _payload=payload,
    )


def _job_for(app: App, payload: Payload) -> Job[Any, Any]:
    job = app.jobs.get(payload.job)
    if job is None:
        raise UnknownJobError(f"no job named {payload.job!r} is registered in {app!r}")
    return job
