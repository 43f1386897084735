"""The store maps every Redis failure at its boundary: `App`/`defer`, `asyncjobs.api` and
the CLI see asyncjobs errors only, one line each in the CLI.

Each case runs against private servers (never the shared one): a DB number out of
range, ports that do not speak RESP (an HTTP server, an SSH-like banner), a server out
of memory, a read-only replica, and a server that is gone.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio
import pytest
import redis

import asyncjobs
from asyncjobs import api
from asyncjobs._errors import AsyncJobsError
from tests.conftest import WORKER_CMD, subprocess_env
from tests.devserver import RedisProcess, free_port
from tests.proxy import TcpProxy


@dataclass
class Case:
    url: str
    error: type[AsyncJobsError]
    match: str
    # The server answers reads and refuses writes (OOM, READONLY).
    writes_only: bool = False
    reason: str | None = None


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def http_server() -> Iterator[int]:
    """``python -m http.server`` on a free port: speaks HTTP, not RESP."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield port
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def banner_server() -> Iterator[int]:
    """A server that greets like SSH and then reads forever (it speaks first)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    conns: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        for c in conns:
            c.close()


def _seed_live_process(url: str) -> None:
    """A live process record, so that ``quiet --all`` has someone to write to."""
    r = redis.Redis.from_url(url)
    r.sadd("{asyncjobs}:processes", "host:1:abc")
    r.hset(
        "{asyncjobs}:process:host:1:abc",
        mapping={"info": "{}", "busy": 0, "beat": time.time(), "quiet": 0},
    )
    r.close()


def _make_replica(replica: RedisProcess, master: RedisProcess) -> None:
    m = redis.Redis.from_url(master.url)
    m.config_set("repl-diskless-sync-delay", 0)  # sync now, not in 5 s
    m.close()
    r = redis.Redis.from_url(replica.url)
    r.replicaof("127.0.0.1", master.port)
    deadline = time.monotonic() + 10
    while r.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.02)
    r.close()


CASES = ["wrong-db", "http", "banner", "oom", "readonly", "stopped"]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    name = request.param
    if name == "wrong-db":
        with RedisProcess() as server:
            yield Case(server.make_url(db=99), asyncjobs.ConfigError, "has no database 99")
    elif name == "http":
        with http_server() as port:
            url = f"redis://127.0.0.1:{port}/0"
            yield Case(url, asyncjobs.ConfigError, "does not speak the Redis protocol")
    elif name == "banner":
        with banner_server() as port:
            url = f"redis://127.0.0.1:{port}/0"
            yield Case(url, asyncjobs.ConfigError, "does not speak the Redis protocol")
    elif name == "oom":
        with RedisProcess() as server:
            _seed_live_process(server.url)
            redis.Redis.from_url(server.url).config_set("maxmemory", 1)
            yield Case(
                server.url,
                asyncjobs.RedisRefused,
                "out of memory .* raise `maxmemory`",
                writes_only=True,
                reason="oom",
            )
    elif name == "readonly":
        with RedisProcess() as master, RedisProcess() as replica:
            _seed_live_process(master.url)
            _make_replica(replica, master)  # a full sync: the replica has the record
            yield Case(
                replica.url,
                asyncjobs.RedisRefused,
                "read-only replica .* point the URL at the master",
                writes_only=True,
                reason="readonly",
            )
    else:
        url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
        yield Case(url, asyncjobs.RedisUnavailable, "cannot reach Redis")


def _app(url: str, **options: object) -> tuple[asyncjobs.App, asyncjobs.Job[..., None]]:
    app = asyncjobs.App(url, **options)  # type: ignore[arg-type]

    async def ping(n: int) -> None:
        pass

    return app, app.job(name="ping")(ping)


@pytest.mark.parametrize("cluster", [None, False])
async def test_defer_raises_a_mapped_error(case: Case, cluster: bool | None) -> None:
    # cluster=False skips the INFO probe: the lean connection meets the failure first.
    app, job = _app(case.url, cluster=cluster)
    try:
        with anyio.fail_after(15):
            for call in (
                lambda: job.defer(1),
                lambda: job.configure(delay=60).defer(1),
                lambda: job.defer_many([(1,), (2,)]),
            ):
                with pytest.raises(case.error, match=case.match) as info:
                    await call()
                if case.reason is not None:
                    assert getattr(info.value, "reason", None) == case.reason
    finally:
        await app.aclose()


async def test_api_raises_a_mapped_error(case: Case) -> None:
    app, _ = _app(case.url)
    try:
        with anyio.fail_after(15):
            with pytest.raises(case.error, match=case.match):
                await api.ProcessSet(app).send("quiet", ["host:1:abc"])
            if case.writes_only:
                await api.Stats.fetch(app)  # reads still work
                return
            for read in (
                lambda: api.Stats.fetch(app),
                lambda: api.queues(app),
                lambda: api.DeadSet(app).entries(),
                lambda: api.find_job(app, "nope"),
                lambda: api.ProcessSet(app).list(),
            ):
                with pytest.raises(case.error, match=case.match):
                    await read()
    finally:
        await app.aclose()


async def test_cli_prints_one_line_and_exits_2(case: Case) -> None:
    # A write for the cases that refuse writes only, a read for the others.
    args = ["quiet", "--all"] if case.writes_only else ["stats"]
    with anyio.fail_after(30):
        r = await anyio.run_process(
            [*WORKER_CMD, *args, "--redis-url", case.url],
            env=subprocess_env(case.url),
            check=False,
        )
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("asyncjobs: error: ")
    assert re.search(case.match, err), err


async def test_redis_gone_after_connect_is_unavailable() -> None:
    with RedisProcess() as server:
        app, job = _app(server.url)
        await job.defer(1)
        await api.Stats.fetch(app)
        server.stop()
        try:
            with anyio.fail_after(15):
                with pytest.raises(asyncjobs.RedisUnavailable, match="cannot reach Redis"):
                    await job.defer(1)
                with pytest.raises(asyncjobs.RedisUnavailable, match="cannot reach Redis"):
                    await api.Stats.fetch(app)
        finally:
            await app.aclose()


Write = Callable[[asyncjobs.App, asyncjobs.Job[..., None]], Awaitable[object]]
WRITES: dict[str, tuple[Write, str, str]] = {
    # name: (how to write, the command the replica sees, the key it writes on the master)
    "defer": (lambda app, job: job.defer(1), "evalsha", "{asyncjobs}:queue:default"),
    "defer_many": (
        lambda app, job: job.defer_many([(1,), (2,)]),
        "evalsha",
        "{asyncjobs}:queue:default",
    ),
    "schedule": (
        lambda app, job: job.configure(delay=60).defer(1),
        "evalsha",
        "{asyncjobs}:schedule",
    ),
    "api": (
        lambda app, job: api.ProcessSet(app).send("quiet", ["x"]),
        "rpush",
        "{asyncjobs}:control:x",
    ),
}


@pytest.mark.parametrize("write", list(WRITES))
async def test_readonly_is_sent_again_once_after_a_reconnect(write: str) -> None:
    """A failover: the URL's name (here a proxy) now leads to the new master, but the
    open connections still reach the old one, a replica now: the write is refused with
    READONLY, the store reconnects and sends it once more, to the new master."""
    fn, command, key = WRITES[write]
    with RedisProcess() as master, RedisProcess() as old:
        async with TcpProxy("127.0.0.1", old.port) as proxy:
            app, job = _app(f"redis://127.0.0.1:{proxy.port}/0")
            try:
                await job.defer(0)  # both connections open, to the old master
                await api.Stats.fetch(app)
                _make_replica(old, master)
                proxy.upstream_port = master.port  # new connections reach the new master
                r_old = redis.Redis.from_url(old.url)
                r_old.config_resetstat()
                with anyio.fail_after(10):
                    await fn(app, job)
                stats = r_old.info("commandstats")
                r_old.close()
                sent = stats[f"cmdstat_{command}"]
                # Refused once: a script fails inside (failed), a command before it runs
                # (rejected); calls also counts what the replica applies from its master.
                assert sent["failed_calls"] + sent["rejected_calls"] == 1, stats
                r_new = redis.Redis.from_url(master.url)
                assert r_new.exists(key)
                r_new.close()
            finally:
                await app.aclose()


async def test_readonly_twice_raises_after_one_retry() -> None:
    with RedisProcess() as master, RedisProcess() as replica:
        app, job = _app(replica.url)
        try:
            await job.defer(0)
            _make_replica(replica, master)
            r = redis.Redis.from_url(replica.url)
            r.config_resetstat()
            with anyio.fail_after(10), pytest.raises(asyncjobs.RedisRefused, match="read-only"):
                await job.defer(1)
            sent = r.info("commandstats")["cmdstat_evalsha"]
            r.close()
            # The first try and one more after the reconnect.
            assert sent["failed_calls"] + sent["rejected_calls"] == 2, sent
        finally:
            await app.aclose()
