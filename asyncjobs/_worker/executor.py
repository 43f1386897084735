"""The executor: turns one fetched payload into an outcome.

The worker's capsules and the testing helpers (``asyncjobs.testing``) run every job
through :meth:`Executor.run`, so decoding, the server middleware chain, timeouts, the
retry decision, ``retry_in``, ``on_exhausted`` (awaited before a death or discard is
reported, since it may turn one into the other) and death handlers behave the same in a
test and in production. The outcomes:

- **succeeded** (or skipped by a server middleware): reported with ``sink.done``;
- **retry** at a time, **dead**, or **discarded**: reported with ``sink.move``;
- **cancelled** by ``app.cancel`` (#14): reported with ``sink.done``, not retried;
- **interrupted** by shutdown: nothing is reported, so the job stays in the process's
  in-flight hash and the launcher puts it back at the head of its queue (invariant 1).

The executor reports outcomes; it never writes them to Redis itself (the acker does).
Unique and expiring jobs (#13) are the exception, through ``locks`` (the store): a lock
is released in a background task after the outcome is reported, or taken around the
call (``until="executing"``), and an expired job is counted. Jobs without those options
never reach ``locks``. Tracked jobs (``keep_result``, ``track_status``) write their
state, progress and outcome through it too (the outcome before the ack).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import msgspec

from .._errors import JobTimeout, PayloadError
from .._job import (
    JobContext,
    reset_current,
    reset_progress_reporter,
    set_current,
    set_progress_reporter,
)
from .._limits import OverLimit, reschedule_delay
from .._metrics import DEAD, DISCARD, OK, RETRY
from .._middleware import Chain, ServerMiddleware, run_server
from .._payload import DECODE_ERRORS, DECODER, ENCODER, Lock, Payload, encode_backtrace
from .._retry import BACKTRACE_LINES, decide, format_backtrace
from .._seal import plain_args, unpack
from .._status import DEFAULT_KEEP, PENDING_TTL, Outcome, Progress, State
from ..iteration import Interrupted
from .iteration import iterate, put_back
from .limits import Lease, LimitStore, enter_all, release_all
from .tasks import TaskOwner

if TYPE_CHECKING:
    from .._job import Job
    from .._registry import Registry

__all__ = ["Executor", "Locks", "Running", "Sink", "Watchdog", "describe"]

log = logging.getLogger("asyncjobs.executor")
joblog = logging.getLogger("asyncjobs.job")

DeathHandler = Callable[[JobContext, BaseException], Awaitable[None]]


class Sink(Protocol):
    """Where outcomes go: the worker's acker, or a test mode's recorder."""

    def done(self, field: bytes) -> None: ...

    def move(self, field: bytes, target: str, at: float, data: bytes) -> None: ...

    # A job of a batch (#14): its outcome, reported next, is counted in batch ``bid``.
    def batch(self, field: bytes, bid: str) -> None: ...


class Locks(Protocol):
    """Where unique jobs' locks and the expired counter live: the store (a test mode
    has none, and takes no locks)."""

    async def unlock(self, lock: str, jid: str) -> bool: ...

    async def lock(self, lock: str, jid: str, ttl: float) -> bool: ...

    async def count_expired(self, n: int = 1) -> None: ...

    async def lock_holder(self, lock: str) -> tuple[str, float] | None: ...

    # Tracked jobs (keep_result, track_status: #14): their state, outcome and progress.
    async def set_status(
        self, jid: str, data: bytes, ttl: float, *, only_new: bool = False
    ) -> None: ...

    async def save_result(self, jid: str, data: bytes, ttl: float) -> None: ...

    async def set_progress(self, jid: str, data: bytes, ttl: float) -> None: ...


class Running:
    """One job being run, and what shutdown and the timeout watchdog need to know."""

    __slots__ = ("deadline", "error", "field", "payload", "raw", "reason", "started_at", "task")

    def __init__(self, field: bytes, raw: bytes) -> None:
        self.field = field
        self.raw = raw
        self.payload: Payload | None = None
        self.deadline = 0.0
        # Why we cancelled it: "timeout" | "shutdown" | "cancel" (app.cancel, #14); or
        # "quiet" (not started), "finishing" (ended: too late for app.cancel).
        self.reason: str | None = None
        self.task: asyncio.Task[Any] | None = None
        self.error: BaseException | None = None  # what the job raised, if it failed
        # When the job started (wall clock; 0 until decoded): ``asyncjobs processes``.
        self.started_at = 0.0


class Watchdog:
    """Cancels jobs past their deadline. One task scanning a few times a second costs
    less than a timer per job; it sleeps while no running job has a timeout."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._timed: set[Running] = set()
        self._event = asyncio.Event()

    def watch(self, rec: Running, timeout: float) -> None:
        rec.deadline = time.monotonic() + timeout
        self._timed.add(rec)
        if len(self._timed) == 1:
            self._event.set()

    def unwatch(self, rec: Running) -> None:
        self._timed.discard(rec)

    def __len__(self) -> int:
        return len(self._timed)

    def scan(self, now: float) -> None:
        """Cancel every watched job whose deadline has passed (once)."""
        for rec in list(self._timed):
            if rec.deadline <= now and rec.reason is None and rec.task is not None:
                rec.reason = "timeout"
                rec.task.cancel()

    async def run(self) -> None:
        while True:
            if not self._timed:
                self._event.clear()
                await self._event.wait()
            await asyncio.sleep(self.interval)
            self.scan(time.monotonic())


class Executor:
    """Runs jobs of one capsule (or of a test mode) and reports their outcomes.

    Args:
        app: the registry (``app.jobs``), payload limit, server middleware and death
            handlers.
        sink: where outcomes go.
        middleware: this capsule's own server middleware, run inside the app's.
        on_finished: called once a job has an outcome (or none, when interrupted); the
            capsule frees its slot there.
        tasks: the owner of death-handler tasks (the worker's); by default the
            executor's own.
        locks: the store, for unique jobs' locks and the expired counter (None in a
            test mode: no locks are taken or released).
    """

    def __init__(
        self,
        app: Registry,
        sink: Sink,
        *,
        middleware: Chain[ServerMiddleware] | None = None,
        on_finished: Callable[[Running], None] | None = None,
        tasks: TaskOwner | None = None,
        locks: Locks | None = None,
    ) -> None:
        self.app = app
        self.locks = locks
        self.sink = sink
        # Always a chain (an empty one by default), so the run path checks one field.
        self.middleware: Chain[ServerMiddleware] = middleware if middleware is not None else Chain()
        self.on_finished: Callable[[Running], None] = on_finished or _nothing
        self.watchdog = Watchdog()
        self.processed = 0
        self.failed = 0
        self._rng = random.Random()
        self._debug = joblog.isEnabledFor(logging.DEBUG)
        # Death handlers run after the outcome is reported (on_exhausted before it, in
        # the job's task: it may turn a death into a discard), as tasks of the worker's
        # owner (shutdown waits for them within its timeout, then cancels them), or of
        # the executor's own (a test mode waits for them after each job).
        self.tasks = tasks if tasks is not None else TaskOwner()
        # The process id a tracked job's "running" state names (set by the launcher).
        self.process_id: str | None = None
        # Set by the capsule as the worker quiets or stops: iterable jobs (#14) stop at
        # their next item boundary and are given back (``give_back(field, payload)``)
        # to the head of their queue.
        self.stopping = False
        self.give_back: Callable[[bytes, bytes], None] | None = None
        # App(metrics=True): the acker's Recorder.record (job, queue, run and dispatch latency
        # in seconds, outcome), called before each outcome of a job that ran. None: off,
        # and a job's path checks this one attribute.
        self.measure: Callable[[str, str, float, float, int], None] | None = None

    def _chain(self) -> Sequence[ServerMiddleware]:
        own = self.middleware.entries
        app_chain = self.app.server_middleware.entries
        if not own:
            return app_chain
        return (*app_chain, *own)

    # -- running a job -----------------------------------------------------------------

    async def run(self, rec: Running) -> None:
        """Run one job to its outcome. Never raises (but lets BaseExceptions such as
        KeyboardInterrupt through)."""
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
                # Encrypted or compressed arguments (#15) are a string, which fails the
                # decode above: they are opened here, off the plain path.
                try:
                    args, kwargs = job.decode_call(
                        unpack(app.packer, payload.args, payload.job, payload.jid, exc)
                    )
                except (PayloadError, *DECODE_ERRORS) as err:
                    if isinstance(err, PayloadError):  # no key, tampered, no cryptography
                        error_class, message = type(err).__name__, str(err)
                    else:
                        error_class, message = (
                            "ArgumentError",
                            (f"arguments no longer fit {job.name}: {err}"),
                        )
                    if job.track_status:
                        await self._save(payload, job, "dead", error=(error_class, message))
                    self._dead(rec, payload, error_class, message)
                    return
            rec.payload = payload
            if payload.bid is not None:  # a batch job (#14): the sink counts it there
                self.sink.batch(rec.field, payload.bid)
            # A plain job (no status, limiter, expiry, lock, and not cancelled before it
            # started) checks one flag, two payload fields and its reason, and takes the
            # lean path below; the features take theirs (measured: each feature's checks
            # on the common path cost a no-op drain a few percent).
            if (
                job.flow
                or payload.expires_at is not None
                or payload.unique is not None
                or rec.reason  # set by a cancel before it started (never "")
            ):
                await self._run_flow(rec, payload, job, args, kwargs)
                return
            timeout = payload.timeout or job.timeout
            if timeout:
                self.watchdog.watch(rec, timeout)
            token = set_current(payload)
            if self._debug:
                joblog.debug("start %s jid=%s queue=%s", payload.job, payload.jid, payload.queue)
                t0 = time.perf_counter()
            try:
                if app.server_middleware.entries or self.middleware.entries:
                    await run_server(
                        self._chain(),
                        JobContext(payload),
                        functools.partial(job.fn, *args, **kwargs),
                    )
                else:
                    await job.fn(*args, **kwargs)
            except BaseException as exc:
                if not isinstance(exc, Exception | asyncio.CancelledError):
                    raise  # KeyboardInterrupt, SystemExit: not a job failure
                await self._raised(rec, payload, job, exc, timeout)
                return
            finally:
                reset_current(token)
                if rec.deadline:
                    self.watchdog.unwatch(rec)
            if rec.deadline and _past_timeout(rec):
                # It swallowed the cancellation and returned: still past its timeout.
                await self._timed_out(rec, payload, job, timeout)
                return
            self.processed += 1
            measure = self.measure
            if measure is not None:  # App(metrics=True); inline: every job of it pays
                start = rec.started_at
                since = payload.at or payload.enqueued_at or start
                measure(payload.job, payload.queue, time.time() - start, start - since, OK)
            self.sink.done(rec.field)
            if self._debug:
                joblog.debug(
                    "done %s jid=%s in %.3fs", payload.job, payload.jid, time.perf_counter() - t0
                )
        finally:
            self.on_finished(rec)

    async def _run_flow(
        self,
        rec: Running,
        payload: Payload,
        job: Job[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """:meth:`run` for a job that uses a feature: status and results, rate limiters,
        expiry, unique locks; or one cancelled before it started."""
        if rec.reason == "cancel":  # cancelled before it started
            await self._cancelled(rec, payload, job, asyncio.CancelledError())
            return
        tracked = job.track_status and self.locks is not None
        leases = None
        progress_token = None
        # Unique and expiring jobs.
        if (payload.expires_at is not None or payload.unique is not None) and (
            self._before(rec, payload) or await self._replaced(rec, payload)
        ):
            if job.track_status:  # its waiters learn it will not run
                reason = "expired (expires_in), or replaced by a later unique job"
                await self._save(payload, job, "failed", error=("NotRun", reason))
            return
        # Rate limiters declared on the job: one script call each, for those only.
        if job.limits and self.locks is not None:
            leases = await self._gate(rec, payload, job)
            if leases is None:
                return
        if tracked:
            progress_token = self._track_start(payload)
        timeout = payload.timeout or job.timeout
        if timeout:
            self.watchdog.watch(rec, timeout)
        token = set_current(payload)
        if self._debug:
            joblog.debug("start %s jid=%s queue=%s", payload.job, payload.jid, payload.queue)
            t0 = time.perf_counter()
        try:
            fn: Callable[..., Awaitable[Any]] = job.fn
            if job.iterable is not None and self.locks is not None:
                # An iterable job (#14): its generator, driven from the saved cursor.
                fn = functools.partial(iterate, self, rec, payload, job.iterable)
            lock = payload.unique
            if lock is not None and lock.until == "executing" and self.locks is not None:
                fn = functools.partial(self._while_executing, payload, lock, fn)
            if self.app.server_middleware.entries or self.middleware.entries:
                box: list[Any] = [None]

                async def call() -> Any:
                    # The value goes to the job's outcome, and back through the
                    # middleware (as on the plain path).
                    box[0] = result = await fn(*args, **kwargs)
                    return result

                await run_server(self._chain(), JobContext(payload), call)
                value = box[0]
            else:
                value = await fn(*args, **kwargs)
        except BaseException as exc:
            if not isinstance(exc, Exception | asyncio.CancelledError | Interrupted):
                raise  # KeyboardInterrupt, SystemExit: not a job failure
            await self._raised(rec, payload, job, exc, timeout)
            return
        finally:
            reset_current(token)
            if rec.deadline:
                self.watchdog.unwatch(rec)
            if progress_token is not None:
                reset_progress_reporter(progress_token)
            if leases:
                self.tasks.start_soon(
                    release_all, cast(LimitStore, self.locks), leases, name="limits"
                )
        if rec.reason == "timeout":
            # It swallowed the cancellation and returned: still past its timeout.
            await self._timed_out(rec, payload, job, timeout)
            return
        self.processed += 1
        if self.measure is not None:  # App(metrics=True)
            self._measure(rec, payload, OK)
        if tracked:
            if rec.reason is None:
                rec.reason = "finishing"  # a cancel request now is too late
            # Stored before the ack, so a waiter woken by it finds it: a crash in
            # between runs the job again (as any job) and stores it again.
            await self._save(payload, job, "succeeded", value=value)
        self.sink.done(rec.field)
        if payload.unique is not None and payload.unique.until == "success":
            self._release(payload)
        if self._debug:
            joblog.debug(
                "done %s jid=%s in %.3fs", payload.job, payload.jid, time.perf_counter() - t0
            )

    def _measure(self, rec: Running, payload: Payload, outcome: int) -> None:
        """Report a job's metrics (App(metrics=True)): execution time from its start,
        dispatch latency from its entry into its queue (``enqueued_at``; a promoted
        job's is its promotion) to its start."""
        assert self.measure is not None
        start = rec.started_at
        since = payload.at or payload.enqueued_at or start
        self.measure(payload.job, payload.queue, time.time() - start, start - since, outcome)

    # -- unique and expiring jobs ------------------------------------------------------

    def _before(self, rec: Running, payload: Payload) -> bool:
        """Before a unique or expiring job runs: True if it expired (dropped, counted,
        its lock released) and must not run. A lock held until the job starts is
        released now."""
        lock = payload.unique
        if payload.expires_at is not None and time.time() > payload.expires_at:
            joblog.info(
                "expired %s jid=%s: not started by its expires_in (due by %s); dropped",
                payload.job,
                payload.jid,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(payload.expires_at)),
            )
            # Acknowledged as done, as Sidekiq Pro's expiry (a middleware that returns);
            # counted apart in {ns}:stat:expired.
            self.sink.done(rec.field)
            if self.locks is not None:
                self.tasks.start_soon(self.locks.count_expired, name="expired counter")
            if lock is not None and lock.until in ("success", "start"):
                self._release(payload)
            return True
        if lock is not None and lock.until == "start" and lock.conflict != "replace":
            self._release(payload)
        return False

    async def _replaced(self, rec: Running, payload: Payload) -> bool:
        """A job of ``on_conflict="replace"`` whose lock another job took over (a later
        defer replaced it, but could not remove it: the scheduler had just moved it to
        its queue) is not run: True. One round trip, for these jobs only."""
        lock = payload.unique
        if lock is None or lock.conflict != "replace" or lock.until == "executing":
            return False
        if self.locks is None:
            return False
        try:
            held = await self.locks.lock_holder(lock.key)
        except Exception as exc:  # Redis away: run it, as if it had not been replaced
            log.warning("cannot read the unique lock of jid=%s (%s); running it", payload.jid, exc)
            return False
        if held is not None and held[0] != payload.jid:
            joblog.info(
                "replaced %s jid=%s by jid=%s before it started; not run",
                payload.job,
                payload.jid,
                held[0],
            )
            self.sink.done(rec.field)
            return True
        if lock.until == "start":
            self._release(payload)
        return False

    def _release(self, payload: Payload) -> None:
        """Release the job's lock, in the background (its jid is the token: a lock that
        another job took over since stays)."""
        if self.locks is not None and payload.unique is not None:
            self.tasks.start_soon(self._unlock, payload.unique.key, payload.jid, name="unlock")

    async def _unlock(self, lock: str, jid: str) -> None:
        assert self.locks is not None
        try:
            await self.locks.unlock(lock, jid)
        except Exception as exc:  # Redis away: the lock's TTL frees it
            log.warning("cannot release the unique lock of jid=%s (%s); its TTL will", jid, exc)

    async def _while_executing(
        self,
        payload: Payload,
        lock: Lock,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn`` holding the job's while-executing lock: a second run of the same
        lock waits here, in its slot, polling (50 ms, doubling to 1 s), until the first
        ends or the lock's TTL runs out. The wait counts towards the job's timeout."""
        assert self.locks is not None
        delay = 0.05
        while not await self.locks.lock(lock.key, payload.jid, lock.ttl):
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
        try:
            return await fn(*args, **kwargs)
        finally:
            self._release(payload)

    async def _raised(
        self,
        rec: Running,
        payload: Payload,
        job: Job[Any, Any],
        exc: BaseException,
        timeout: float | None,
    ) -> None:
        if isinstance(exc, Interrupted):  # an iterable job stopped at an item (#14)
            put_back(self, rec, exc)
            return
        cancelled = _caused_by_cancellation(exc)
        if rec.reason == "shutdown" and cancelled:
            # Interrupted by shutdown (even if its cleanup raised something else): no
            # outcome; the job stays in the in-flight hash and is put back at the head
            # of its queue. Sidekiq walks the cause chain the same way.
            return
        if rec.reason == "timeout" and cancelled:
            await self._timed_out(rec, payload, job, timeout)
            return
        if rec.reason == "cancel" and cancelled:
            task = rec.task
            if task is not None and task is asyncio.current_task():
                task.uncancel()
            await self._cancelled(rec, payload, job, exc)
            return
        if isinstance(exc, asyncio.CancelledError):
            # Cancelled by something other than us (a job cancelling its own task):
            # no outcome, the job goes back like an interrupted one.
            return
        if isinstance(exc, OverLimit) and self.locks is not None:
            await self._over_limit(rec, payload, exc, job)
            return
        await self._failed(rec, payload, exc, job)

    # -- rate limiters -------------------------------------------------------------------

    async def _gate(self, rec: Running, payload: Payload, job: Job[Any, Any]) -> list[Lease] | None:
        """Take the job's declared limiters; None if over one (the job is rescheduled,
        or failed) or Redis is away (rescheduled too)."""
        # The store has the limiter methods; Locks names only what unique jobs need.
        store = cast(LimitStore, self.locks)
        try:
            return await enter_all(
                store,
                job.limits,
                lambda: msgspec.json.decode(
                    plain_args(self.app.packer, payload.args, payload.job, payload.jid)
                ),
            )
        except OverLimit as exc:
            await self._over_limit(rec, payload, exc, job)
        except Exception as exc:
            # Redis away: try again in a second or two, as the same payload (not counted
            # as a reschedule); the acker writes the move once Redis is back.
            at = time.time() + reschedule_delay(1.0, 0, self._rng)
            log.warning(
                "cannot take the limiters of %s jid=%s (%s); rescheduled in %.1fs",
                payload.job,
                payload.jid,
                exc,
                at - time.time(),
            )
            self.sink.move(rec.field, "schedule", at, rec.raw)
        return None

    async def _over_limit(
        self, rec: Running, payload: Payload, exc: OverLimit, job: Job[Any, Any]
    ) -> None:
        """Over a rate limit: back to the schedule set with backoff and jitter, not a
        retry and not a failure, up to the limiter's ``reschedules``; then a failure."""
        count = payload.limited or 0
        if count >= exc.reschedules:
            err = OverLimit(
                exc.name,
                exc.key,
                exc.retry_after,
                f"{exc}; rescheduled {count} times already (reschedules={exc.reschedules})",
                reschedules=exc.reschedules,
                max_backoff=exc.max_backoff,
            )
            await self._failed(rec, payload, err, job)
            return
        at = time.time() + reschedule_delay(exc.retry_after, count, self._rng, exc.max_backoff)
        later = msgspec.structs.replace(payload, limited=count + 1, at=at, enqueued_at=None)
        if self._debug:
            joblog.debug(
                "over limit %s jid=%s: %s; rescheduled (%d) in %.3fs",
                payload.job,
                payload.jid,
                exc.name,
                count + 1,
                at - time.time(),
            )
        self.sink.move(rec.field, "schedule", at, ENCODER.encode(later))

    async def _timed_out(
        self, rec: Running, payload: Payload, job: Job[Any, Any], timeout: float | None
    ) -> None:
        task = rec.task
        if task is not None and task is asyncio.current_task():
            # The cancellation was ours and is handled: a task that goes on (a test
            # mode runs jobs in the caller's task) must not look cancelled.
            task.uncancel()
        await self._failed(
            rec, payload, JobTimeout(f"job {payload.job} ran past its timeout of {timeout}s"), job
        )

    # -- outcomes ------------------------------------------------------------------------

    async def _failed(
        self, rec: Running, payload: Payload, exc: BaseException, job: Job[Any, Any] | None
    ) -> None:
        self.failed += 1
        rec.error = exc
        if rec.reason is None:
            # Ended: a cancel request now is too late (it would cut the outcome short).
            rec.reason = "finishing"
        now = time.time()
        # Sidekiq's retry_count: absent before the first failure, 0 after it, then one
        # more per failed retry (the retries already made).
        count = 0 if payload.retry_count is None else payload.retry_count + 1
        d = decide(
            exc=exc,
            retry_count=count,
            retry=payload.retry,
            dead=payload.dead,
            now=now,
            rng=self._rng,
            retry_in=job.retry_in if job else None,
            discard_on=job.discard_on if job else (),
            dead_on=job.dead_on if job else (),
            retry_for=job.retry_for if job else None,
            failed_at=payload.failed_at,
        )
        if d.hook_error is not None:
            joblog.warning(
                "retry_in of %s jid=%s raised %s: %s; using the default backoff",
                payload.job,
                payload.jid,
                type(d.hook_error).__name__,
                _shorten(describe(d.hook_error)),
            )
        message = describe(exc)
        failed = msgspec.structs.replace(
            payload,
            error_class=_clean(type(exc).__name__),
            error_message=_clean(message)[:ERROR_MESSAGE_CHARS],
            error_backtrace=self._backtrace(payload, exc, job),
            failed_at=payload.failed_at or now,
            retried_at=now if payload.retry_count is not None else None,
            enqueued_at=None,
            retry_count=count,
        )
        if job is not None and job.retry_queue is not None:
            # Sidekiq's retry_queue: the retry (and the dead entry, and a retry of it by
            # hand) goes to that queue from now on.
            failed = msgspec.structs.replace(failed, queue=job.retry_queue)
        short = _shorten(message)
        if d.target == "retry":
            failed = msgspec.structs.replace(failed, at=d.at)
            retry_for = job.retry_for if job is not None else None
            # With retry_for the count has no limit: say what bounds the retries instead.
            limit = f"/{payload.retry}" if retry_for is None else f" (retry_for {retry_for:g}s)"
            joblog.warning(
                "fail %s jid=%s: %s: %s; retry %d%s in %.0fs",
                payload.job,
                payload.jid,
                type(exc).__name__,
                short,
                count + 1,
                limit,
                d.at - now,
            )
            if job is not None and job.track_status and self.locks is not None:
                self.tasks.start_soon(
                    self._write_state, payload.jid, retrying_state(failed, now), name="status"
                )
            if self.measure is not None:
                self._measure(rec, payload, RETRY)
            self.sink.move(rec.field, "retry", d.at, ENCODER.encode(failed))
            return
        target, reason = d.target, d.reason
        if job is not None and job.on_exhausted is not None:
            # As Sidekiq's sidekiq_retries_exhausted: it runs before the outcome, which
            # it may change to a discard, so the job's slot waits for it. The watchdog
            # lets go first: the job's timeout does not cover its hook.
            self.watchdog.unwatch(rec)
            if await _run_on_exhausted(job.on_exhausted, failed, exc) == "discard":
                target, reason = "discard", "on_exhausted said discard"
        if job is not None and job.track_status and self.locks is not None:
            await self._save(
                payload,
                job,
                "failed" if target == "discard" else "dead",
                error=(failed.error_class, failed.error_message),
            )
        if target == "discard":
            # Sidekiq stamps discarded_at; the death handlers see it.
            failed = msgspec.structs.replace(failed, discarded_at=time.time())
            joblog.warning(
                "fail %s jid=%s: %s: %s; discarded (%s)",
                payload.job,
                payload.jid,
                type(exc).__name__,
                short,
                reason,
            )
            if self.measure is not None:
                self._measure(rec, payload, DISCARD)
            self.sink.move(rec.field, "drop", now, b"")
            if failed.unique is not None and failed.unique.until == "success":
                self._release(failed)
        else:
            joblog.error(
                "dead %s jid=%s: %s: %s (%s)",
                payload.job,
                payload.jid,
                type(exc).__name__,
                short,
                reason,
            )
            if self.measure is not None:
                self._measure(rec, payload, DEAD)
            self.sink.move(rec.field, "dead", now, ENCODER.encode(failed))
            if failed.unique is not None and failed.unique.until == "success":
                self._release(failed)
        self._after_death(failed, exc)

    # -- status, results, progress, cancellation (#14) -----------------------------------

    def _track_start(self, payload: Payload) -> Any:
        """A tracked job starts: its "running" state is written in the background, and
        its progress reporter set; returns the reporter's context token."""
        state = running_state(payload, self.process_id)
        self.tasks.start_soon(self._write_state, payload.jid, state, name="status")
        return set_progress_reporter(_Reporter(self, payload.jid))

    async def _write_state(self, jid: str, data: bytes) -> None:
        assert self.locks is not None
        try:
            await self.locks.set_status(jid, data, PENDING_TTL)
        except Exception as exc:  # Redis away: the status lags, the job goes on
            log.warning("cannot write the status of jid=%s (%s)", jid, exc)

    async def _save(
        self,
        payload: Payload,
        job: Job[Any, Any],
        state: str,
        *,
        value: Any = None,
        error: tuple[str | None, str | None] = (None, None),
    ) -> None:
        """Store a tracked job's outcome (and its result, with keep_result) and wake its
        waiters: one script call, awaited before the ack."""
        if self.locks is None or not job.track_status:
            return
        raw = b"null"
        if job.keep_result is not None and state == "succeeded":
            raw = result_json(payload, value)
        out = Outcome(
            state=state,
            at=time.time(),
            job=payload.job,
            value=msgspec.Raw(raw),
            error_class=error[0],
            error_message=error[1],
            kept=job.keep_result is not None,
        )
        try:
            await self.locks.save_result(
                payload.jid, ENCODER.encode(out), job.keep_result or DEFAULT_KEEP
            )
        except Exception as exc:  # Redis away: the outcome is acked all the same
            log.warning("cannot store the outcome of jid=%s (%s)", payload.jid, exc)

    async def _cancelled(
        self, rec: Running, payload: Payload, job: Job[Any, Any], exc: BaseException
    ) -> None:
        """Cancelled by app.cancel: acknowledged (not retried, not dead), its outcome
        stored if tracked, the cancel handlers run."""
        joblog.warning("cancelled %s jid=%s", payload.job, payload.jid)
        await self._save(payload, job, "cancelled")
        if self.measure is not None:
            self._measure(rec, payload, OK)
        self.sink.done(rec.field)
        if payload.unique is not None and payload.unique.until in ("success", "start"):
            self._release(payload)
        hooks: list[DeathHandler] = list(getattr(self.app, "cancel_handlers", ()))
        if hooks:
            self.tasks.start_soon(_run_hooks, hooks, payload, exc, name="cancel handlers")

    def _backtrace(
        self, payload: Payload, exc: BaseException, job: Job[Any, Any] | None
    ) -> str | None:
        """The job's ``backtrace`` lines, cleaned by the app's ``backtrace_cleaner``,
        packed as stored; None when there are none."""
        limit = job.backtrace if job is not None else BACKTRACE_LINES
        try:
            lines = format_backtrace(exc, limit, self.app.backtrace_cleaner)
        except Exception as cleaner_exc:  # a broken cleaner must not lose the job
            log.warning(
                "backtrace_cleaner raised %s for %s jid=%s: %s; storing the backtrace as is",
                type(cleaner_exc).__name__,
                payload.job,
                payload.jid,
                _shorten(describe(cleaner_exc)),
            )
            lines = format_backtrace(exc, limit)
        return encode_backtrace([_clean(line) for line in lines]) if lines else None

    def _after_death(self, failed: Payload, exc: BaseException) -> None:
        """The app's death handlers, after the outcome is reported, as tasks: they see
        the job as it died (with its error, and ``discarded_at`` if discarded)."""
        hooks: list[DeathHandler] = list(self.app.death_handlers)
        if hooks:
            self.tasks.start_soon(_run_hooks, hooks, failed, exc, name="death handlers")

    def _dead(self, rec: Running, payload: Payload, error_class: str, message: str) -> None:
        self.failed += 1
        if payload.bid is not None:  # its batch learns of the death (#14)
            self.sink.batch(rec.field, payload.bid)
        log.error("dead jid=%s: %s: %s", payload.jid, error_class, message)
        now = time.time()
        dead = msgspec.structs.replace(
            payload, error_class=error_class, error_message=message, failed_at=now
        )
        self.sink.move(rec.field, "dead", now, ENCODER.encode(dead))
        if payload.unique is not None and payload.unique.until == "success":
            self._release(payload)

    def _dead_raw(self, rec: Running, reason: str, keep: int | None = None) -> None:
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
        self.sink.move(rec.field, "dead", now, ENCODER.encode(wrapped))

    # -- background work -----------------------------------------------------------------

    async def wait_background(self, timeout: float = 60.0) -> bool:
        """Wait for running death handlers (up to ``timeout``); ``True`` if all ended."""
        return await self.tasks.wait(timeout)


class _Reporter:
    """A tracked job's ``ctx.progress``: the latest report is written in the background,
    one write at a time (reports made meanwhile coalesce into the next write)."""

    __slots__ = ("_executor", "_jid", "_pending", "_writing")

    def __init__(self, executor: Executor, jid: str) -> None:
        self._executor = executor
        self._jid = jid
        self._pending: bytes | None = None
        self._writing = False

    def __call__(self, fraction: float, message: str | None, meta: dict[str, Any] | None) -> None:
        self._pending = progress_json(fraction, message, meta)
        if not self._writing:
            self._writing = True
            self._executor.tasks.start_soon(self._write, name="progress")

    async def _write(self) -> None:
        locks = self._executor.locks
        assert locks is not None
        try:
            while self._pending is not None:
                data, self._pending = self._pending, None
                try:
                    await locks.set_progress(self._jid, data, PENDING_TTL)
                except Exception as exc:  # Redis away: progress is best effort
                    log.warning("cannot write the progress of jid=%s (%s)", self._jid, exc)
                    return
        finally:
            self._writing = False


def running_state(payload: Payload, process: str | None) -> bytes:
    """A tracked job's state as a run starts (``process``: who runs it), as stored."""
    return ENCODER.encode(
        State(state="running", at=time.time(), queue=payload.queue, process=process)
    )


def retrying_state(failed: Payload, now: float) -> bytes:
    """A tracked job's state after a failure with retries left, as stored: ``failed`` is
    the payload bound for the retry set (its error, the retries made before this one,
    its due time ``at``)."""
    return ENCODER.encode(
        State(
            state="retrying",
            at=now,
            queue=failed.queue,
            retry_count=(failed.retry_count or 0) + 1,
            next_at=failed.at,
            error_class=failed.error_class,
            error_message=failed.error_message,
        )
    )


def progress_json(fraction: float, message: str | None, meta: dict[str, Any] | None) -> bytes:
    """A ``ctx.progress`` report as stored; ValueError if ``meta`` is not JSON."""
    report = Progress(fraction=fraction, at=time.time(), message=message, meta=meta)
    try:
        return ENCODER.encode(report)
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raise ValueError(f"progress meta cannot be encoded as JSON: {exc}") from None


def result_json(payload: Payload, value: Any) -> bytes:
    """A job's return value as the JSON its outcome keeps (``keep_result``); ``null``,
    and an error logged, if it cannot be encoded."""
    try:
        return ENCODER.encode(value)
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        joblog.error(
            "result of %s jid=%s cannot be encoded (%s); stored as null",
            payload.job,
            payload.jid,
            exc,
        )
        return b"null"


def _past_timeout(rec: Running) -> bool:
    """Whether the watchdog cancelled ``rec`` for its timeout (read after the call, which
    the watchdog interrupts: a function, so the type checker does not narrow it)."""
    return rec.reason == "timeout"


def _nothing(rec: Running) -> None:
    """The default ``on_finished``: nothing to free."""


async def _run_hooks(hooks: list[DeathHandler], payload: Payload, exc: BaseException) -> None:
    ctx = JobContext(payload)
    for hook in hooks:
        try:
            await hook(ctx, exc)
        except Exception:
            log.exception("death handler %r failed for jid=%s", hook, payload.jid)


async def _run_on_exhausted(
    hook: Callable[[JobContext, BaseException], Awaitable[str | None]],
    failed: Payload,
    exc: BaseException,
) -> str | None:
    """A job's on_exhausted, with the job as it failed; what it raises is logged and
    changes nothing (Sidekiq's behaviour)."""
    try:
        return await hook(JobContext(failed), exc)
    except Exception:
        log.exception("on_exhausted %r failed for jid=%s", hook, failed.jid)
        return None


def _caused_by_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is a CancelledError or was raised while handling one (its
    ``__context__``/``__cause__`` chain leads back to one)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, asyncio.CancelledError):
            return True
        seen.add(id(e))
        stack.extend((e.__cause__, e.__context__))
    return False


def describe(exc: BaseException) -> str:
    """``str(exc)``, even for an exception whose ``__str__`` raises."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


# error_message keeps up to 10,000 characters (Sidekiq keeps it whole); a log line
# shows 500, enough to read, short enough that one failure is one line.
ERROR_MESSAGE_CHARS = 10_000
LOG_MESSAGE_CHARS = 500


def _shorten(text: str, limit: int = LOG_MESSAGE_CHARS) -> str:
    """At most ``limit`` characters of ``text`` for a log line, with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clean(text: str) -> str:
    """Text JSON can hold: lone surrogates (from bytes decoded with surrogateescape, say)
    become escapes instead of making the outcome unencodable."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
