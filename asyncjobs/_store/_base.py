"""The store's foundation: its connections, error mapping, and the rare paths.

Every method of the store maps redis-py's errors at the call (as httpcore maps socket
errors in every backend call): nothing above the store sees a redis-py exception. A
``READONLY`` reply (the server is a replica, as after a failover) wrote nothing, so the
store drops its connections and sends the call once more; a second failure is raised.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, NoReturn, ParamSpec, TypeVar

import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from .._conn import FastRedis
from .._errors import AsyncJobsError, ConfigError
from .._keys import Keys
from .._redis import (
    REPLY_TIMEOUT,
    STORE_ERRORS,
    Client,
    Conn,
    Script,
    Scripts,
    Seed,
    close_client,
    connect,
    is_readonly,
    map_error,
    reset_pool,
    scripts,
)

if TYPE_CHECKING:
    from ._durable import Durable
    from ._failover import MasterWatch

__all__ = ["QueuePairs", "StoreBase", "mapped"]

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="StoreBase")


class QueuePairs:
    """The (queue list, wake list) key pairs of a script that moves jobs to their queues
    (promote, requeue, reap): each queue's pair is appended to ``keys`` once, and jobs
    refer to it by its 1-based index, as the scripts expect."""

    __slots__ = ("_index", "_keys", "keys")

    def __init__(self, app_keys: Keys, keys: list[str]) -> None:
        self._keys = app_keys
        self.keys = keys
        self._index: dict[str, int] = {}

    def index(self, queue: str) -> int:
        idx = self._index.get(queue)
        if idx is None:
            idx = self._index[queue] = len(self._index) + 1
            self.keys.extend((self._keys.queue(queue), self._keys.wake(queue)))
        return idx


_REDIS_CONNECTION = os.path.join("redis", "asyncio", "connection.py")
_STREAMS = os.path.join("asyncio", "streams.py")


def _torn(exc: BaseException) -> BaseException:
    """A connection error for what redis-py raises from inside its connection code
    when the server resets the connection in the middle of its handshake: uvloop's
    ``RuntimeError`` (an operation on a closed transport) or an ``AttributeError`` on
    the writer it has just dropped. Anything else is a bug and comes back as it is."""
    last = ""  # the innermost frame that is neither asyncio's streams nor uvloop's
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if not name.endswith(_STREAMS) and "uvloop" not in name:
            last = name
        tb = tb.tb_next
    if last.endswith(_REDIS_CONNECTION):
        err = rexc.ConnectionError(f"connection lost: {exc}")
        err.__cause__ = exc
        return err
    return exc


def mapped(
    fn: Callable[Concatenate[S, P], Awaitable[R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """Map a store method's errors; on ``READONLY``, reconnect and call it once more.

    Safe to repeat: a ``READONLY`` reply means the write it refused did nothing, and
    every write of a mapped method is idempotent or its first command."""

    @functools.wraps(fn)
    async def call(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(self, *args, **kwargs)
        except STORE_ERRORS as exc:
            if not is_readonly(exc):
                self.fail(exc)
        except (RuntimeError, AttributeError) as exc:
            self.fail(_torn(exc))
        await self.reset(kwargs.get("conn"))
        try:
            return await fn(self, *args, **kwargs)
        except STORE_ERRORS as exc:
            self.fail(exc)
        except (RuntimeError, AttributeError) as exc:
            self.fail(_torn(exc))

    return call  # type: ignore[return-value]  # functools.wraps' _Wrapped is callable alike


class StoreBase:
    """Connections, keys, scripts and settings the store's methods share."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        client: Client,
        fast: FastRedis | None,
        scripts: Scripts,
        *,
        dead_max_jobs: int = 10_000,
        dead_timeout: float = 180 * 86400.0,
    ) -> None:
        self.url = url
        self.keys = keys
        # redis-py: admin reads and writes, pipelines, Redis Cluster.
        self.client = client
        # The lean pipelined connection of the hot path on a single server (_conn.py).
        self.fast = fast
        self.scripts = scripts
        self.dead_max_jobs = dead_max_jobs
        self.dead_timeout = dead_timeout
        self._queue_keys: dict[str, list[str]] = {}
        # Durable enqueue (App(min_replicas=n)): see _durable.py; None when off.
        self.durable: Durable | None = None
        # Sentinel: the +switch-master watch (_failover.py), and the lean connections of
        # blocking callers, dropped with the others when the master moves.
        self.watch: MasterWatch | None = None
        self._lean: weakref.WeakSet[FastRedis] = weakref.WeakSet()
        k = keys
        self._schedule_keys = [k.schedule, k.queues, k.wake_scheduler]

    @classmethod
    async def open(
        cls: type[S],
        url: str,
        keys: Keys,
        *,
        cluster: bool | None = None,
        nodes: Sequence[Seed] = (),
        dead_max_jobs: int = 10_000,
        dead_timeout: float = 180 * 86400.0,
        min_replicas: int = 0,
        replica_timeout: float = 1.0,
    ) -> S:
        """Connect to ``url`` (errors mapped) and build the store on it; ``nodes``: more
        seed nodes of a Redis Cluster."""
        client = await connect(url, cluster=cluster, nodes=nodes)
        if min_replicas and isinstance(client, RedisCluster):
            await client.aclose()
            raise ConfigError(
                "App(min_replicas=...) needs a single master (or a Sentinel-managed one): "
                "on a Redis Cluster, WAIT cannot follow a write to its node"
            )
        fast = None if isinstance(client, RedisCluster) else FastRedis(client.connection_pool)
        store = cls(
            url,
            keys,
            client,
            fast,
            scripts(),
            dead_max_jobs=dead_max_jobs,
            dead_timeout=dead_timeout,
        )
        if min_replicas:
            from ._durable import Durable

            store.durable = Durable(min_replicas, replica_timeout)
        pool = getattr(client, "connection_pool", None)
        if isinstance(pool, SentinelConnectionPool):
            from ._failover import MasterWatch

            store.watch = MasterWatch(store, pool)
            store.watch.start()
        return store

    def fail(self, exc: BaseException) -> NoReturn:
        """Raise the asyncjobs error for ``exc`` (see ``_redis.map_error``), from it;
        an error mapped already, or not Redis's, as it is."""
        if isinstance(exc, AsyncJobsError) or not isinstance(exc, STORE_ERRORS):
            raise exc
        raise map_error(self.url, exc) from exc

    def connection(self) -> Conn:
        """A connection of its own, for a caller that blocks (a fetcher's BRPOP): a new
        lean connection on a single server, the cluster client on a cluster."""
        client = self.client
        if isinstance(client, RedisCluster):
            return client
        conn = FastRedis(client.connection_pool, reply_timeout=REPLY_TIMEOUT)
        self._lean.add(conn)
        return conn

    async def reset(self, conn: Any = None) -> None:
        """Drop every pooled connection (and ``conn``'s): the next call reconnects."""
        await reset_pool(self.client)
        for c in (self.fast, conn):
            if isinstance(c, FastRedis):
                c.reset()

    async def reset_all(self) -> None:
        """Drop every connection of this store, the blocking callers' too (the master
        moved): each caller's next command reconnects."""
        await self.reset()
        for conn in list(self._lean):
            conn.reset()

    async def follow_master(self) -> bool:
        """Sentinel only: when the Sentinels name another master than the one the lean
        connection is open to (a failover while the old master still answers), drop
        the connections so that the next call reaches the new one; True if so."""
        pool = getattr(self.client, "connection_pool", None)
        fast = self.fast
        if not isinstance(pool, SentinelConnectionPool) or fast is None:
            return False
        address = fast.address
        try:
            host, port = await pool.get_master_address()  # type: ignore[no-untyped-call]
        except STORE_ERRORS:
            return False
        if address is None or address == (host, int(port)):
            return False
        await self.reset_all()
        return True

    async def aclose(self) -> None:
        """Close the connections (nothing is raised: the sockets are gone either way)."""
        watch, self.watch = self.watch, None
        try:
            if watch is not None:
                await watch.aclose()
        finally:
            await self._close_connections()

    async def _close_connections(self) -> None:
        fast, self.fast = self.fast, None
        try:
            if fast is not None:
                await fast.aclose()
        finally:
            try:
                await close_client(self.client)
            except STORE_ERRORS:  # pragma: no cover - closing a dead connection
                pass

    def _keys_for(self, queue: str) -> list[str]:
        keys = self._queue_keys.get(queue)
        if keys is None:
            k = self.keys
            keys = self._queue_keys[queue] = [k.queues, k.queue(queue), k.wake(queue)]
        return keys

    async def _script_again(
        self,
        exc: BaseException,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        conn: Conn | None = None,
    ) -> Any:
        """The rare path of a script call that failed with ``exc``: ``NOSCRIPT`` (first
        use on this server, or after a restart) sends the source; ``READONLY``
        reconnects and sends it once more; anything else is raised, mapped."""
        conn = conn or self.fast or self.client
        retried = False
        while True:
            try:
                if isinstance(exc, rexc.NoScriptError):
                    return await conn.eval(script.source, len(keys), *keys, *args)
                if is_readonly(exc) and not retried:
                    retried = True
                    await self.reset(conn)
                    return await script(conn, keys, args)
            except STORE_ERRORS as again:
                exc = again
                continue
            self.fail(exc)

    # -- the server ------------------------------------------------------------------

    @mapped
    async def ping(self) -> None:
        """Check that Redis answers."""
        await self.client.ping()

    @mapped
    async def server_info(self, section: str = "server") -> dict[str, Any]:
        """``INFO section``, parsed."""
        info: dict[str, Any] = await self.client.info(section)
        return info

    @mapped
    async def load_scripts(self) -> None:
        """Load every script (``SCRIPT LOAD``): checks that this ACL user may."""
        for script in vars(self.scripts).values():
            await self.client.script_load(script.source)
