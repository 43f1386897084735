"""``@app.job`` → :class:`Job`: ``configure()``, ``defer()``, ``defer_many()``; the job
context.

Arguments are checked at ``defer`` against the function's signature and type hints with
msgspec: a bad argument raises :class:`ArgumentError` in the caller and nothing reaches
Redis. The worker decodes them back into the annotated types.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import functools
import inspect
import logging
import re
import time
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

import msgspec

from ._batch import Signature, scope_var
from ._errors import ArgumentError, ConfigError, EnqueueError
from ._limits import LimitSpec
from ._payload import ENCODER, Payload, new_jid, valid_jid
from ._seal import COMPRESS_OVER, Packer
from ._status import JobStatus, Outcome, raise_for
from ._unique import Unique, lock_for, resolve

__all__ = [
    "Deferrer",
    "Job",
    "JobContext",
    "JobHandle",
    "current_job",
    "current_payload",
    "reset_current",
    "set_current",
]

P = ParamSpec("P")
R = TypeVar("R")

RetryIn = Callable[[int, BaseException], "float | int | str | None"]
# Returns None, or "discard" to discard the job instead of sending it to the dead set.
OnExhausted = Callable[["JobContext", BaseException], Awaitable["str | None"]]


class Client(Protocol):
    """What a job defers through: the :class:`~asyncjobs.App` it is registered on
    (which runs the client middleware, then writes to Redis, or hands the job to a
    test mode). A protocol, so this module does not import the app's."""

    # Encryption keys and the compression threshold of the app (#15).
    packer: Packer

    async def _enqueue(self, payload: Payload) -> str | None: ...

    async def _enqueue_many(self, payloads: Sequence[Payload]) -> list[str | None]: ...

    async def _track(self, payload: Payload, keep: float) -> None: ...

    async def _track_many(self, payloads: Sequence[Payload]) -> None: ...

    async def _wait_outcome(self, jid: str, timeout: float | None) -> Outcome: ...

    async def status(self, jid: str) -> JobStatus: ...

    async def cancel(self, jid: str) -> str: ...

    async def _defer_after(self, payload: Payload, after: tuple[str, ...]) -> str: ...


_current: ContextVar[Payload] = ContextVar("asyncjobs.job")


# The executor makes a payload the running job of this context, and undoes it after.
# Bound methods of the context variable, not wrappers: one call each per job.
set_current: Callable[[Payload], Token[Payload]] = _current.set
reset_current: Callable[[Token[Payload]], None] = _current.reset


# A tracked job's progress reporter, set by the executor around the job (#14): None
# for jobs that keep no status, whose ctx.progress() stores nothing.
_progress: ContextVar[Callable[[float, str | None, dict[str, Any] | None], None] | None] = (
    ContextVar("asyncjobs.progress", default=None)
)
set_progress_reporter = _progress.set
reset_progress_reporter = _progress.reset


def current_payload() -> Payload | None:
    """The payload of the job running in this context, or ``None`` (for log records)."""
    return _current.get(None)


_PATH = re.compile(r" - at `\$\.?([^.\[`]+)?(.*)`$")  # the argument: any identifier
_MISSING = re.compile(r"missing required field `([^`]+)`")


class JobContext:
    """What a running job knows about itself: ``asyncjobs.current_job()``."""

    __slots__ = ("_logger", "_payload")

    def __init__(self, payload: Payload) -> None:
        self._payload = payload
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def jid(self) -> str:
        """The job id (24 hex digits, or the one given to ``configure(jid=...)``)."""
        return self._payload.jid

    @property
    def name(self) -> str:
        """The registered name of the job function."""
        return self._payload.job

    @property
    def queue(self) -> str:
        """The queue the job was taken from."""
        return self._payload.queue

    @property
    def bid(self) -> str | None:
        """The id of the batch the job belongs to, or None (``app.batch``)."""
        return self._payload.bid

    @property
    def retry_count(self) -> int:
        """Which retry this run is: 0 on the first run, 1 on the first retry...

        One more than the payload's ``retry_count`` (Sidekiq's meaning there: the
        retries already made when the failure was recorded), which is absent until the
        job first fails.
        """
        stored = self._payload.retry_count
        return 0 if stored is None else max(stored + 1, 0)

    @property
    def enqueued_at(self) -> dt.datetime | None:
        """When the job last entered its queue (UTC), or None."""
        t = self._payload.enqueued_at
        return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC)

    @property
    def created_at(self) -> dt.datetime:
        """When ``defer`` was called (UTC)."""
        return dt.datetime.fromtimestamp(self._payload.created_at, dt.UTC)

    @property
    def error_class(self) -> str | None:
        """The class name of the last failure's exception, or None (what ``on_exhausted``
        and death handlers read, with ``error_message``)."""
        return self._payload.error_class

    @property
    def error_message(self) -> str | None:
        """The message of the last failure (up to 10,000 characters), or None."""
        return self._payload.error_message

    @property
    def failed_at(self) -> dt.datetime | None:
        """When the job first failed (UTC), or None."""
        t = self._payload.failed_at
        return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC)

    @property
    def discarded_at(self) -> dt.datetime | None:
        """When the job was discarded (UTC): set for the death handlers of a discarded
        job, as Sidekiq's ``discarded_at``; None otherwise."""
        t = self._payload.discarded_at
        return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC)

    @property
    def meta(self) -> dict[str, Any]:
        """Extra payload fields added by middleware (for example a request id)."""
        return self._payload.meta

    def progress(
        self, fraction: float, message: str | None = None, *, meta: dict[str, Any] | None = None
    ) -> None:
        """Report how far the job is: ``fraction`` from 0 to 1, a short message and a
        small JSON-able dict. Stored in the background (the latest report wins; the
        call does not wait for Redis) for jobs with ``keep_result`` or
        ``track_status``, and read with ``app.status(jid)``; a no-op for other jobs."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ValueError(f"progress fraction must be a number from 0 to 1, got {fraction!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be from 0 to 1, got {fraction!r}")
        report = _progress.get()
        if report is not None:
            report(float(fraction), message, meta)

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry this job's jid, name and queue."""
        if self._logger is None:
            p = self._payload
            self._logger = logging.LoggerAdapter(
                logging.getLogger("asyncjobs.job"),
                {"jid": p.jid, "job": p.job, "queue": p.queue},
            )
        return self._logger

    def __repr__(self) -> str:
        return f"<JobContext {self.name} jid={self.jid} queue={self.queue}>"


def current_job() -> JobContext:
    """The context of the job running in this task.

    Raises :class:`LookupError` outside a job.
    """
    try:
        return JobContext(_current.get())
    except LookupError:
        raise LookupError("current_job() called outside a running job") from None


def _non_finite(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds a float inf or nan (looking inside containers)."""
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if depth > 50 or isinstance(value, str | bytes | int):
        return False
    if isinstance(value, dict):
        return any(_non_finite(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_non_finite(v, depth + 1) for v in value)
    if isinstance(value, msgspec.Struct):
        return any(_non_finite(getattr(value, f), depth + 1) for f in value.__struct_fields__)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(
            _non_finite(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)
        )
    return False


class _Options(msgspec.Struct, frozen=True):
    queue: str
    retry: int
    timeout: float | None
    at: float | None = None  # absolute, epoch seconds
    delay: float | None = None  # relative, seconds
    jid: str | None = None
    unique: Unique | None = None
    expires_in: float | None = None
    after: tuple[str, ...] = ()  # jids to wait for (configure(after=...), #14)


def _check_after(after: object) -> tuple[str, ...]:
    """``after=``: a non-empty list of jids (a ``JobHandle`` is one) of tracked jobs."""
    if isinstance(after, str) or not isinstance(after, Sequence) or not after:
        raise ConfigError("after= takes a non-empty list of job handles or jids")
    out: list[str] = []
    for item in after:
        if not isinstance(item, str) or not valid_jid(item):
            raise ConfigError(f"after=: {item!r} is not a job handle or jid")
        job = getattr(item, "_job", None)
        if job is not None and not job.track_status:
            raise ConfigError(
                f"after=: job {job.name} keeps no status, so its end cannot be waited for: "
                "register it with keep_result= or track_status=True"
            )
        out.append(str.__str__(item))
    return tuple(dict.fromkeys(out))


def _exceptions(value: Any, what: str) -> tuple[type[BaseException], ...]:
    """An exception class, or a tuple or list of them, as the tuple ``isinstance``
    takes; anything else is a :class:`ConfigError` at registration, not a crash when
    the job first fails."""
    items = (value,) if isinstance(value, type) else value
    try:
        out = tuple(items)
    except TypeError:
        out = None
    if out is None or not all(isinstance(c, type) and issubclass(c, BaseException) for c in out):
        raise ConfigError(
            f"{what} takes exception classes (one, or a tuple or list of them), got {value!r}"
        )
    return out


def _check_limits(limits: object, name: str) -> tuple[Any, ...]:
    """``limits=[...]``: limiters made by ``app.limiter(...)`` (or ``limiter(key=...)``)."""
    if isinstance(limits, str) or not isinstance(limits, Sequence):
        raise ConfigError(f"job {name}: limits must be a list of app.limiter(...) objects")
    for limiter in limits:
        if not isinstance(getattr(limiter, "spec", None), LimitSpec):
            raise ConfigError(
                f"job {name}: limits takes limiters made by app.limiter(...), got {limiter!r}"
            )
    return tuple(limits)


def _check_queue(queue: object, what: str) -> None:
    """Refuse a queue name Redis keys cannot carry (as ``configure(queue=...)`` does)."""
    if not isinstance(queue, str) or not queue or any(c in queue for c in "{}: \t"):
        raise ConfigError(
            f"{what}: invalid queue name {queue!r}: use a non-empty name without "
            "spaces, tabs, colons or braces"
        )


def _timestamp(at: object, what: str) -> float:
    """Epoch seconds of an aware datetime; refuses anything else."""
    if not isinstance(at, dt.datetime):
        raise ConfigError(f"{what} must be a datetime, got {at!r}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ConfigError(
            f"{what} must be an aware datetime (naive times are ambiguous): "
            "use datetime.now(timezone.utc) + ... or attach a tzinfo"
        )
    return at.timestamp()


def _seconds(value: float | dt.timedelta, what: str) -> float:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be seconds or a timedelta, got {value!r}")
    return float(value)


def _expires(value: float | dt.timedelta) -> float:
    seconds = _seconds(value, "expires_in")
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"expires_in must be more than 0 seconds, got {value!r}")
    return seconds


class JobHandle(str, Generic[R]):
    """What ``defer`` returns: the jid (a ``str``: store it, log it, compare it), and a
    way to the job's status, result and cancellation."""

    _job: Job[Any, R]

    def __new__(cls, jid: str, job: Job[Any, R]) -> JobHandle[R]:
        handle = super().__new__(cls, jid)
        handle._job = job
        return handle

    @property
    def jid(self) -> str:
        """The jid as a plain ``str``."""
        return str.__str__(self)

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        # Pickled (or copied) as the plain jid: the job it points to stays here.
        return (str, (str.__str__(self),))

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the job's return value (a blocking wait in Redis, no polling),
        decoded to the function's return annotation. Needs ``keep_result=``.

        Raises :class:`TimeoutError` after ``timeout`` seconds (None: no limit),
        :class:`~asyncjobs.JobFailed` if the job died or was discarded (with its error
        class and message), :class:`~asyncjobs.JobCancelled` if it was cancelled.
        """
        return await self._job.result(self.jid, timeout=timeout)

    async def status(self) -> JobStatus:
        """The job's status now (``app.status(jid)``)."""
        return await self._job.app.status(self.jid)

    async def cancel(self) -> str:
        """Cancel the job (``app.cancel(jid)``)."""
        return await self._job.app.cancel(self.jid)


class Job(Generic[P, R]):
    """A registered job function. Call it to run inline; ``defer`` to enqueue."""

    def __init__(
        self,
        app: Client,
        fn: Callable[P, Awaitable[R]],
        *,
        name: str | None = None,
        queue: str = "default",
        retry: int = 25,
        timeout: float | dt.timedelta | None = None,
        dead: bool = True,
        retry_in: RetryIn | None = None,
        discard_on: type[BaseException] | Sequence[type[BaseException]] = (),
        dead_on: type[BaseException] | Sequence[type[BaseException]] = (),
        on_exhausted: OnExhausted | None = None,
        backtrace: bool | int = 20,
        retry_queue: str | None = None,
        retry_for: float | dt.timedelta | None = None,
        unique: Unique | bool | None = None,
        expires_in: float | dt.timedelta | None = None,
        keep_result: float | dt.timedelta | None = None,
        track_status: bool = False,
        limits: Sequence[Any] = (),
        encrypt: bool = False,
        compress: bool | None = None,
        iterable: Any = None,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"@app.job needs an async def function, got {fn!r}")
        self.app = app
        self.fn = fn
        self.name = name or f"{fn.__module__}.{fn.__qualname__}"
        if name is None and fn.__module__ == "__main__":
            logging.getLogger("asyncjobs.app").warning(
                "job %s is registered from __main__: a worker importing your module by "
                "its real name will not find it; give it a name: @app.job(name=...)",
                fn.__qualname__,
            )
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ConfigError(f"job {self.name}: retry must be a whole number >= 0")
        if not isinstance(backtrace, bool) and (not isinstance(backtrace, int) or backtrace < 0):
            raise ConfigError(
                f"job {self.name}: backtrace must be True, False or a number of lines >= 0, "
                f"got {backtrace!r}"
            )
        # Traceback lines kept with a failure: False none, True all, N the last N.
        self.backtrace = backtrace
        if retry_queue is not None:
            _check_queue(retry_queue, f"job {self.name}: retry_queue")
        # Sidekiq's retry_queue: where retries (and their runs) go.
        self.retry_queue = retry_queue
        # Sidekiq's retry_for: seconds after the first failure during which the job is
        # retried, whatever the count; then it dies.
        self.retry_for = None if retry_for is None else _seconds(retry_for, "retry_for")
        if self.retry_for is not None and not 0 < self.retry_for < float("inf"):
            raise ConfigError(f"job {self.name}: retry_for must be more than 0 seconds")
        self.dead = dead
        self.retry_in = retry_in
        self.discard_on = _exceptions(discard_on, f"job {self.name}: discard_on")
        self.dead_on = _exceptions(dead_on, f"job {self.name}: dead_on")
        self.on_exhausted = on_exhausted
        # Rate limiters (app.limiter(...)) taken before each run (#13); a job without
        # them pays nothing.
        self.limits: tuple[Any, ...] = _check_limits(limits, self.name)
        _check_queue(queue, f"job {self.name}: queue")
        self._opts = _Options(
            queue=queue,
            retry=retry,
            timeout=None if timeout is None else _seconds(timeout, "timeout"),
            unique=resolve(unique, f"job {self.name}"),
            expires_in=None if expires_in is None else _expires(expires_in),
        )
        # Results and status (#14): seconds a tracked job's outcome is kept after it
        # ends; None for jobs that keep nothing (and cost nothing more).
        self.keep_result = None if keep_result is None else _seconds(keep_result, "keep_result")
        if self.keep_result is not None and not 0 < self.keep_result < float("inf"):
            raise ConfigError(f"job {self.name}: keep_result must be more than 0 seconds")
        self.track_status = bool(track_status) or self.keep_result is not None
        # An iterable job's spec (asyncjobs.iteration.IterableSpec, #14), or None.
        self.iterable = iterable
        # Whether a run of this job needs more than the plain path (status, limiters,
        # iteration): the executor reads this one flag for every job.
        self.flow = self.track_status or bool(self.limits) or iterable is not None
        self._result_decoder: msgspec.json.Decoder[Any] | None = None
        self._analyse(fn)
        for limiter in self.limits:
            arg = getattr(limiter, "key_arg", None)
            if arg is not None and arg not in inspect.signature(fn).parameters:
                raise ConfigError(f"job {self.name}: limits: no argument named {arg!r}")
        self._check_unique(self._opts.unique)
        self._packing(encrypt, compress)
        functools.update_wrapper(self, fn)

    def _packing(self, encrypt: object, compress: object) -> None:
        """``encrypt`` and ``compress`` (#15): ``_packer`` is None for a job that stores
        its arguments as they are, the one check its defer makes."""
        if not isinstance(encrypt, bool):
            raise ConfigError(f"job {self.name}: encrypt must be True or False, got {encrypt!r}")
        if compress is not None and not isinstance(compress, bool):
            raise ConfigError(
                f"job {self.name}: compress must be True, False or None (the app's "
                f"compress_over), got {compress!r}"
            )
        # Sealed arguments: AES-256-GCM under the app's newest key. A missing key is
        # refused at the first defer, not here: the CLI and dashboard import the app's
        # jobs without needing its keys.
        self.encrypt = encrypt
        packer = self.app.packer
        # Arguments over this many bytes are compressed; None: never.
        self.compress_over: int | None = (
            None
            if compress is False
            else packer.compress_over
            if packer.compress_over is not None or compress is None
            else COMPRESS_OVER
        )
        self._packer = packer if encrypt or self.compress_over is not None else None

    def _check_unique(self, spec: Unique | None) -> Unique | None:
        """Refuse a ``Unique(args=...)`` naming an argument the function does not take."""
        if spec is not None and spec.args is not None:
            unknown = [a for a in spec.args if a not in self._sig.parameters]
            if unknown:
                raise ConfigError(
                    f"job {self.name}: Unique(args=...) names {', '.join(map(repr, unknown))}, "
                    f"not an argument of the function (it takes {', '.join(self._sig.parameters)})"
                )
        return spec

    # -- signature --------------------------------------------------------------

    def _analyse(self, fn: Callable[..., Any]) -> None:
        sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:
            raise ConfigError(f"job {self.name}: cannot resolve type hints: {exc}") from exc
        fields: list[tuple[str, Any, Any]] = []
        self._posnames: tuple[str, ...] = ()
        self._kwnames: tuple[str, ...] = ()
        self._varpos: str | None = None
        self._varkw: str | None = None
        pos: list[str] = []
        kw: list[str] = []
        # Struct attributes are p0, p1, ... with the parameter names as their JSON names:
        # any Python identifier (``__x``, ``größe``) is a valid parameter, not every one
        # is a valid msgspec attribute.
        self._attr: dict[str, str] = {}
        for i, p in enumerate(sig.parameters.values()):
            t = hints.get(p.name, Any)
            attr = self._attr[p.name] = f"p{i}"
            if p.kind is p.VAR_POSITIONAL:
                self._varpos = p.name
                fields.append((attr, tuple[t, ...], msgspec.field(default=(), name=p.name)))  # type: ignore[valid-type]
                continue
            if p.kind is p.VAR_KEYWORD:
                self._varkw = p.name
                fields.append(
                    (attr, dict[str, t], msgspec.field(default_factory=dict, name=p.name))  # type: ignore[valid-type]
                )
                continue
            if p.kind is p.KEYWORD_ONLY:
                kw.append(p.name)
            else:
                pos.append(p.name)
            if p.default is p.empty:
                fields.append((attr, t, msgspec.field(name=p.name)))
            elif isinstance(p.default, list | dict | set | bytearray) and p.default:
                factory = functools.partial(copy.deepcopy, p.default)
                fields.append((attr, t, msgspec.field(default_factory=factory, name=p.name)))
            else:
                fields.append((attr, t, msgspec.field(default=p.default, name=p.name)))
        self._posnames = tuple(pos)
        self._kwnames = tuple(kw)
        self._simple = not kw and self._varpos is None and self._varkw is None
        self._sig = sig
        try:
            self._args_type: type[msgspec.Struct] = msgspec.defstruct(
                "Args",
                fields,
                kw_only=True,
                omit_defaults=True,
                forbid_unknown_fields=True,
            )
            self._args_decoder = msgspec.json.Decoder(self._args_type)
            # Types msgspec cannot encode fail here, at registration, not at the first defer.
            msgspec.json.Decoder(self._args_type)
            msgspec.json.schema(self._args_type)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"job {self.name}: unsupported argument type: {exc}") from exc

    def _bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if self._simple and len(args) <= len(self._posnames):
            if not kwargs:
                return dict(zip(self._posnames, args, strict=False))
            d = dict(zip(self._posnames, args, strict=False))
            for k, v in kwargs.items():
                if k in d or k not in self._posnames:
                    break
                d[k] = v
            else:
                return d
        try:
            ba = self._sig.bind(*args, **kwargs)
        except TypeError as exc:
            named = re.search(r"'([^']+)'", str(exc))  # missing / unexpected / multiple values
            arg = named.group(1) if named else None
            raise ArgumentError(self.name, arg, f"job {self.name}: {exc}") from None
        arguments = dict(ba.arguments)
        return arguments

    def encode_args(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
        """Validate arguments against the signature and type hints; return their JSON.

        Validation is the worker's own decode of the encoded arguments, so what is
        accepted here is exactly what the worker can run (a float ``inf``, which JSON
        cannot hold, is refused here rather than dead-lettered there).
        """
        bound = self._bind(args, kwargs)
        try:
            raw = ENCODER.encode(bound)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:  # lone surrogates too
            raise self._encode_error(bound, exc) from None
        if b"null" in raw:  # JSON writes inf and nan as null: refuse them, never alter
            for arg, value in bound.items():
                if _non_finite(value):
                    raise ArgumentError(
                        self.name,
                        arg,
                        f"job {self.name}: argument {arg!r} holds a float inf or nan, "
                        "which JSON cannot store",
                    )
        try:
            self._args_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise self._argument_error(str(exc)) from None
        return raw

    def _encode_error(self, bound: dict[str, Any], exc: Exception) -> ArgumentError:
        """Name the argument that cannot be encoded (found by encoding them one by one)."""
        for arg, value in bound.items():
            try:
                ENCODER.encode(value)
            except (TypeError, ValueError, msgspec.EncodeError) as one:
                return ArgumentError(
                    self.name, arg, f"job {self.name}: argument {arg!r} cannot be encoded: {one}"
                )
        return ArgumentError(
            self.name, None, f"job {self.name}: arguments cannot be encoded: {exc}"
        )

    def _argument_error(self, message: str) -> ArgumentError:
        m = _MISSING.search(message)
        if m:
            arg = m.group(1)
            return ArgumentError(self.name, arg, f"job {self.name}: missing argument {arg!r}")
        m = _PATH.search(message)
        if m and m.group(1):
            arg = m.group(1)
            what = message[: m.start()]
            if "got `null`" in what:
                what += " (None, or a float inf/nan, which JSON cannot hold)"
            where = f" (at {m.group(2)})" if m.group(2) else ""
            return ArgumentError(
                self.name, arg, f"job {self.name}: argument {arg!r}: {what}{where}"
            )
        return ArgumentError(self.name, None, f"job {self.name}: {message}")

    def decode_call(self, raw: bytes | msgspec.Raw) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode stored arguments into ``(args, kwargs)`` for the function.

        Raises :class:`msgspec.ValidationError` (or ``DecodeError``) when they no longer
        fit the function.
        """
        obj = self._args_decoder.decode(raw)
        if self._simple:
            return msgspec.structs.astuple(obj), {}
        attr = self._attr
        args: list[Any] = [getattr(obj, attr[n]) for n in self._posnames]
        if self._varpos is not None:
            args.extend(getattr(obj, attr[self._varpos]))
        kwargs = {n: getattr(obj, attr[n]) for n in self._kwnames}
        if self._varkw is not None:
            kwargs.update(getattr(obj, attr[self._varkw]))
        return tuple(args), kwargs

    # -- calling and deferring ---------------------------------------------------

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the job inline, in the caller's task, without Redis."""
        return await self.fn(*args, **kwargs)

    @property
    def queue(self) -> str:
        """The queue ``defer`` uses unless ``configure(queue=...)`` says otherwise."""
        return self._opts.queue

    @property
    def retry(self) -> int:
        """How many retries a failing run gets (25 by default, like Sidekiq)."""
        return self._opts.retry

    @property
    def timeout(self) -> float | None:
        """Seconds a run may take before it is cancelled as a failure, or None."""
        return self._opts.timeout

    def configure(
        self,
        *,
        queue: str | None = None,
        delay: float | dt.timedelta | None = None,
        at: dt.datetime | None = None,
        retry: int | None = None,
        timeout: float | dt.timedelta | None = None,
        jid: str | None = None,
        unique: Unique | bool | None = None,
        expires_in: float | dt.timedelta | None = None,
        after: Sequence[str] | None = None,
    ) -> Deferrer[P, R]:
        """Per-call overrides: ``await job.configure(delay=60).defer(...)``.

        ``after=[handle, jid, ...]``: enqueue the job only once all those jobs (tracked:
        ``keep_result`` or ``track_status``) have succeeded; never if one fails for
        good (see docs/concepts/batches.md, Workflows)."""
        if delay is not None and at is not None:
            raise ConfigError("give either delay= or at=, not both")
        changes: dict[str, Any] = {}
        if queue is not None:
            if not queue or any(c in queue for c in "{}: \t"):
                raise ConfigError(f"invalid queue name {queue!r}")
            changes["queue"] = queue
        if retry is not None:
            if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
                raise ConfigError(f"retry must be a whole number >= 0, got {retry!r}")
            changes["retry"] = retry
        if timeout is not None:
            changes["timeout"] = _seconds(timeout, "timeout")
        if delay is not None:
            changes["delay"] = _seconds(delay, "delay")
        if at is not None:
            changes["at"] = _timestamp(at, "at=")
        if jid is not None:
            if not valid_jid(jid):
                raise ConfigError(f"invalid jid {jid!r}: use 1-64 of A-Z a-z 0-9 _ . : -")
            changes["jid"] = jid
        if unique is not None:
            changes["unique"] = self._check_unique(resolve(unique, f"job {self.name}"))
        if expires_in is not None:
            changes["expires_in"] = _expires(expires_in)
        if after is not None:
            changes["after"] = _check_after(after)
            if delay is not None or at is not None:
                raise ConfigError("after= cannot be combined with delay= or at=")
        return Deferrer(self, msgspec.structs.replace(self._opts, **changes))

    async def defer(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R] | None:
        """Enqueue one run of this job; returns its jid (a :class:`JobHandle`) after one
        round trip (two for a job with ``keep_result`` or ``track_status``).

        ``None`` when a client middleware stopped the job (nothing was enqueued).
        """
        return await self._handle(self._build(self._opts, args, kwargs, time.time()))

    async def _handle(self, payload: Payload) -> JobHandle[R] | None:
        jid = await self.app._enqueue(payload)
        if jid is None:
            return None
        if self.track_status and jid == payload.jid:
            await self.app._track(payload, self.keep_result or 0.0)
        return JobHandle(jid, self)

    async def result(self, jid: str, *, timeout: float | None = None) -> R:
        """Wait for the result of the run ``jid`` of this job: as ``handle.result()``."""
        if self.keep_result is None:
            raise ConfigError(
                f"job {self.name} keeps no result: register it with @app.job(keep_result=seconds)"
            )
        out = await self.app._wait_outcome(jid, timeout)
        raise_for(jid, out)
        decoder = self._result_decoder
        if decoder is None:
            try:
                hint = typing.get_type_hints(self.fn).get("return", Any)
            except Exception:
                hint = Any
            decoder = self._result_decoder = msgspec.json.Decoder(hint)
        return typing.cast(R, decoder.decode(out.value))

    async def defer_many(
        self,
        items: Iterable[tuple[Any, ...] | Mapping[str, Any]],
        *,
        at: Sequence[dt.datetime | None] | None = None,
    ) -> list[str | None]:
        """Enqueue many runs in one round trip (Sidekiq's ``push_bulk``).

        Each item is a tuple of positional arguments or a mapping of keyword arguments.
        ``at`` gives each job its due time (an aware datetime, or None for now), as
        ``push_bulk``'s ``at:`` array: one per item, in the same order. All are
        validated before anything is sent: one bad item, or an ``at`` list of another
        length, enqueues nothing. Each job goes through client middleware on its own;
        the jid of one a middleware stopped is ``None``.
        """
        return await Deferrer(self, self._opts).defer_many(items, at=at)

    def _build(
        self,
        opts: _Options,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        now: float,
    ) -> Payload:
        raw = self.encode_args(args, kwargs)
        at = opts.at
        if opts.delay is not None:
            at = now + opts.delay
        if at is not None and at <= now:
            at = None
        unique = opts.unique
        jid = opts.jid or new_jid()
        stored = raw
        if self._packer is not None:  # encrypted or compressed arguments (_seal.py)
            stored = self._packer.pack(
                raw, self.name, jid, seal=self.encrypt, compress_over=self.compress_over
            )
        scope = scope_var.get()  # an open ``async with app.batch()``: the job joins it
        return Payload(
            jid=jid,
            job=self.name,
            queue=opts.queue,
            args=msgspec.Raw(stored),
            created_at=now,
            enqueued_at=None if at is not None else now,
            at=at,
            retry=opts.retry,
            timeout=opts.timeout,
            dead=self.dead,
            unique=None if unique is None else lock_for(self.name, opts.queue, raw, unique),
            # Counted from the due time: a job scheduled for later is not stale sooner.
            expires_at=None if opts.expires_in is None else (at or now) + opts.expires_in,
            bid=None if scope is None else scope.bid,
        )

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """This job with these arguments, not deferred: a batch callback
        (``on_success=job.s(...)``: the batch id comes first, before these) or a step
        of ``app.chain(...)`` (the step before's result first, when it keeps one). Not
        checked against the signature until deferred, as what comes first is not known
        here."""
        return Signature(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<Job {self.name} queue={self.queue!r}>"


class Deferrer(Generic[P, R]):
    """A job with per-call options; made by :meth:`Job.configure`."""

    __slots__ = ("_job", "_opts")

    def __init__(self, job: Job[P, R], opts: _Options) -> None:
        self._job = job
        self._opts = opts

    async def defer(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R] | None:
        """Enqueue one run with these options; returns its jid (``None`` when a client
        middleware stopped it)."""
        job = self._job
        payload = job._build(self._opts, args, kwargs, time.time())
        if self._opts.after:  # a gate waits for them, then pushes the job (#14)
            return JobHandle(await job.app._defer_after(payload, self._opts.after), job)
        return await job._handle(payload)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """This job with these options and arguments, not deferred (``Job.s``)."""
        return Signature(self._job, args, kwargs, self._opts)

    async def defer_many(
        self,
        items: Iterable[tuple[Any, ...] | Mapping[str, Any]],
        *,
        at: Sequence[dt.datetime | None] | None = None,
    ) -> list[str | None]:
        """Enqueue many runs with these options in one round trip; returns their jids.
        ``at``: a due time per item, as :meth:`Job.defer_many`."""
        job = self._job
        payloads = self._payloads(items, at)
        jids = await job.app._enqueue_many(payloads)
        if job.track_status:
            sent = [p for p, j in zip(payloads, jids, strict=True) if j == p.jid]
            await job.app._track_many(sent)
        return jids

    def _payloads(
        self,
        items: Iterable[tuple[Any, ...] | Mapping[str, Any]],
        at: Sequence[dt.datetime | None] | None,
    ) -> list[Payload]:
        """The payloads of ``defer_many``, all validated before any is sent (the
        transactional outbox builds them too)."""
        job = self._job
        now = time.time()
        if self._opts.jid is not None:
            raise EnqueueError("defer_many cannot use a fixed jid= for many jobs")
        if self._opts.after:
            raise EnqueueError("defer_many cannot wait for jobs (after=): defer each job")
        due: list[_Options] | None = None
        if at is not None:
            items = list(items)
            due = self._due(items, at)
        payloads: list[Payload] = []
        for i, item in enumerate(items):
            o = self._opts if due is None else due[i]
            if isinstance(item, Mapping):
                payloads.append(job._build(o, (), item, now))
            elif isinstance(item, tuple | list):
                payloads.append(job._build(o, tuple(item), {}, now))
            else:
                raise ArgumentError(
                    job.name,
                    None,
                    f"job {job.name}: defer_many items must be tuples of arguments or "
                    f"mappings of keyword arguments, got {type(item).__name__}",
                )
        return payloads

    def _due(self, items: list[Any], at: Sequence[dt.datetime | None]) -> list[_Options]:
        """Options per item with its due time from ``at`` (checked before any is built)."""
        if isinstance(at, dt.datetime | str | bytes) or not isinstance(at, Sequence):
            raise ConfigError(
                "defer_many(at=...) takes a list of due times, one per item; "
                "for one time for all, use configure(at=...).defer_many(...)"
            )
        if len(at) != len(items):
            raise ConfigError(
                f"defer_many: {len(at)} due times in at= for {len(items)} items: give one "
                "per item (None to run it now); nothing was enqueued"
            )
        if self._opts.at is not None or self._opts.delay is not None:
            raise ConfigError("give due times either in configure(delay=/at=) or in at=, not both")
        return [
            self._opts
            if when is None
            else msgspec.structs.replace(self._opts, at=_timestamp(when, f"at[{i}]"))
            for i, when in enumerate(at)
        ]
