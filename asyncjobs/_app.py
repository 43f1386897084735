"""``App``: settings, the job registry, the client side (enqueue), middleware, hooks."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

import anyio
import msgspec

from ._batch import BatchStatus, scope_var
from ._batching import (
    Batch,
    BatchStore,
    Callback,
    chain,
    defer_after,
    read_status,
    register_steps,
)
from ._conn import FastRedis
from ._errors import ConfigError, EnqueueError, UniqueConflict
from ._job import Job, OnExhausted, RetryIn
from ._keys import shard_of
from ._limits import LimitSpec
from ._middleware import run_client
from ._payload import DECODE_ERRORS, DECODER, ENCODER, Payload
from ._periodic import PeriodicEntry
from ._redis import Client, mask_url
from ._registry import Registry
from ._seal import KEYS_ENV, Packer
from ._sentinel import sentinel_url
from ._settings import CapsuleSpec
from ._status import (
    DEFAULT_KEEP,
    PENDING_TTL,
    JobStatus,
    Outcome,
    State,
    combine,
    decode_outcome,
    raise_for,
)
from ._store import Store, shard_stores
from ._unique import Unique
from ._worker.limits import UNLIMITED, Limiter, LimitStore
from .iteration import DEFAULT_STATE_TTL, IterableSpec, Iteration, job_function

if TYPE_CHECKING:
    from ._worker.launcher import Worker

__all__ = ["App", "TestMode"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "redis://localhost:6379/0"

uniquelog = logging.getLogger("asyncjobs.unique")


def _initial(payload: Payload) -> State:
    """A tracked job's state as it is deferred: queued, or scheduled."""
    return State(
        state="queued" if payload.at is None else "scheduled",
        at=payload.created_at,
        queue=payload.queue,
        next_at=payload.at,
    )


class TestMode:
    """What a test mode (``asyncjobs.testing``) does with jobs that went through the
    client chain, instead of pushing them to Redis; where it keeps batches and the
    statuses and outcomes of tracked jobs. Reached only while a mode is active for the
    app."""

    async def accept(self, payloads: Sequence[Payload]) -> list[str]:
        raise NotImplementedError

    def batches(self) -> BatchStore:
        """The mode's in-memory stand-in for the store's batch operations."""
        raise NotImplementedError

    def outcome(self, jid: str) -> Outcome:
        """A tracked job's outcome; TimeoutError if it has none (yet)."""
        raise NotImplementedError

    def track(self, payloads: Sequence[Payload]) -> None:
        """Tracked jobs were deferred: their first state (queued or scheduled), unless
        they have one already, as ``App._track``."""
        raise NotImplementedError

    def status(self, jid: str) -> JobStatus:
        """What ``app.status(jid)`` says, from what the mode keeps."""
        raise NotImplementedError

    async def cancel(self, jid: str) -> str:
        """What ``app.cancel(jid)`` does to the mode's jobs: ``"removed"``,
        ``"cancelling"`` or ``"not found"``, as with Redis."""
        raise NotImplementedError


# The test modes active in this context, by app. A context variable, not an attribute
# of the App, so a mode covers the code of its ``with`` block (and tasks started from
# it), never a defer from an unrelated task that runs meanwhile.
_test_modes: contextvars.ContextVar[Mapping[int, TestMode] | None] = contextvars.ContextVar(
    "asyncjobs.test_modes", default=None
)


def resolve_url(url: str | None) -> str:
    """The Redis URL: argument, else ``ASYNCJOBS_REDIS_URL``, else ``REDIS_URL``."""
    return (
        url or os.environ.get("ASYNCJOBS_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_URL
    )


def resolve_shards(shards: int | None) -> int:
    """The number of shards: argument, else ``ASYNCJOBS_SHARDS``, else 1."""
    if shards is None:
        text = os.environ.get("ASYNCJOBS_SHARDS", "").strip()
        if not text:
            return 1
        if not text.isdigit():
            raise ConfigError(f"ASYNCJOBS_SHARDS must be a whole number from 1 to 64, got {text!r}")
        shards = int(text)
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 64:
        raise ConfigError(f"shards must be a whole number from 1 to 64, got {shards!r}")
    return shards


class App(Registry):
    """An asyncjobs application: where jobs are registered and enqueued.

    Args:
        redis_url: Redis URL; else ``ASYNCJOBS_REDIS_URL``, else ``REDIS_URL``, else
            ``redis://localhost:6379/0``.
        namespace: prefix (and Redis Cluster hash tag) of every key.
        cluster: force (or forbid) the Redis Cluster client; ``None`` asks the server.
        cluster_nodes: more seed nodes of a Redis Cluster (``"host:port"`` or
            ``(host, port)``), tried in turn when the URL's node does not answer; a URL
            may name several too: ``redis://10.0.0.1:7000,10.0.0.2:7000``.
        shards: spread the jobs over this many copies of the key layout, each under a
            hash tag of its own, so that on a Redis Cluster each shard has a master of
            its own (see the sharding guide); else ``ASYNCJOBS_SHARDS``, else 1 (one
            hash tag).
        max_payload_bytes: payloads larger than this are refused at ``defer``.
        dead_max_jobs: the dead set keeps at most this many entries.
        dead_timeout: entries older than this leave the dead set (seconds or timedelta).
        default_job_options: options every job registered afterwards starts from
            (``{"retry": 5, "backtrace": False}``, say); ``@app.job(...)`` overrides them.
            Also ``app.default_job_options``, Sidekiq's ``default_job_options``.
        encryption_keys: AES-256 keys by version, for jobs with ``encrypt=True``
            (``{2: key2, 1: key1}``: 32 bytes or their base64); the newest version
            seals, every one opens. Else ``ASYNCJOBS_ENCRYPTION_KEYS``
            (``"2:<base64>,1:<base64>"``), else none.
        compress_over: arguments larger than this many bytes (as JSON) are stored
            compressed; ``None`` (the default): never. ``@app.job(compress=...)``
            overrides it per job.
        compression: ``"zlib"`` (the default: the standard library, so every worker
            reads it) or ``"zstd"`` (ten times faster to compress, as small; needs the
            ``zstd`` extra on every client and worker).
        metrics: workers of this app count, per job and minute, runs, failures,
            execution time and dispatch latency (the dashboard's Metrics page,
            Prometheus, ``asyncjobs top``); written with each acknowledgement, no
            extra round trip. Off by default.
        sentinel: Redis Sentinel addresses (``[("10.0.0.1", 26379), "10.0.0.2:26379"]``)
            to find the master through, instead of a ``redis+sentinel://`` URL; then
            ``redis_url``, if given, brings only the master's credentials and database
            (``"redis://:secret@/0"``).
        sentinel_master: the master's name the Sentinels monitor (with ``sentinel``).
        sentinel_password: the Sentinels' own password, if they require one.
        min_replicas: durable mode: ``defer`` returns once the job has reached this
            many replicas (``WAIT``), so a failover cannot lose it; else it raises
            :class:`~asyncjobs.NotReplicated`. 0 (the default): off.
        replica_timeout: how long ``defer`` waits for those replicas (seconds).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        namespace: str = "asyncjobs",
        cluster: bool | None = None,
        cluster_nodes: Sequence[str | tuple[str, int]] = (),
        shards: int | None = None,
        max_payload_bytes: int = 1 << 20,
        dead_max_jobs: int = 10_000,
        dead_timeout: float | dt.timedelta = dt.timedelta(days=180),
        default_job_options: Mapping[str, Any] | None = None,
        encryption_keys: Mapping[int, bytes | str] | None = None,
        compress_over: int | None = None,
        compression: str = "zlib",
        metrics: bool = False,
        sentinel: Sequence[str | tuple[str, int]] | None = None,
        sentinel_master: str | None = None,
        sentinel_password: str | None = None,
        min_replicas: int = 0,
        replica_timeout: float | dt.timedelta = 1.0,
    ) -> None:
        if encryption_keys is not None:
            packer = Packer.configure(encryption_keys, compress_over, compression)
        else:
            env = os.environ.get(KEYS_ENV) or None
            packer = Packer.configure(env, compress_over, compression, source=KEYS_ENV)
        super().__init__(
            namespace=namespace,
            max_payload_bytes=max_payload_bytes,
            dead_max_jobs=dead_max_jobs,
            dead_timeout=dead_timeout,
            default_job_options=default_job_options,
            packer=packer,
            metrics=metrics,
        )
        if sentinel is not None:
            self.redis_url = sentinel_url(
                sentinel,
                sentinel_master,
                redis_url=redis_url,
                sentinel_password=sentinel_password,
            )
        elif sentinel_master is not None or sentinel_password is not None:
            raise ConfigError(
                "sentinel_master= and sentinel_password= go with sentinel=, the Sentinels' "
                "addresses"
            )
        else:
            self.redis_url = resolve_url(redis_url)
        self.cluster = cluster
        self.cluster_nodes = list(cluster_nodes)
        self.shards = resolve_shards(shards)
        # The store of each shard (sharing one client), shard 0 first; [store] unsharded.
        self.stores: list[Store] = []
        if isinstance(replica_timeout, dt.timedelta):
            replica_timeout = replica_timeout.total_seconds()
        if not isinstance(min_replicas, int) or isinstance(min_replicas, bool) or min_replicas < 0:
            raise ConfigError(f"min_replicas={min_replicas!r}: expected a whole number >= 0")
        if not isinstance(replica_timeout, int | float) or not replica_timeout > 0:
            raise ConfigError(f"replica_timeout={replica_timeout!r}: expected seconds > 0")
        self.min_replicas = min_replicas
        self.replica_timeout = float(replica_timeout)
        # Every Redis read and write goes through the store, made at connect.
        self.store: Store | None = None
        self._redis: Client | None = None
        # The hot path (defer, ack) on a single server: see _conn.py.
        self._fast: FastRedis | None = None
        self._connect_lock: anyio.Lock | None = None
        # Rate limiters by name (app.limiter): api.limiter_state and the CLI find them here.
        self.limiters: dict[str, Limiter] = {}

    def __repr__(self) -> str:
        return f"<App {self.keys.namespace} {mask_url(self.redis_url)}>"

    # -- registry ----------------------------------------------------------------

    @overload
    def job(self, fn: Callable[P, Awaitable[R]], /) -> Job[P, R]: ...

    @overload
    def job(
        self,
        *,
        name: str | None = ...,
        queue: str = ...,
        retry: int = ...,
        timeout: float | dt.timedelta | None = ...,
        dead: bool = ...,
        retry_in: RetryIn | None = ...,
        discard_on: type[BaseException] | Sequence[type[BaseException]] = ...,
        dead_on: type[BaseException] | Sequence[type[BaseException]] = ...,
        on_exhausted: OnExhausted | None = ...,
        backtrace: bool | int = ...,
        retry_queue: str | None = ...,
        retry_for: float | dt.timedelta | None = ...,
        unique: Unique | bool | None = ...,
        expires_in: float | dt.timedelta | None = ...,
        keep_result: float | dt.timedelta | None = ...,
        track_status: bool = ...,
        limits: Sequence[Limiter] = ...,
        encrypt: bool = ...,
        compress: bool | None = ...,
    ) -> Callable[[Callable[P, Awaitable[R]]], Job[P, R]]: ...

    def job(  # type: ignore[misc]
        self, fn: Callable[P, Awaitable[R]] | None = None, /, **options: Any
    ) -> Job[P, R] | Callable[[Callable[P, Awaitable[R]]], Job[P, R]]:
        """Register an ``async def`` function as a job, bare or with options."""

        def register(f: Callable[P, Awaitable[R]]) -> Job[P, R]:
            job = Job(self, f, **self.job_options(options))
            other = self.jobs.get(job.name)
            if other is not None and other.fn is not f:
                raise ConfigError(f"two jobs are named {job.name!r}; give one a name=")
            self.jobs[job.name] = job
            return job

        if fn is not None:
            return register(fn)
        return register

    @overload
    def iterable_job(
        self, fn: Callable[Concatenate[Iteration[Any], P], AsyncIterator[Any]], /
    ) -> Job[P, None]: ...

    @overload
    def iterable_job(
        self,
        *,
        save_every: int | None = ...,
        save_interval: float | None = ...,
        state_ttl: float | dt.timedelta = ...,
        max_runtime: float | dt.timedelta | None = ...,
        **options: Any,
    ) -> Callable[[Callable[Concatenate[Iteration[Any], P], AsyncIterator[Any]]], Job[P, None]]: ...

    def iterable_job(  # type: ignore[misc]
        self,
        fn: Callable[Concatenate[Iteration[Any], P], AsyncIterator[Any]] | None = None,
        /,
        *,
        save_every: int | None = 100,
        save_interval: float | None = 5.0,
        state_ttl: float | dt.timedelta = DEFAULT_STATE_TTL,
        max_runtime: float | dt.timedelta | None = None,
        **options: Any,
    ) -> Job[P, None] | Callable[[Callable[..., AsyncIterator[Any]]], Job[P, None]]:
        """Register an iterable job (#14): an ``async def`` generator whose first
        parameter takes the :class:`~asyncjobs.iteration.Iteration` and which yields a
        cursor after each item. The cursor is saved every ``save_every`` items or
        ``save_interval`` seconds (whichever comes first; None turns one off), and kept
        ``state_ttl`` seconds after the last save (30 days). A run that has taken
        ``max_runtime`` seconds stops at its next item and goes to the back of its queue
        (None: no limit). ``options`` are :meth:`job`'s (queue, retry, timeout, ...)."""
        if isinstance(state_ttl, dt.timedelta):
            state_ttl = state_ttl.total_seconds()
        if isinstance(max_runtime, dt.timedelta):
            max_runtime = max_runtime.total_seconds()

        def register(f: Callable[..., AsyncIterator[Any]]) -> Job[P, None]:
            name = options.get("name") or f"{f.__module__}.{getattr(f, '__qualname__', f)}"
            spec = IterableSpec(
                f,
                save_every=save_every,
                save_interval=save_interval,
                state_ttl=state_ttl,
                name=name,
                max_runtime=max_runtime,
            )
            job: Job[P, None] = Job(
                self, job_function(spec), iterable=spec, **self.job_options(options)
            )
            other = self.jobs.get(job.name)
            if other is not None and getattr(other.iterable, "fn", None) is not f:
                raise ConfigError(f"two jobs are named {job.name!r}; give one a name=")
            self.jobs[job.name] = job
            return job

        if fn is not None:
            return register(fn)
        return register

    def limiter(
        self,
        name: str,
        kind: str,
        limit: int,
        *,
        per: float | dt.timedelta = 1.0,
        sliding: bool = False,
        lease: float | dt.timedelta = 30.0,
        reschedules: int = 20,
        max_backoff: float = 60.0,
        wait: float | dt.timedelta = 0.0,
    ) -> Limiter:
        """A named rate limiter, global across processes and hosts (#13).

        ``kind``: ``"concurrent"`` (at most ``limit`` holders; a holder's slot is a lease
        of ``lease`` seconds, renewed while held, so a killed holder's slot frees
        itself), ``"window"`` (``limit`` calls per ``per`` seconds, in fixed windows or,
        with ``sliding=True``, in any window of ``per`` seconds), ``"bucket"`` (a token
        bucket of ``limit`` refilled over ``per``), ``"leaky"`` (a bucket of ``limit``
        that drains evenly over ``per``), ``"points"`` (a token bucket whose calls have
        a cost: ``limiter.acquire(cost=...)``).

        Use it in a job (``async with limiter:`` or ``async with limiter(key=id):``) or
        declare it on one (``@app.job(limits=[limiter])``). Over the limit, the job is
        rescheduled (not a retry) when the limiter says there is room, plus a jitter
        doubling from 0.1 s to ``max_backoff``, up to ``reschedules`` times, then fails with
        :class:`~asyncjobs.OverLimit`; ``async with`` waits up to ``wait`` seconds first.
        """
        spec = LimitSpec(
            name=name,
            kind=kind,
            limit=limit,
            per=per.total_seconds() if isinstance(per, dt.timedelta) else per,
            sliding=sliding,
            lease=lease.total_seconds() if isinstance(lease, dt.timedelta) else lease,
            reschedules=reschedules,
            max_backoff=max_backoff,
            wait=wait.total_seconds() if isinstance(wait, dt.timedelta) else wait,
        )
        other = self.limiters.get(name)
        if other is not None and other.spec != spec:
            raise ConfigError(f"two limiters are named {name!r} with different settings")
        limiter = Limiter(spec, self._limit_store)
        self.limiters[name] = limiter
        return limiter

    async def _limit_store(self) -> LimitStore:
        """Where limiters count: the store; under a test mode, a stand-in that grants
        every acquire (a test of a job does not need Redis for its limiters)."""
        if self._test_mode() is not None:
            return UNLIMITED
        return await self.open_store()

    @overload
    def periodic(
        self,
        cron: str,
        /,
        *,
        tz: str = ...,
        args: Mapping[str, Any] | None = ...,
        queue: str | None = ...,
        name: str | None = ...,
        missed: str = ...,
        history: int = ...,
    ) -> Callable[[Callable[P, Awaitable[R]]], Job[P, R]]: ...

    @overload
    def periodic(
        self,
        job: Job[P, R],
        cron: str,
        /,
        *,
        tz: str = ...,
        args: Mapping[str, Any] | None = ...,
        queue: str | None = ...,
        name: str | None = ...,
        missed: str = ...,
        history: int = ...,
    ) -> Job[P, R]: ...

    def periodic(
        self,
        job_or_cron: Job[Any, Any] | str,
        cron: str | None = None,
        /,
        *,
        tz: str = "UTC",
        args: Mapping[str, Any] | None = None,
        queue: str | None = None,
        name: str | None = None,
        missed: str = "skip",
        history: int = 10,
    ) -> Any:
        """Run a job on a cron schedule: ``@app.periodic("*/5 * * * *")`` on a job
        without arguments, or ``app.periodic(job, "0 3 * * *", args={...})``.

        Args:
            tz: the IANA time zone the cron fields are read in (``"Europe/Paris"``).
            args: keyword arguments of every run, validated now.
            queue: the queue of every run (default: the job's).
            name: the entry's name (default: the job's name); unique per app.
            missed: ticks missed while no worker ran: ``"skip"`` them, or run the
                ``"latest"`` once at start.
            history: how many recent runs the entry keeps for ``asyncjobs periodic list``.
        """
        options: dict[str, Any] = {
            "tz": tz,
            "args": args,
            "queue": queue,
            "name": name,
            "missed": missed,
            "history": history,
        }

        def register(fn: Any, expression: str) -> Any:
            job = fn if isinstance(fn, Job) else self.job(fn)
            entry = PeriodicEntry(job, expression, **options)
            if entry.name in self.periodic_entries:
                raise ConfigError(
                    f"two periodic entries are named {entry.name!r}; give one a name="
                )
            self.periodic_entries[entry.name] = entry
            return job

        if isinstance(job_or_cron, str):
            if cron is not None:
                raise ConfigError("app.periodic(job, cron, ...) takes the job first")
            expression = job_or_cron
            return lambda fn: register(fn, expression)
        if cron is None:
            raise ConfigError("app.periodic(job, cron): give the cron expression")
        return register(job_or_cron, cron)

    # -- connection --------------------------------------------------------------

    async def connect(self) -> Client:
        """Connect (once); later calls return the same client."""
        if self._redis is not None:
            return self._redis
        if self._connect_lock is None:
            self._connect_lock = anyio.Lock()
        async with self._connect_lock:
            if self._redis is None:
                store = await Store.open(
                    self.redis_url,
                    self.keys,
                    cluster=self.cluster,
                    nodes=self.cluster_nodes,
                    dead_max_jobs=self.dead_max_jobs,
                    dead_timeout=self.dead_timeout,
                    min_replicas=self.min_replicas,
                    replica_timeout=self.replica_timeout,
                )
                self.store = store
                self.stores = [store, *shard_stores(store, self.shards)]
                self._fast = store.fast
                self._redis = store.client
        return self._redis

    async def open_store(self) -> Store:
        """Connect (once) and return the store: what a worker reads and writes through
        (``Worker(app, capsules, connect=app.open_store)``)."""
        await self.connect()
        store = self.store
        assert store is not None
        return store

    async def open_stores(self) -> list[Store]:
        """Connect (once) and return the store of every shard, shard 0 first."""
        await self.connect()
        return self.stores

    async def _shard_store(self, shard: int) -> Store:
        return (await self.open_stores())[shard]

    def _shard(self, payload: Payload) -> int:
        """The shard of a job: by its unique lock's key (so that every copy of a unique
        job meets its lock), else by its jid; a hash every client agrees on. A job of a
        batch goes to shard 0, where its batch lives: the script that acknowledges it
        counts it in its batch, in one slot."""
        if payload.bid is not None:
            return 0
        lock = payload.unique
        return shard_of(lock.key if lock is not None else payload.jid, self.shards)

    async def ping(self) -> None:
        """Check that Redis answers (connects, pings, closes)."""
        try:
            await self.connect()
            assert self.store is not None
            await self.store.ping()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        store, self.store = self.store, None
        self.stores = []  # shards share shard 0's connections: closed with it
        self._redis = self._fast = None
        if store is not None:
            await store.aclose()

    async def __aenter__(self) -> App:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- enqueue -----------------------------------------------------------------

    def _encode(self, payload: Payload) -> bytes:
        data = ENCODER.encode(payload)
        if len(data) > self.max_payload_bytes:
            raise EnqueueError(
                f"job {payload.job}: payload is {len(data)} bytes, over the limit of "
                f"{self.max_payload_bytes} (App(max_payload_bytes=...)); store large data "
                "elsewhere and pass a reference"
            )
        return data

    def _test_mode(self) -> TestMode | None:
        """The test mode (``asyncjobs.testing``) active for this app in this context, if
        any: one context-variable read, all that ``defer``, ``status`` and the rest pay
        for the test modes outside them."""
        modes = _test_modes.get()
        return modes.get(id(self)) if modes else None

    async def _enqueue(self, payload: Payload) -> str | None:
        """``defer``: the client chain, then Redis (or the test mode of this context)."""
        mode = self._test_mode()
        chain = self.client_middleware
        if mode is None:
            if not chain.entries:
                return await self._push(payload)
            return await run_client(chain.entries, payload, self._push)

        # A test mode takes the job once the whole client chain has passed it on: inline
        # mode then runs the server chain and the job (Sidekiq's perform_inline).
        passed: list[Payload] = []

        async def collect(p: Payload) -> str | None:
            passed.append(p)
            return p.jid

        jid = await run_client(chain.entries, payload, collect)
        if passed:
            await mode.accept(passed)
        return jid

    async def _push(self, payload: Payload) -> str | None:
        data = self._encode(payload)
        store = self.store
        if store is None:
            await self.connect()
            store = self.store
            assert store is not None
        if self.shards > 1:
            store = self.stores[self._shard(payload)]
        lock = payload.unique
        if lock is not None and lock.until != "executing":
            pushed = await store.push_unique(payload.queue, payload.at, data, lock, payload.jid)
            jid = self._unique_outcome(payload, pushed.enqueued, pushed.holder, pushed.removed)
            if jid is not None and payload.bid is not None:  # batches (#14)
                _count_added([payload])
            return jid
        if payload.at is None:
            await store.push(payload.queue, data)
        else:
            await store.schedule(payload.queue, payload.at, data)
        if payload.bid is not None:  # a batch job (#14): counted when its block exits
            _count_added([payload])
        return payload.jid

    async def _enqueue_many(self, payloads: Sequence[Payload]) -> list[str | None]:
        """``defer_many``: each job through the client chain on its own (as Sidekiq's
        ``push_bulk``), then every job that came through in one round trip."""
        if not payloads:
            return []
        mode = self._test_mode()
        chain = self.client_middleware
        if chain.entries:
            entries = chain.entries
            passed: list[Payload] = []

            async def collect(p: Payload) -> str | None:
                passed.append(p)
                return p.jid

            jids = [await run_client(entries, p, collect) for p in payloads]
            if mode is not None:
                await mode.accept(passed)
            else:
                results = await self._push_many(passed)
                # Unique jobs whose lock was held were not enqueued: None, as defer.
                skipped = {p.jid for p, r in zip(passed, results, strict=True) if r is None}
                if skipped:
                    return [None if j in skipped else j for j in jids]
            return jids
        if mode is not None:
            return list(await mode.accept(payloads))
        return list(await self._push_many(payloads))

    async def _push_many(self, payloads: Sequence[Payload]) -> list[str | None]:
        if not payloads:
            return []
        if self.shards > 1:
            return await self._push_many_sharded(payloads)
        return await self._push_many_on(self.store, payloads)

    async def _push_many_sharded(self, payloads: Sequence[Payload]) -> list[str | None]:
        """``defer_many`` with shards: each shard's jobs in one call (as unsharded);
        the results in the order of ``payloads``."""
        stores = await self.open_stores()
        by_shard: dict[int, list[int]] = {}
        for i, p in enumerate(payloads):
            by_shard.setdefault(self._shard(p), []).append(i)
        out: list[str | None] = [None] * len(payloads)
        for shard, where in sorted(by_shard.items()):
            results = await self._push_many_on(stores[shard], [payloads[i] for i in where])
            for i, r in zip(where, results, strict=True):
                out[i] = r
        return out

    async def _push_many_on(
        self, store: Store | None, payloads: Sequence[Payload]
    ) -> list[str | None]:
        now_by_queue: dict[str, list[bytes]] = {}
        scheduled: dict[str, list[Any]] = {}
        unique: list[tuple[Payload, bytes]] = []
        for p in payloads:
            data = self._encode(p)
            if p.unique is not None and p.unique.until != "executing":
                unique.append((p, data))
            elif p.at is None:
                now_by_queue.setdefault(p.queue, []).append(data)
            else:
                scheduled.setdefault(p.queue, []).extend((p.at, data))
        if store is None:
            await self.connect()
            store = self.store
            assert store is not None
        if unique:
            jids = await self._push_many_unique(store, payloads, now_by_queue, scheduled, unique)
            if payloads[0].bid is not None:  # batches (#14)
                _count_added([p for p, j in zip(payloads, jids, strict=True) if j is not None])
            return jids
        await store.push_many(now_by_queue, scheduled)
        if payloads[0].bid is not None:  # batches (#14)
            _count_added(payloads)
        return [p.jid for p in payloads]

    async def _push_many_unique(
        self,
        store: Store,
        payloads: Sequence[Payload],
        now_by_queue: dict[str, list[bytes]],
        scheduled: dict[str, list[Any]],
        unique: list[tuple[Payload, bytes]],
    ) -> list[str | None]:
        """``defer_many`` with unique jobs: the others as usual, then each unique job with
        its lock (one script call each, in one round trip on a single server). With
        ``on_conflict="raise"`` the jobs before the conflict stay enqueued."""
        if now_by_queue or scheduled:
            await store.push_many(now_by_queue, scheduled)
        pushed = await store.push_unique_many(
            [(p.queue, p.at, data, p.unique, p.jid) for p, data in unique if p.unique]
        )
        outcome: dict[int, str | None] = {}
        conflict: UniqueConflict | None = None
        for (p, _), r in zip(unique, pushed, strict=True):
            try:
                outcome[id(p)] = self._unique_outcome(p, r.enqueued, r.holder, r.removed)
            except UniqueConflict as exc:
                outcome[id(p)] = None
                conflict = conflict or exc
        if conflict is not None:
            raise conflict
        return [outcome.get(id(p), p.jid) for p in payloads]

    def _unique_outcome(
        self, payload: Payload, enqueued: bool, holder: str | None, removed: bool
    ) -> str | None:
        """The jid of a unique job after its push, None if skipped; raises on a conflict
        with ``on_conflict="raise"``."""
        lock = payload.unique
        assert lock is not None
        if enqueued:
            if holder is not None:
                uniquelog.debug(
                    "%s jid=%s replaces jid=%s (%s)",
                    payload.job,
                    payload.jid,
                    holder,
                    "dropped" if removed else "already started or promoted, not dropped",
                )
            return payload.jid
        if lock.conflict == "raise":
            raise UniqueConflict(
                payload.job,
                holder or "",
                f"job {payload.job}: not enqueued, its unique lock is held by jid={holder} "
                f"(Unique(on_conflict='raise')); nothing was enqueued",
            )
        uniquelog.debug(
            "skip %s jid=%s: its unique lock is held by jid=%s", payload.job, payload.jid, holder
        )
        return None

    # -- status, results, cancellation (#14) ----------------------------------------

    async def _track(self, payload: Payload, keep: float) -> None:
        """A tracked job was deferred: record it as queued or scheduled (unless a
        worker recorded it running already)."""
        mode = self._test_mode()
        if mode is not None:  # a test mode keeps the statuses of its jobs
            mode.track([payload])
            return
        store = await self.open_store()
        data = ENCODER.encode(_initial(payload))
        await store.set_status(payload.jid, data, PENDING_TTL, only_new=True)

    async def _track_many(self, payloads: Sequence[Payload]) -> None:
        """``defer_many`` of a tracked job: their states in one round trip."""
        if not payloads:
            return
        mode = self._test_mode()
        if mode is not None:
            mode.track(payloads)
            return
        store = await self.open_store()
        await store.set_statuses(
            [(p.jid, ENCODER.encode(_initial(p))) for p in payloads], PENDING_TTL
        )

    async def _wait_outcome(self, jid: str, timeout: float | None) -> Outcome:
        mode = self._test_mode()
        if mode is not None:  # a test mode keeps the outcomes of the jobs it ran
            return mode.outcome(jid)
        store = await self.open_store()
        raw = await store.wait_result(jid, timeout)
        if raw is None:
            raise TimeoutError(f"job {jid} has no result after {timeout}s")
        return decode_outcome(raw)

    async def status(self, jid: str) -> JobStatus:
        """Where job ``jid`` is: queued, scheduled, running (``process``, since ``at``),
        retrying (``retry_count``, ``next_at``), succeeded, failed, dead, cancelled, or
        unknown; with its last ``progress``. One round trip (three GETs). Known for jobs
        with ``keep_result`` or ``track_status`` only (others are ``unknown``). Under a
        test mode (``asyncjobs.testing``), what the mode keeps, with no round trip."""
        mode = self._test_mode()
        if mode is not None:
            return mode.status(jid)
        store = await self.open_store()
        return combine(jid, *await store.read_status(jid))

    async def result(self, jid: str, *, timeout: float | None = None) -> Any:
        """Wait for job ``jid``'s result, decoded to its job's return annotation when
        that job is registered here (as ``handle.result()``)."""
        out = await self._wait_outcome(jid, timeout)
        job = self.jobs.get(out.job) if out.job else None
        if job is not None and job.keep_result is not None:
            return await job.result(jid, timeout=0)
        raise_for(jid, out)
        return msgspec.json.decode(out.value)

    async def cancel(self, jid: str) -> str:
        """Cancel job ``jid``: removed if it waits (queue, schedule, retry set),
        cancelled on the host that runs it (within a round trip or two) if running.
        Returns what was done: ``"removed"``, ``"cancelling"``, or ``"not found"``
        (finished, dead, unknown, or between two places at that instant). Under a test
        mode (``asyncjobs.testing``), the mode's jobs, with no round trip."""
        mode = self._test_mode()
        if mode is not None:
            return await mode.cancel(jid)
        stores = await self.open_stores()
        store = stores[0]
        process = await self._running_on(stores, jid)
        if process is not None:
            await process[0].send_cancel(process[1], jid)
            return "cancelling"
        raw: bytes | None = None
        found = store
        for found in stores:
            queues = [name for name, _, _ in await found.queue_heads()]
            raw = await found.remove_waiting(jid, queues)
            if raw is not None:
                break
        if raw is None:
            # It may have been fetched meanwhile: look once more.
            process = await self._running_on(stores, jid)
            if process is not None:
                await process[0].send_cancel(process[1], jid)
                return "cancelling"
            return "not found"
        # Gone for good: a unique job's lock goes too (if it still holds it).
        await found.release_locks([raw])
        try:
            name: str | None = DECODER.decode(raw).job
        except DECODE_ERRORS:
            name = None
        job = self.jobs.get(name) if name else None
        if job is None or job.iterable is not None:
            # An iterable job waiting with a saved cursor (#14): its state goes too.
            await store.delete_iteration(jid)
        tracked = job.track_status if job is not None else (await store.read_status(jid))[0]
        if tracked:
            # Without the job registered here (the CLI), its status record says it is
            # tracked; its outcome is then kept a day.
            out = Outcome(state="cancelled", at=time.time(), job=name)
            keep = (job.keep_result if job is not None else None) or DEFAULT_KEEP
            await store.save_result(jid, ENCODER.encode(out), keep)
        return "removed"

    @staticmethod
    async def _running_on(stores: Sequence[Store], jid: str) -> tuple[Store, str] | None:
        """The shard's store and the process that holds job ``jid``, if one does."""
        for store in stores:
            process = await store.running_on(jid)
            if process is not None:
                return store, process
        return None

    # -- batches and workflows (#14) ---------------------------------------------------

    def batch(
        self,
        *,
        description: str | None = None,
        on_complete: Callback | None = None,
        on_success: Callback | None = None,
        on_death: Callback | None = None,
        bid: str | None = None,
    ) -> Batch:
        """A batch of jobs: ``async with app.batch(on_success=notify.s(...)) as b:``;
        every job deferred in the block joins it. Callbacks are jobs, called with the
        batch id first: ``on_complete`` once every job ran (failures counted),
        ``on_success`` once every job succeeded, ``on_death`` when a job died. Made in
        a batch block or a batch job, it is a child: its parent completes after it.
        ``bid=``: reopen a batch to add jobs (from one of its jobs, or before it
        completed). See docs/concepts/batches.md."""
        return Batch(
            self,
            description=description,
            callbacks={"complete": on_complete, "success": on_success, "death": on_death},
            bid=bid,
        )

    async def _batches(self) -> BatchStore:
        """Where batches live: the store; under a test mode, the mode's in-memory
        stand-in (``asyncjobs.testing``)."""
        mode = self._test_mode()
        if mode is not None:
            return mode.batches()
        return await self.open_store()

    async def _defer_after(self, payload: Payload, after: tuple[str, ...]) -> str:
        return await defer_after(self, payload, after)

    async def batch_status(self, bid: str) -> BatchStatus:
        """A batch's counts, failed jids and events now; :class:`~asyncjobs.BatchError`
        if there is no such batch (or it expired)."""
        return await read_status(self, bid)

    async def chain(
        self, *steps: Any, on_failure: str = "stop", description: str | None = None
    ) -> str:
        """A workflow: each step (``job.s(...)``, or a list of them run together) is
        deferred once the step before succeeded, with its result as first argument when
        its jobs keep results (``keep_result``; a list for a group). A death stops the
        chain; ``on_failure="continue"`` goes on (the dead job's result is None).
        Returns the first step's batch id."""
        return await chain(self, steps, on_failure=on_failure, description=description)

    # -- worker ------------------------------------------------------------------

    def worker(
        self,
        queues: Sequence[str | tuple[str, int]] = ("default",),
        *,
        concurrency: int = 10,
        strict: bool = False,
        capsules: Sequence[CapsuleSpec] | None = None,
        timeout: float = 25.0,
        **options: Any,
    ) -> Worker:
        """An in-process worker: ``await app.worker(...).run()``."""
        from ._worker.launcher import Worker

        register_steps(self)  # workflows' next steps (app.chain) run on any worker
        if capsules is None:
            specs = [(q, 1) if isinstance(q, str) else (q[0], int(q[1])) for q in queues]
            capsules = [
                CapsuleSpec(name="default", queues=specs, concurrency=concurrency, strict=strict)
            ]
        if self.shards > 1:
            from ._worker.sharded import ShardedWorker

            connects = [functools.partial(self._shard_store, i) for i in range(self.shards)]
            return ShardedWorker(self, capsules, connects=connects, timeout=timeout, **options)
        return Worker(self, capsules, connect=self.open_store, timeout=timeout, **options)

    @contextlib.asynccontextmanager
    async def run_worker(
        self,
        queues: Sequence[str | tuple[str, int]] = ("default",),
        *,
        concurrency: int = 10,
        strict: bool = False,
        capsules: Sequence[CapsuleSpec] | None = None,
        timeout: float = 25.0,
        **options: Any,
    ) -> AsyncIterator[Worker]:
        """Embedded mode: run a worker inside this event loop (a web app's, say) for the
        duration of the block, with the same shutdown guarantees as ``asyncjobs worker``.

        ```python
        async with app.run_worker(queues=["default"], concurrency=5):
            ...  # serve requests; jobs run in this process
        ```
        """
        options.setdefault("embedded", True)  # the process record says so
        worker = self.worker(
            queues,
            concurrency=concurrency,
            strict=strict,
            capsules=capsules,
            timeout=timeout,
            **options,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await worker.wait_started()
            try:
                yield worker
            finally:
                worker.stop()


def _count_added(payloads: Sequence[Payload]) -> None:
    """Jobs of a batch now in Redis: counted by the open block they joined."""
    scope = scope_var.get()
    if scope is None:
        return
    for p in payloads:
        if p.bid == scope.bid:
            scope.added += 1
