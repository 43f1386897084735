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
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from ._errors import JobTimeout, UnknownJobError
from ._job import Job, JobContext, _current
from ._payload import DECODER, Payload

if TYPE_CHECKING:
    from ._app import App

__all__ = ["Capture", "CapturedJob", "Failure", "Inline", "capture", "inline"]

log = logging.getLogger("asyncjobs.testing")

_Enqueue = Callable[[Payload], Awaitable[str]]
_EnqueueMany = Callable[[Sequence[Payload]], Awaitable[list[str]]]


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


class Inline:
    """The state of an :func:`inline` block.

    Attributes:
        ran: every job run so far in this block, in the order they started.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.ran: list[CapturedJob] = []

    def for_job(self, job: Job[Any, Any]) -> list[CapturedJob]:
        """The runs of ``job`` so far, in order."""
        return [c for c in self.ran if c.is_for(job)]

    async def _run(self, payloads: Sequence[Payload]) -> list[str]:
        jids = []
        for payload in payloads:
            captured = _captured(self.app, payload)
            self.ran.append(captured)
            await _perform(self.app, payload)
            jids.append(payload.jid)
        return jids


class Capture:
    """The state of a :func:`capture` block: the jobs deferred and not yet run.

    Attributes:
        jobs: jobs deferred and not yet drained, oldest first.
        ran: jobs run by :meth:`drain`, in the order they ran (failed ones included).
    """

    def __init__(self, app: App) -> None:
        self.app = app
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
                others stay pending. ``False``: failures are collected and the drain
                goes on.
            limit: the most jobs one drain runs, so that a job that keeps deferring
                itself fails the test instead of hanging it.

        Returns:
            The failures, in order (always empty with ``raise_errors=True``).

        Raises:
            RuntimeError: called outside the ``capture`` block, or more than ``limit``
                jobs would run.
            Exception: with ``raise_errors=True``, whatever the first failing job raised.
        """
        if not self._active:
            raise RuntimeError("drain() must be called inside the `with capture(app)` block")
        failures: list[Failure] = []
        for _ in range(limit):
            i = next((i for i, c in enumerate(self.jobs) if job is None or c.is_for(job)), None)
            if i is None:
                return failures
            captured = self.jobs.pop(i)
            self.ran.append(captured)
            try:
                await _perform(self.app, captured._payload)
            except Exception as exc:
                if raise_errors:
                    raise
                failures.append(Failure(captured, exc))
        if any(job is None or c.is_for(job) for c in self.jobs):
            raise RuntimeError(
                f"drain() ran {limit} jobs and more are pending: does a job keep deferring "
                "itself? (raise limit= if this is expected)"
            )
        return failures

    def _record(self, payloads: Sequence[Payload]) -> list[str]:
        self.jobs.extend(_captured(self.app, p) for p in payloads)
        return [p.jid for p in payloads]


@contextlib.contextmanager
def inline(app: App) -> Iterator[Inline]:
    """Run every job deferred through ``app`` at once, in the caller's task.

    While the block is active, ``await job.defer(...)`` (and ``configure(...).defer``,
    ``defer_many``) validates the arguments as the real client does, then runs the job
    to completion and returns its jid. Jobs deferred by a running job run inline too,
    before its ``defer`` returns. ``delay`` and ``at`` are ignored.

    A job that raises makes ``defer`` raise that exception (no retries, no dead set);
    with ``defer_many`` the jobs after the failing one do not run.

    Args:
        app: the app whose jobs run inline (each job's ``job.app``).

    Yields:
        An :class:`Inline` that records the jobs run (``inline.ran``).
    """
    state = Inline(app)

    async def run_now(payloads: Sequence[Payload]) -> list[str]:
        return await state._run(payloads)

    with _intercept(app, run_now):
        yield state


@contextlib.contextmanager
def capture(app: App) -> Iterator[Capture]:
    """Record the jobs deferred through ``app`` instead of enqueueing them.

    While the block is active, ``await job.defer(...)`` validates the arguments as the
    real client does, records the job in :attr:`Capture.jobs` and returns its jid; the
    test then asserts on what was deferred and runs it with :meth:`Capture.drain`.
    Jobs left pending when the block ends are dropped.

    Args:
        app: the app whose jobs are captured (each job's ``job.app``).

    Yields:
        A :class:`Capture` holding the pending jobs.
    """
    state = Capture(app)

    async def record(payloads: Sequence[Payload]) -> list[str]:
        return state._record(payloads)

    state._active = True
    try:
        with _intercept(app, record):
            yield state
    finally:
        state._active = False


# -- the client side ---------------------------------------------------------------------


@contextlib.contextmanager
def _intercept(
    app: App, accept: Callable[[Sequence[Payload]], Awaitable[list[str]]]
) -> Iterator[None]:
    """Replace ``app._enqueue`` and ``app._enqueue_many`` (instance attributes) for the
    block. ``accept`` receives payloads that went through client middleware and the
    encode/decode round trip, exactly what the real client would have pushed."""

    async def enqueue(payload: Payload) -> str:
        return await _through_middleware(app, payload, 0, accept)

    async def enqueue_many(payloads: Sequence[Payload]) -> list[str]:
        if app.client_middleware:
            # As the real client: with middleware, each job goes through it alone.
            return [await enqueue(p) for p in payloads]
        # Encode them all first: one oversized payload accepts none, as the real client.
        return await accept([_round_trip(app, p) for p in payloads])

    attrs = vars(app)
    saved = {name: attrs.get(name, _UNSET) for name in ("_enqueue", "_enqueue_many")}
    attrs["_enqueue"] = enqueue
    attrs["_enqueue_many"] = enqueue_many
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is _UNSET:
                attrs.pop(name, None)
            else:
                attrs[name] = value


_UNSET: Any = object()


async def _through_middleware(
    app: App,
    payload: Payload,
    i: int,
    accept: Callable[[Sequence[Payload]], Awaitable[list[str]]],
) -> str:
    # The same chain as App._enqueue: in order of registration, each may change the
    # payload (meta fields) or not call the next one at all (a unique-jobs filter).
    chain = app.client_middleware
    if i == len(chain):
        [jid] = await accept([_round_trip(app, payload)])
        return jid

    async def call_next(p: Payload) -> str:
        return await _through_middleware(app, p, i + 1, accept)

    return await chain[i](payload, call_next)


def _round_trip(app: App, payload: Payload) -> Payload:
    """Encode as the client does before it pushes (with its size limit), and decode as
    the worker does after it fetches."""
    return DECODER.decode(app._encode(payload))


def _captured(app: App, payload: Payload) -> CapturedJob:
    job = _job_for(app, payload)
    args, kwargs = job.decode_call(payload.args)
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


# -- the worker side -----------------------------------------------------------------------


async def _perform(app: App, payload: Payload) -> None:
    """Run one job as a capsule does: decoded arguments, ``current_job()``, server
    middleware, timeout. Failures propagate to the caller."""
    job = _job_for(app, payload)
    args, kwargs = job.decode_call(payload.args)
    if payload.enqueued_at is None:
        # A scheduled job gets its enqueued_at when the scheduler promotes it.
        payload = msgspec.structs.replace(payload, enqueued_at=time.time())
    timeout = payload.timeout or job.timeout
    log.debug("run %s jid=%s queue=%s", payload.job, payload.jid, payload.queue)
    token = _current.set(payload)
    try:
        if not timeout:
            await _call(app, payload, job, args, kwargs)
            return
        with anyio.move_on_after(timeout) as scope:
            await _call(app, payload, job, args, kwargs)
        if scope.cancelled_caught:
            raise JobTimeout(f"job {payload.job} ran past its timeout of {timeout}s")
    finally:
        _current.reset(token)


async def _call(
    app: App,
    payload: Payload,
    job: Job[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    if not app.server_middleware:
        await job.fn(*args, **kwargs)
        return
    ctx = JobContext(payload)
    chain = app.server_middleware

    async def step(i: int) -> Any:
        if i == len(chain):
            return await job.fn(*args, **kwargs)

        async def call_next() -> Any:
            return await step(i + 1)

        return await chain[i](ctx, call_next)

    await step(0)
