"""Iterable jobs (#14): a job written over a cursor, for work too long for one run.

An iterable job is an ``async def`` generator registered with ``@app.iterable_job``.
Its first parameter receives an :class:`Iteration` (the cursor to resume after, the
counters); the arguments after it are the job's. Each ``yield cursor`` marks one item
done and says where a later run resumes: after the item whose cursor it is.

```python
@app.iterable_job(save_every=100, save_interval=5.0)
async def backfill(it: Iteration[int], stop: int) -> AsyncIterator[int]:
    async for n, cursor in from_range(0, stop, cursor=it.cursor):
        await handle(n)
        yield cursor
```

The worker saves the cursor every ``save_every`` items or ``save_interval`` seconds (one
Redis command); when the worker quiets or stops, the job stops at the next ``yield``,
saves its cursor and goes back to the head of its queue, without counting a retry;
after a crash it resumes from the last saved cursor (items since are done again: at
least once per item). This module is pure: the worker's half, which reads and writes
the state in Redis, is ``asyncjobs._worker.iteration``.

Sources: :func:`from_range`, :func:`from_ids`, and :func:`sql_keyset` (SQLAlchemy's
async engine; the ``sql`` extra). A source is any async iterator of ``(item, cursor)``
pairs that starts after the cursor it is given.
"""

from __future__ import annotations

import inspect
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from ._errors import ConfigError
from ._job import current_payload

if TYPE_CHECKING:
    from ._iteration_sql import Row

# The public names; IterableSpec, drive and job_function are the worker's and the app's.
__all__ = ["Interrupted", "Iteration", "from_ids", "from_range", "sql_keyset"]

C = TypeVar("C")
T = TypeVar("T")

# Sidekiq keeps an iteration's state 30 days after its last save.
DEFAULT_STATE_TTL = 30 * 86400.0


class Interrupted(BaseException):
    """Raised by the worker's iteration runner when a job stopped at an item boundary,
    its cursor saved: its worker is quieting or stopping (the executor puts it back at
    the head of its queue), or, with ``later``, its run reached ``max_runtime`` (it goes
    to the back of its queue, through the schedule, so that other jobs get a turn).
    Not a failure, not a retry. A BaseException, so that a job's ``except Exception``
    does not swallow it."""

    def __init__(self, *, later: bool = False) -> None:
        super().__init__("max_runtime" if later else "stopping")
        self.later = later


class State(msgspec.Struct, frozen=True, kw_only=True):
    """An iteration's saved state, as read from ``{ns}:iter:<jid>`` (all optional:
    a first run has none)."""

    cursor: msgspec.Raw | None = None
    items: int = 0
    runs: int = 0
    started_at: float | None = None
    saved_at: float | None = None


class Iteration(Generic[C]):
    """What a running iterable job knows of its iteration: its first argument.

    ``cursor`` is where this run starts (the cursor of the last item done, as saved;
    None on a first run), and follows each ``yield``. ``items`` counts the items done
    over every run (as saved, plus this run's); ``runs`` is 1 on the first run.
    """

    __slots__ = ("_stopping", "cursor", "items", "jid", "resumed", "runs", "started_at")

    def __init__(
        self,
        jid: str,
        cursor: C | None = None,
        *,
        items: int = 0,
        runs: int = 1,
        started_at: float | None = None,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        self.jid = jid
        self.cursor: C | None = cursor
        self.items = items
        self.runs = runs
        self.resumed = runs > 1
        self.started_at = time.time() if started_at is None else started_at
        self._stopping = stopping

    @property
    def stopping(self) -> bool:
        """Whether the job stops at its next ``yield`` (the worker is quieting or
        stopping, or the run reached ``max_runtime``): a long item may check this to
        end early (and yield)."""
        return self._stopping is not None and self._stopping()

    def __repr__(self) -> str:
        return f"<Iteration jid={self.jid} cursor={self.cursor!r} items={self.items}>"


class IterableSpec:
    """An iterable job's generator function and iteration options (pure)."""

    __slots__ = (
        "cursor_type",
        "decoder",
        "fn",
        "max_runtime",
        "save_every",
        "save_interval",
        "state_ttl",
    )

    def __init__(
        self,
        fn: Callable[..., AsyncIterator[Any]],
        *,
        save_every: int | None,
        save_interval: float | None,
        state_ttl: float,
        name: str,
        max_runtime: float | None = None,
    ) -> None:
        if not inspect.isasyncgenfunction(fn):
            raise ConfigError(
                f"@app.iterable_job needs an async generator function (async def with "
                f"yield cursor), got {fn!r}"
            )
        if save_every is not None and (
            isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1
        ):
            raise ConfigError(
                f"iterable job {name}: save_every must be a whole number >= 1 or None, "
                f"got {save_every!r}"
            )
        if save_interval is not None and (
            isinstance(save_interval, bool)
            or not isinstance(save_interval, int | float)
            or not 0 < save_interval < float("inf")
        ):
            raise ConfigError(
                f"iterable job {name}: save_interval must be more than 0 seconds or None, "
                f"got {save_interval!r}"
            )
        if save_every is None and save_interval is None:
            raise ConfigError(
                f"iterable job {name}: give save_every or save_interval (or both): "
                "without either the cursor is never saved"
            )
        if (
            isinstance(state_ttl, bool)
            or not isinstance(state_ttl, int | float)
            or not 0 < state_ttl < float("inf")
        ):
            raise ConfigError(
                f"iterable job {name}: state_ttl must be more than 0 seconds, got {state_ttl!r}"
            )
        if max_runtime is not None and (
            isinstance(max_runtime, bool)
            or not isinstance(max_runtime, int | float)
            or not 0 < max_runtime < float("inf")
        ):
            raise ConfigError(
                f"iterable job {name}: max_runtime must be more than 0 seconds or None, "
                f"got {max_runtime!r}"
            )
        self.fn = fn
        self.max_runtime = None if max_runtime is None else float(max_runtime)
        self.save_every = save_every
        self.save_interval = None if save_interval is None else float(save_interval)
        self.state_ttl = float(state_ttl)
        self.cursor_type = _cursor_type(fn, name)
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(self.cursor_type)

    def decode_cursor(self, raw: bytes | msgspec.Raw) -> Any:
        """A saved cursor, as the type of ``Iteration[...]`` in the signature."""
        return self.decoder.decode(raw)


def _cursor_type(fn: Callable[..., Any], name: str) -> Any:
    """The cursor type ``C`` of the first parameter's ``Iteration[C]`` (Any if bare)."""
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise ConfigError(
            f"iterable job {name}: the first parameter must take the Iteration "
            "(async def job(it: Iteration[int], ...))"
        )
    first = params[0].name
    annotation = getattr(fn, "__annotations__", {}).get(first, Any)

    # Only this parameter's hint is resolved: the return annotation (AsyncIterator[...])
    # is often imported under TYPE_CHECKING only, and the job's own arguments are the
    # Job's to check (typing.get_type_hints takes the globals of __wrapped__).
    def probe() -> None: ...

    probe.__annotations__ = {first: annotation}
    probe.__wrapped__ = fn  # type: ignore[attr-defined]
    try:
        hint = typing.get_type_hints(probe).get(first, Any)
    except Exception as exc:
        raise ConfigError(
            f"iterable job {name}: cannot resolve the type of {first!r}: {exc}"
        ) from exc
    if typing.get_origin(hint) is Iteration:
        args = typing.get_args(hint)
        if args:
            try:
                msgspec.json.Decoder(args[0])
                msgspec.json.schema(args[0])  # what msgspec cannot encode fails here
            except (TypeError, ValueError) as exc:
                why = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
                raise ConfigError(
                    f"iterable job {name}: the cursor type {args[0]!r} cannot be stored as "
                    f"JSON: {why}"
                ) from exc
            return args[0]
    return Any


def job_function(spec: IterableSpec) -> Callable[..., Awaitable[None]]:
    """The ``async def`` a :class:`~asyncjobs.Job` registers for an iterable job: its
    signature is the generator's without the Iteration, so ``defer`` checks the
    job's own arguments. Called as is (inline, or a test mode without Redis) it runs
    every item from the start, saving nothing; the worker drives the generator
    itself (``asyncjobs._worker.iteration``)."""
    fn = spec.fn

    async def run(*args: Any, **kwargs: Any) -> None:
        it: Iteration[Any] = Iteration(_jid())
        await drive(spec, it, args, kwargs)

    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[1:]
    first = next(iter(sig.parameters))
    run.__module__ = fn.__module__
    run.__name__ = fn.__name__
    run.__qualname__ = fn.__qualname__
    run.__doc__ = fn.__doc__
    # Hints resolve in the generator's module (typing.get_type_hints follows
    # __wrapped__ for the globals); the Iteration and the return are not arguments.
    run.__wrapped__ = fn  # type: ignore[attr-defined]
    run.__annotations__ = {
        k: v for k, v in getattr(fn, "__annotations__", {}).items() if k not in (first, "return")
    }
    run.__signature__ = sig.replace(parameters=params, return_annotation=None)  # type: ignore[attr-defined]
    return run


def _jid() -> str:
    payload = current_payload()
    return payload.jid if payload is not None else ""


async def drive(
    spec: IterableSpec,
    it: Iteration[Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    *,
    save: Callable[[], Awaitable[None]] | None = None,
    stopping: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Run the job's generator: each yielded cursor is one item done. With ``save``,
    it is called every ``save_every`` items or ``save_interval`` seconds (and after
    the last item before a stop); ``stopping()`` is asked at each item boundary.
    Returns True once the generator ended, False if it stopped early (interrupted).
    ``it.cursor`` and ``it.items`` follow the items, so that the caller can save them
    after a failure."""
    gen = spec.fn(it, *args, **kwargs)
    every = spec.save_every
    interval = spec.save_interval
    pending = 0
    last = clock()
    try:
        async for cursor in gen:
            it.cursor = cursor
            it.items += 1
            pending += 1
            if stopping is not None and stopping():
                if save is not None:
                    await save()
                return False
            if save is not None and (
                (every is not None and pending >= every)
                or (interval is not None and clock() - last >= interval)
            ):
                await save()
                pending = 0
                last = clock()
    finally:
        # A stop, a failure or a cancellation closes the generator at its yield (its
        # finally blocks run: Sidekiq's on_stop); an ended one is closed already.
        await gen.aclose()
    return True


# -- sources ------------------------------------------------------------------------


async def from_range(
    start: int, stop: int, step: int = 1, *, cursor: int | None = None
) -> AsyncIterator[tuple[int, int]]:
    """The numbers of ``range(start, stop, step)`` as ``(n, n)``: each number is its
    own cursor; with ``cursor``, it starts after that number."""
    if step == 0:
        raise ValueError("from_range: step must not be zero")
    first = start if cursor is None else cursor + step
    for n in range(first, stop, step):
        yield n, n


async def from_ids(ids: Sequence[T], *, cursor: int | None = None) -> AsyncIterator[tuple[T, int]]:
    """The items of a list (ids, names: anything), with their index as the cursor;
    with ``cursor``, it starts after that index. The list must be the same on every
    run (pass it as the job's argument: it travels with the job)."""
    first = 0 if cursor is None else cursor + 1
    for i in range(first, len(ids)):
        yield ids[i], i


def sql_keyset(
    engine: Any,
    table: Any,
    key: str,
    *,
    cursor: Any = None,
    batch: int = 500,
    where: Any = None,
    columns: Sequence[str] | None = None,
) -> AsyncIterator[tuple[Row, Any]]:
    """The rows of a SQL table in the order of a unique column (keyset pagination, no
    OFFSET), with that column's value as the cursor; with ``cursor``, it starts after
    that value. Reads ``batch`` rows per query, each in its own short transaction.

    ``engine``: SQLAlchemy's ``AsyncEngine``; ``table``: a ``Table`` or a table name
    (reflected once); ``key``: the unique, ordered column (a primary key, say);
    ``where``: an extra SQLAlchemy condition; ``columns``: the columns to read (all by
    default). Needs the ``sql`` extra: ``pip install 'asyncjobs-redis[sql]'``.
    """
    try:
        from ._iteration_sql import keyset
    except ImportError as exc:
        raise ConfigError(
            f"sql_keyset needs SQLAlchemy's asyncio support ({exc}): "
            "pip install 'asyncjobs-redis[sql]'"
        ) from None
    return keyset(engine, table, key, cursor=cursor, batch=batch, where=where, columns=columns)
