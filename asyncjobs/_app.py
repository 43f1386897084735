"""``App``: settings, the job registry, the client side (enqueue), middleware, hooks."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import anyio
import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from ._conn import FastRedis
from ._errors import ConfigError, EnqueueError
from ._job import Job, JobContext, RetryIn
from ._keys import Keys
from ._payload import ENCODER, Payload
from ._redis import REDIS_ERRORS, Client, Conn, connect, map_error, mask_url, scripts

if TYPE_CHECKING:
    from ._worker.capsule import CapsuleSpec
    from ._worker.launcher import Worker

__all__ = ["App"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "redis://localhost:6379/0"

ClientMiddleware = Callable[[Payload, Callable[[Payload], Awaitable[str]]], Awaitable[str]]
ServerMiddleware = Callable[[JobContext, Callable[[], Awaitable[Any]]], Awaitable[Any]]
Hook = Callable[[], Awaitable[None]]
DeathHandler = Callable[[JobContext, BaseException], Awaitable[None]]


def resolve_url(url: str | None) -> str:
    """The Redis URL: argument, else ``ASYNCJOBS_REDIS_URL``, else ``REDIS_URL``."""
    return (
        url or os.environ.get("ASYNCJOBS_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_URL
    )


class App:
    """An asyncjobs application: where jobs are registered and enqueued.

    Args:
        redis_url: Redis URL; else ``ASYNCJOBS_REDIS_URL``, else ``REDIS_URL``, else
            ``redis://localhost:6379/0``.
        namespace: prefix (and Redis Cluster hash tag) of every key.
        cluster: force (or forbid) the Redis Cluster client; ``None`` asks the server.
        max_payload_bytes: payloads larger than this are refused at ``defer``.
        dead_max_jobs: the dead set keeps at most this many entries.
        dead_timeout: entries older than this leave the dead set (seconds or timedelta).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        namespace: str = "asyncjobs",
        cluster: bool | None = None,
        max_payload_bytes: int = 1 << 20,
        dead_max_jobs: int = 10_000,
        dead_timeout: float | dt.timedelta = dt.timedelta(days=180),
    ) -> None:
        self.redis_url = resolve_url(redis_url)
        self.keys = Keys(namespace)
        self.cluster = cluster
        self.max_payload_bytes = max_payload_bytes
        self.dead_max_jobs = dead_max_jobs
        self.dead_timeout = (
            dead_timeout.total_seconds()
            if isinstance(dead_timeout, dt.timedelta)
            else float(dead_timeout)
        )
        self.jobs: dict[str, Job[Any, Any]] = {}
        self.client_middleware: list[ClientMiddleware] = []
        self.server_middleware: list[ServerMiddleware] = []
        self.on_startup: list[Hook] = []
        self.on_shutdown: list[Hook] = []
        # Worker lifecycle hooks, as Sidekiq's events: quiet, shutdown and exit hooks
        # run in reverse order of registration, the others in order. A startup hook
        # that raises aborts the start; any other is logged and the worker goes on.
        self.on_quiet: list[Hook] = []  # on quiet (SIGTSTP, `asyncjobs quiet`), or at stop
        self.on_heartbeat: list[Hook] = []  # once, after the first heartbeat
        self.on_beat: list[Hook] = []  # after every heartbeat
        self.on_exit: list[Hook] = []  # last, after the shutdown hooks
        self.death_handlers: list[DeathHandler] = []
        self._redis: Client | None = None
        # The hot path (defer, ack) on a single server: see _conn.py.
        self._fast: FastRedis | None = None
        self._connect_lock: anyio.Lock | None = None
        self._scripts = scripts()
        self._queue_keys: dict[str, list[str]] = {}

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
        discard_on: tuple[type[BaseException], ...] = ...,
        dead_on: tuple[type[BaseException], ...] = ...,
        on_exhausted: Callable[[JobContext, BaseException], Awaitable[None]] | None = ...,
    ) -> Callable[[Callable[P, Awaitable[R]]], Job[P, R]]: ...

    def job(  # type: ignore[misc]
        self, fn: Callable[P, Awaitable[R]] | None = None, /, **options: Any
    ) -> Job[P, R] | Callable[[Callable[P, Awaitable[R]]], Job[P, R]]:
        """Register an ``async def`` function as a job, bare or with options."""

        def register(f: Callable[P, Awaitable[R]]) -> Job[P, R]:
            job = Job(self, f, **options)
            other = self.jobs.get(job.name)
            if other is not None and other.fn is not f:
                raise ConfigError(f"two jobs are named {job.name!r}; give one a name=")
            self.jobs[job.name] = job
            return job

        if fn is not None:
            return register(fn)
        return register

    # -- connection --------------------------------------------------------------

    async def connect(self) -> Client:
        """Connect (once); later calls return the same client."""
        if self._redis is not None:
            return self._redis
        if self._connect_lock is None:
            self._connect_lock = anyio.Lock()
        async with self._connect_lock:
            if self._redis is None:
                client = await connect(self.redis_url, cluster=self.cluster)
                if not isinstance(client, RedisCluster):
                    self._fast = FastRedis(client.connection_pool)
                self._redis = client
        return self._redis

    async def ping(self) -> None:
        """Check that Redis answers (connects, pings, closes)."""
        try:
            client = await self.connect()
            try:
                await client.ping()
            except REDIS_ERRORS as exc:
                raise map_error(self.redis_url, exc) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        client, self._redis = self._redis, None
        fast, self._fast = self._fast, None
        if fast is not None:
            await fast.aclose()
        if client is not None:
            await client.aclose()

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

    def _keys_for(self, queue: str) -> list[str]:
        keys = self._queue_keys.get(queue)
        if keys is None:
            k = self.keys
            keys = self._queue_keys[queue] = [k.queues, k.queue(queue), k.wake(queue)]
        return keys

    def _encode(self, payload: Payload) -> bytes:
        data = ENCODER.encode(payload)
        if len(data) > self.max_payload_bytes:
            raise EnqueueError(
                f"job {payload.job}: payload is {len(data)} bytes, over the limit of "
                f"{self.max_payload_bytes} (App(max_payload_bytes=...)); store large data "
                "elsewhere and pass a reference"
            )
        return data

    async def _enqueue(self, payload: Payload) -> str:
        if self.client_middleware:
            return await self._through_middleware(payload, 0)
        return await self._push(payload)

    async def _through_middleware(self, payload: Payload, i: int) -> str:
        if i == len(self.client_middleware):
            return await self._push(payload)

        async def call_next(p: Payload) -> str:
            return await self._through_middleware(p, i + 1)

        return await self.client_middleware[i](payload, call_next)

    async def _push(self, payload: Payload) -> str:
        data = self._encode(payload)
        client: Conn | None = self._fast or self._redis
        if client is None:
            await self.connect()
            client = self._fast or self._redis
            assert client is not None
        try:
            if payload.at is None:
                await self._scripts.push(
                    client, self._keys_for(payload.queue), (payload.queue, data)
                )
            else:
                k = self.keys
                await self._scripts.schedule(
                    client,
                    (k.schedule, k.queues, k.wake_scheduler),
                    (payload.queue, payload.at, data),
                )
        except REDIS_ERRORS as exc:
            raise map_error(self.redis_url, exc) from exc
        return payload.jid

    async def _enqueue_many(self, payloads: Sequence[Payload]) -> list[str]:
        if not payloads:
            return []
        if self.client_middleware:
            return [await self._enqueue(p) for p in payloads]
        now_by_queue: dict[str, list[bytes]] = {}
        scheduled: dict[str, list[Any]] = {}
        for p in payloads:
            data = self._encode(p)
            if p.at is None:
                now_by_queue.setdefault(p.queue, []).append(data)
            else:
                scheduled.setdefault(p.queue, []).extend((p.at, data))
        client = self._redis or await self.connect()
        push, schedule = self._scripts.push, self._scripts.schedule
        fast = self._fast
        k = self.keys
        # Chunks keep each script call's argument list modest.
        calls: list[tuple[Any, ...]] = [
            (push, 3, *self._keys_for(queue), queue, *datas[i : i + 5000])
            for queue, datas in now_by_queue.items()
            for i in range(0, len(datas), 5000)
        ]
        calls.extend(
            (schedule, 3, k.schedule, k.queues, k.wake_scheduler, queue, *items[i : i + 10000])
            for queue, items in scheduled.items()
            for i in range(0, len(items), 10000)
        )
        try:
            if fast is not None:
                # One pipelined connection: all calls are written at once, one round trip.
                await asyncio.gather(*(s(fast, args[:3], args[3:]) for s, _n, *args in calls))
                return [p.jid for p in payloads]
            if isinstance(client, RedisCluster):
                # redis-py's cluster pipeline refuses scripts; all our keys share one
                # slot, so the calls go one by one (one per queue and chunk).
                for script, _n, *args in calls:
                    await script(client, args[:3], args[3:])
                return [p.jid for p in payloads]
            for _ in range(2):
                async with client.pipeline(transaction=False) as pipe:
                    for script, *args in calls:
                        pipe.evalsha(script.sha, *args)
                    results = await pipe.execute(raise_on_error=False)
                # A NOSCRIPT reply (first use on this server, or after a restart) means
                # that call pushed nothing: load the script and resend only those calls.
                missing = [
                    c
                    for c, r in zip(calls, results, strict=True)
                    if isinstance(r, rexc.NoScriptError)
                ]
                for r in results:
                    if isinstance(r, Exception) and not isinstance(r, rexc.NoScriptError):
                        raise r
                if not missing:
                    break
                for script in {c[0] for c in missing}:
                    await client.script_load(script.source)
                calls = missing
        except REDIS_ERRORS as exc:
            raise map_error(self.redis_url, exc) from exc
        return [p.jid for p in payloads]

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
        from ._worker.capsule import CapsuleSpec
        from ._worker.launcher import Worker

        if capsules is None:
            specs = [(q, 1) if isinstance(q, str) else (q[0], int(q[1])) for q in queues]
            capsules = [
                CapsuleSpec(name="default", queues=specs, concurrency=concurrency, strict=strict)
            ]
        return Worker(self, capsules, timeout=timeout, **options)

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
