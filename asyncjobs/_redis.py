"""Redis client from a URL, the script registry, and error mapping.

:func:`map_error` turns every redis-py error into an asyncjobs one, with the URL
(password masked) in the message: :class:`RedisUnavailable` (unreachable),
:class:`ConfigError` (credentials, ACL, DB number, not a Redis server) or
:class:`RedisRefused` (out of memory, read-only replica, any other error reply). The
store (``_store/``) applies it to every call; :func:`connect` to the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from ._errors import AsyncJobsError, ConfigError, RedisRefused, RedisUnavailable
from ._sentinel import SentinelSpec, is_sentinel_url, mask_sentinel_url, parse_sentinel_url

if TYPE_CHECKING:
    from ._conn import FastRedis

__all__ = [
    "STORE_ERRORS",
    "Client",
    "Scripts",
    "close_client",
    "connect",
    "is_readonly",
    "map_error",
    "mask_url",
    "redis_errors",
]

log = logging.getLogger("asyncjobs.redis")

Client: TypeAlias = "aioredis.Redis | RedisCluster"
# What scripts run on: a redis-py client, or the lean hot-path connection (_conn.py).
Conn: TypeAlias = "aioredis.Redis | RedisCluster | FastRedis"

# Seconds to wait for a TCP connection, and for any reply (a silent partition must not
# hang a caller forever): `defer` against an unreachable Redis fails within these.
CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 10.0
# A Sentinel answers from memory: a shorter deadline, so that one unreachable Sentinel
# delays the search for the master (done at every new connection) by little.
SENTINEL_TIMEOUT = 2.0


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs, errors, CLI output)."""
    if is_sentinel_url(url):
        return mask_sentinel_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    try:
        password = parts.password
    except ValueError:  # pragma: no cover - urlsplit parses lazily
        return "<unparsable url>"
    if password is None:
        return url
    user = parts.username or ""
    hosts = parts.netloc.rpartition("@")[2]  # one host:port, or several (seed nodes)
    netloc = f"{user}:***@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


Seed: TypeAlias = "str | tuple[str, int]"


def _host_port(text: str, where: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), "6379"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"invalid Redis node {text.strip()!r} in {where}: give host:port, as in "
            "redis://10.0.0.1:7000,10.0.0.2:7000"
        )
    return host, int(port)


def seed_nodes(url: str, nodes: Sequence[Seed] = ()) -> tuple[str, list[tuple[str, int]]]:
    """The URL of its first host, and every seed node: the hosts of a URL that names
    several (``redis://h1:p1,h2:p2/0``), then ``nodes`` (``"host:port"`` or pairs).

    One host and no ``nodes``: the URL as it is and no seed list."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, []
    userinfo, at, hosts = parts.netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    if "," in hosts:
        where = f"the Redis URL {mask_url(url)!r}"
        seeds = [_host_port(h, where) for h in hosts.split(",") if h.strip()]
        first = f"{seeds[0][0]}:{seeds[0][1]}"
        url = urlunsplit((parts.scheme, f"{userinfo}{at}{first}", parts.path, parts.query,
                          parts.fragment))  # fmt: skip
    for node in nodes:
        if isinstance(node, str):
            seeds.append(_host_port(node, "cluster_nodes"))
        else:
            host, port = node
            seeds.append(_host_port(f"{host}:{port}", "cluster_nodes"))
    if seeds and "," not in hosts:
        own = _host_port(hosts, f"the Redis URL {mask_url(url)!r}") if hosts else None
        if own is not None and own not in seeds:
            seeds.insert(0, own)
    return url, seeds


def unix_url(url: str) -> bool:
    return url.startswith("unix:")


def _check_url(url: str) -> None:
    if is_sentinel_url(url):
        parse_sentinel_url(url)
        return
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"invalid Redis URL {mask_url(url)!r}: expected redis://, rediss://, unix:// "
            "or redis+sentinel://"
        )


async def connect(url: str, *, cluster: bool | None = None, nodes: Sequence[Seed] = ()) -> Client:
    """A client for ``url``, a cluster client when the server runs in cluster mode.

    ``cluster=None`` asks the server (``INFO cluster``) once. Several seed nodes (a URL
    naming several hosts, or ``nodes``) mean a Redis Cluster: the client tries them in
    turn until one answers, so a dead node among them does not stop it.
    """
    _check_url(url)
    sentinel = is_sentinel_url(url)  # its several hosts are Sentinels, not seed nodes
    if sentinel and (cluster or nodes):
        raise ConfigError(
            f"{mask_url(url)} names a Sentinel-managed master, not a Redis Cluster: "
            "leave cluster= and cluster_nodes= unset"
        )
    first, seeds = (url, []) if sentinel else seed_nodes(url, nodes)
    if seeds and unix_url(url):
        raise ConfigError("seed nodes (several hosts, cluster_nodes) need a redis:// URL")
    if len(seeds) > 1:
        if cluster is False:
            raise ConfigError(
                "several Redis nodes were given (a URL naming several hosts, or "
                "cluster_nodes) but cluster=False: seed nodes are for Redis Cluster"
            )
        cluster = True
    opts: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        # Longer than any blocking command we send through redis-py (scheduler polls
        # are capped below it); the lean connection has its own reply deadline.
        "socket_timeout": REPLY_TIMEOUT,
        "health_check_interval": 0,
        # One immediate retry on a broken connection (a pooled socket that died with a
        # Redis restart), none on timeouts: redis-py's default of retrying timeouts ten
        # times with backoff would turn an outage into a long hang, and the worker has
        # its own backoff loops.
        "retry": Retry(NoBackoff(), 1, supported_errors=(rexc.ConnectionError,)),
    }
    if sentinel:
        return await _connect_sentinel(url, parse_sentinel_url(url), opts)
    if cluster is None:
        probe = aioredis.Redis.from_url(url, **opts)
        try:
            async with redis_errors(url):
                try:
                    info = await probe.info("cluster")
                except rexc.NoPermissionError:
                    info = {}  # an ACL user without INFO: a single server is assumed
            cluster = bool(info.get("cluster_enabled"))
        finally:
            await probe.aclose()
    if cluster:
        if seeds:
            opts["startup_nodes"] = [ClusterNode(host, port) for host, port in seeds]
        cluster_client = RedisCluster.from_url(first, **opts)
        try:
            async with redis_errors(url):
                await _initialize(cluster_client)
        except BaseException:
            await cluster_client.aclose()
            raise
        return cluster_client
    return aioredis.Redis.from_url(url, **opts)


async def _initialize(client: RedisCluster) -> None:
    """Read the cluster's slot map. A cluster in a failover may name a dead master in
    it for a moment (a node that has not heard yet), or leave slots uncovered: while some
    node answers, try again for up to ``CONNECT_TIMEOUT`` seconds (none answering fails
    at once)."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            await client.initialize()
            return
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            if "cannot be connected" in str(exc) or not transient(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            log.debug("Redis Cluster not settled (%s); reading its slot map again", exc)
        await asyncio.sleep(0.2)


async def _connect_sentinel(url: str, spec: SentinelSpec, opts: dict[str, Any]) -> Client:
    """A client of the master the Sentinels name: each new connection asks them where
    it is (redis-py's ``SentinelConnectionPool``), so a reconnect after a failover (a
    lost connection, or ``READONLY``: the pool drops that connection) reaches the new
    master. The lean connection (``_conn.py``) opens its sockets through the same pool.

    The Sentinels are asked once now: none reachable is :class:`RedisUnavailable`, a
    master name none of them monitors is a :class:`ConfigError`."""
    sentinel_opts: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT,
        "socket_timeout": SENTINEL_TIMEOUT,
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 0),
    }
    if spec.sentinel_username:
        sentinel_opts["username"] = spec.sentinel_username
    if spec.sentinel_password:
        sentinel_opts["password"] = spec.sentinel_password
    sentinel = Sentinel(list(spec.sentinels), sentinel_kwargs=sentinel_opts)  # type: ignore[no-untyped-call]
    try:
        await _find_master(url, spec, sentinel)
    except BaseException:
        await sentinel.aclose()
        raise
    client: aioredis.Redis = sentinel.master_for(
        spec.master, db=spec.db, username=spec.username, password=spec.password, **opts
    )
    return client


async def _find_master(url: str, spec: SentinelSpec, sentinel: Sentinel) -> None:
    where = mask_url(url)
    errors: list[BaseException] = []
    known: set[str] = set()
    for node in sentinel.sentinels:
        try:
            masters = await node.sentinel_masters()
        except STORE_ERRORS as exc:
            errors.append(exc)
            continue
        found = set(masters) if isinstance(masters, dict) else {m.get("name") for m in masters}
        if spec.master in found:
            return
        known.update(n for n in found if isinstance(n, str))
    if len(errors) == len(sentinel.sentinels):
        error = errors[0]
        if isinstance(error, rexc.ResponseError) and not isinstance(
            error, rexc.AuthenticationError | rexc.NoPermissionError
        ):
            raise ConfigError(
                f"the servers of {where} are not Sentinels ({error}): give the Sentinels' "
                "addresses (port 26379 by default), not the master's"
            ) from error
        raise map_error(url, error) from error
    names = ", ".join(sorted(repr(n) for n in known)) or "none"
    raise ConfigError(
        f"no Sentinel of {where} monitors a master named {spec.master!r} (they monitor: "
        f"{names}): check the name after the addresses"
    )


async def close_client(client: Client) -> None:
    """Close a client made by :func:`connect`, with the Sentinel clients it asks."""
    try:
        await client.aclose()
    finally:
        pool = getattr(client, "connection_pool", None)
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def map_error(url: str, exc: BaseException) -> Exception:
    """The asyncjobs error for a redis-py error (the caller raises it ``from exc``);
    anything else, an asyncjobs error included, comes back as it is."""
    if isinstance(exc, AsyncJobsError):
        return exc  # mapped already (RedisUnavailable is an OSError too)
    where = mask_url(url)
    if isinstance(exc, rexc.AuthenticationError | rexc.AuthorizationError):
        return ConfigError(f"Redis at {where} refused the credentials: {exc}")
    if isinstance(exc, rexc.NoPermissionError):
        return ConfigError(
            f"Redis at {where} denied a command: {exc} "
            "(grant it to this ACL user: see docs/guides/deployment.md)"
        )
    if isinstance(exc, rexc.InvalidResponse | hiredis.ProtocolError):
        return ConfigError(
            f"the server at {where} does not speak the Redis protocol ({exc}): "
            "check the host and port of the Redis URL"
        )
    if isinstance(exc, MasterNotFoundError):
        # Its text lists each Sentinel client's repr: long, and no help to the reader.
        reached = " : " not in str(exc)
        why = (
            "the Sentinels name no master for it now (one is down, or a failover is under way)"
            if reached
            else "no Sentinel answered"
        )
        return RedisUnavailable(f"cannot reach Redis at {where}: {why}")
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError):
        return RedisUnavailable(f"cannot reach Redis at {where}: {exc}")
    if isinstance(exc, rexc.ClusterDownError | rexc.TryAgainError | rexc.RedisClusterException):
        return RedisUnavailable(f"Redis Cluster at {where} is not serving: {exc}")
    if isinstance(exc, rexc.ResponseError):
        msg = str(exc)
        if msg.startswith("UNBLOCKED"):
            # A blocking call ended by a failover (the master became a replica): Redis
            # is passing, as for a cut connection; the caller reconnects and goes on.
            return RedisUnavailable(f"Redis at {where} ended a blocking call ({msg})")
        if "DB index is out of range" in msg or "invalid DB index" in msg:
            if is_sentinel_url(url):
                db = str(parse_sentinel_url(url).db)
            else:
                db = urlsplit(url).path.lstrip("/") or "0"
            return ConfigError(
                f"Redis at {where} has no database {db} ({msg}): use a DB number below "
                "its `databases` setting (16 by default)"
            )
        if isinstance(exc, rexc.OutOfMemoryError) or msg.startswith("OOM"):
            return RedisRefused(
                f"Redis at {where} is out of memory and refuses writes ({msg}): raise "
                "`maxmemory` or free memory; keep `maxmemory-policy noeviction`, as an "
                "evicting policy would drop jobs without a word",
                "oom",
            )
        if is_readonly(exc):
            fix = (
                "a failover is under way (the Sentinels still named the old master): retry shortly"
                if is_sentinel_url(url)
                else "point the URL at the master (after a failover, the new one, or a "
                "name that follows it, such as a redis+sentinel:// URL)"
            )
            return RedisRefused(
                f"Redis at {where} is a read-only replica ({msg}): {fix}", "readonly"
            )
    if isinstance(exc, rexc.RedisError):
        return RedisRefused(f"Redis at {where} refused a command: {exc}")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


def is_readonly(exc: BaseException) -> bool:
    """A ``READONLY`` reply: the server is a replica (a failover demoted it), and the
    command wrote nothing, so a caller may reconnect and send it once more."""
    return isinstance(exc, rexc.ReadOnlyError) or (
        isinstance(exc, rexc.ResponseError) and str(exc).startswith("READONLY")
    )


# What the store catches around every call and maps with map_error: all of redis-py's
# errors, socket errors, and hiredis's (a server that does not speak RESP).
# (redis-py's cluster errors of discovery, such as no seed node reachable or slots not
# covered during a failover, are not RedisErrors.)
STORE_ERRORS = (rexc.RedisError, rexc.RedisClusterException, OSError, hiredis.HiredisError)

REDIS_ERRORS = (rexc.ConnectionError, rexc.TimeoutError, rexc.NoPermissionError, OSError)

# Every command asyncjobs sends (clients, workers, the API and CLI; scripts' inner calls
# included). An ACL user needs these on the namespace's keys (~{namespace}:*), e.g.
#   user jobs on >secret resetkeys ~{asyncjobs}:* resetchannels -@all +ping +info ...
ACL_COMMANDS = (
    "ping", "info", "select",
    "evalsha", "eval", "script|load",
    "lpush", "rpush", "rpop", "lpop", "brpop", "blmove", "lrem", "llen", "lindex", "lrange",
    "hset", "hget", "hdel", "hlen", "hgetall",
    "sadd", "srem", "smembers", "scard",
    "zadd", "zrem", "zrange", "zrevrange", "zrangebyscore", "zcard", "zscan",
    "zremrangebyscore", "zremrangebyrank",
    "get", "mget", "set", "pttl", "incrby", "expire", "pexpire", "exists", "del",
    "hexists", "rename",
    "time", "hmget", "zscore",
    "wait",  # durable enqueue (App(min_replicas=...)) only
)  # fmt: skip

# Errors a background loop outlives by backing off: Redis is away. Catch them with
# ``except Exception`` and ask transient(): one RuntimeError is transient too.
TRANSIENT = (rexc.ConnectionError, rexc.TimeoutError, OSError)
# A Redis Cluster in a failover: its master is down and no replica has taken over yet
# (CLUSTERDOWN, TRYAGAIN, slots not covered, no seed node reachable).
CLUSTER_PASSING = (rexc.ClusterDownError, rexc.TryAgainError, rexc.SlotNotCoveredError)

# The one RuntimeError that means "Redis hiccup": uvloop's, when redis-py writes to a
# transport a connection reset has closed (uvloop/handles/handle.pyx, _ensure_alive).
# Any other RuntimeError is a bug, and must not be retried at DEBUG forever.
# Its text, e.g. "unable to perform operation on <TCPTransport closed=True reading=False
# 0x7f...>; the handler is closed".
_CLOSED_TRANSPORT = re.compile(
    r"unable to perform operation on <\w+ closed=\w+[^<>]*>; the handler is closed"
)


def transient(exc: BaseException) -> bool:
    """Whether a background loop should take ``exc`` for Redis being away (back off,
    retry, warn once) rather than for a bug (log at ERROR with its traceback).

    A failover is passing too: a master demoted to a replica answers writes with
    ``READONLY`` and ends blocking calls with ``UNBLOCKED``; the loop resets its
    connections (see :func:`after_error`) and retries until a master answers at the URL.
    """
    if isinstance(exc, (*TRANSIENT, *CLUSTER_PASSING, rexc.ReadOnlyError)):
        return True
    if type(exc) is rexc.RedisClusterException:
        text = str(exc)
        return "cannot be connected" in text or "not covered" in text
    if isinstance(exc, RedisRefused):
        return exc.reason == "readonly"
    if isinstance(exc, rexc.ResponseError) and str(exc).startswith("UNBLOCKED"):
        return True
    return type(exc) is RuntimeError and _CLOSED_TRANSPORT.fullmatch(str(exc)) is not None


async def after_error(client: Client | None, exc: BaseException) -> None:
    """What a background loop does after a transient error, before backing off: drop
    pooled connections that a reset closed, or that reach a demoted master."""
    readonly = isinstance(exc, rexc.ReadOnlyError) or (
        isinstance(exc, RedisRefused) and exc.reason == "readonly"
    )
    if (isinstance(exc, RuntimeError) or readonly) and client is not None:
        await reset_pool(client)


async def reset_pool(client: Client) -> None:
    """Drop every pooled connection, so none broken by a reset is used again."""
    if isinstance(client, aioredis.Redis):
        try:
            await client.connection_pool.disconnect(inuse_connections=True)
        except Exception as exc:  # pragma: no cover - best effort
            log.debug("pool reset failed: %s", exc)


@contextlib.asynccontextmanager
async def redis_errors(url: str) -> AsyncIterator[None]:
    """Map every redis-py error to ours (see :func:`map_error`)."""
    try:
        yield
    except STORE_ERRORS as exc:
        raise map_error(url, exc) from exc


class Script:
    """One Lua script: EVALSHA, loading it on ``NOSCRIPT`` (after a restart or failover)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: Conn, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


class Scripts:
    """The registry of ``_scripts/*.lua``, read once per process."""

    def __init__(self) -> None:
        root = resources.files("asyncjobs._scripts")
        for name in (
            "push",
            "schedule",
            "fetch",
            "ack",
            "done",
            "requeue",
            "promote",
            "reap",
            "move",
            "land",
            "pickup",
            "push_unique",
            "unlock",
            "lock",
            "clear",
            "drain",
            "result",
            "limit_concurrent",
            "limit_window",
            "limit_bucket",
            "limit_read",
            "iteration",
            "batch",
        ):
            source = (root / f"{name}.lua").read_text()
            # "--#include NAME" lines: the shared code of _scripts/NAME.lua, inlined
            # (batch_lib: the batch bookkeeping; metrics_lib: the per-job metrics).
            source = _INCLUDE.sub(lambda m: (root / f"{m[1]}.lua").read_text(), source)
            setattr(self, name, Script(name, source))

    push: Script
    schedule: Script
    fetch: Script
    ack: Script
    done: Script
    requeue: Script
    promote: Script
    reap: Script
    move: Script
    land: Script
    pickup: Script
    push_unique: Script
    unlock: Script
    lock: Script
    clear: Script
    drain: Script
    result: Script
    limit_concurrent: Script
    limit_window: Script
    limit_bucket: Script
    limit_read: Script
    iteration: Script
    batch: Script


# A line of a script replaced by the named _scripts/*.lua (batch_lib, metrics_lib).
_INCLUDE = re.compile(r"^[ \t]*--#include (\w+)[ \t]*$", re.M)
_SCRIPTS: Scripts | None = None


def scripts() -> Scripts:
    global _SCRIPTS
    if _SCRIPTS is None:
        _SCRIPTS = Scripts()
    return _SCRIPTS
