"""The web examples under real servers with real HTTP: 200 concurrent requests each
defer a job, and a real worker runs every one of them exactly once.

- FastAPI (``examples/fastapi_app.py``) under ``uvicorn.Server`` in this event loop, and
  under the ``uvicorn examples.fastapi_app:api`` command in a subprocess;
- aiohttp (``examples/aiohttp_app.py``) under ``web.AppRunner`` + ``TCPSite``, with a
  worker process, and with its embedded worker (``app.run_worker`` in the server's loop).

Worker processes run ``asyncjobs worker tests.apps.web_worker:app``: the example jobs
plus a middleware counting finished runs by jid in Redis. Every process finds the test
Redis through ``ASYNCJOBS_REDIS_URL``; in-process, the example app's ``redis_url`` is set
to it (``App()`` read the environment when the module was imported).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from aiohttp import web

import asyncjobs
from asyncjobs import api
from examples import aiohttp_app, fastapi_app, tasks
from tests.apps.web_worker import RUNS, count_runs
from tests.conftest import ROOT, WORKER_CMD, subprocess_env, text, wait_for

N = 200


class Process:
    """A subprocess whose output goes to a file, shown when an assertion fails."""

    def __init__(self, args: list[str], redis_url: str, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                args, env=subprocess_env(redis_url), cwd=ROOT, stdout=out, stderr=out
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: self.proc.poll() is not None, timeout=timeout)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
async def example_app(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """The example app, pointed at the test Redis, with its runs counted."""
    app = tasks.app
    monkeypatch.setattr(app, "redis_url", redis_url)
    monkeypatch.setattr(app, "server_middleware", asyncjobs.Chain([count_runs]))
    assert app._redis is None
    yield
    assert app._redis is None, "the web app's shutdown left the pool open"


@pytest.fixture
def worker(redis_url: str, tmp_path: Path) -> Iterator[Process]:
    """``asyncjobs worker tests.apps.web_worker:app`` against the test Redis."""
    args = [*WORKER_CMD, "worker", "tests.apps.web_worker:app"]
    args += ["-q", "critical,2", "-q", "default,1", "-c", "20"]
    proc = Process(args, redis_url, tmp_path / "worker.log")
    yield proc
    proc.kill()


async def post_signups(base_url: str, n: int = N) -> list[str]:
    """``n`` concurrent ``POST /signups``, one connection each; their jids, in order."""
    jids = [""] * n
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def one(i: int) -> None:
            body = {"user_id": i, "email": f"user{i}@example.com"}
            r = await client.post("/signups", json=body)
            assert r.status_code == 202, r.text
            jids[i] = r.json()["jid"]

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
    assert len(set(jids)) == n and all(jids)
    return jids


async def wait_all_ran(redis: aioredis.Redis, jids: list[str], why: str = "") -> None:
    async def done() -> bool:
        return await redis.hlen(RUNS) >= len(jids)

    try:
        await wait_for(done, timeout=30)
    except TimeoutError:
        pytest.fail(f"{await redis.hlen(RUNS)} of {len(jids)} jobs ran\n{why}")


async def assert_ran_exactly_once(redis: aioredis.Redis, redis_url: str, jids: list[str]) -> None:
    """Every jid counted once, none other; nothing left queued, scheduled, retried, dead."""
    runs = {text(k): int(v) for k, v in (await redis.hgetall(RUNS)).items()}
    assert runs == dict.fromkeys(jids, 1)
    async with asyncjobs.App(redis_url, namespace=tasks.app.keys.namespace) as app:
        stats = await api.Stats.fetch(app)
        assert (stats.enqueued, stats.scheduled, stats.retries, stats.dead) == (0, 0, 0, 0)
        assert stats.processes == 0  # every worker said goodbye


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_fastapi_under_uvicorn_in_process(
    example_app: None, redis: aioredis.Redis, redis_url: str, worker: Process
) -> None:
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(fastapi_app.api, lifespan="on", log_level="warning", ws="none")
    server = uvicorn.Server(config)
    with sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                await wait_for(lambda: server.started or server.should_exit)
                assert server.started
                pool = tasks.app._redis
                assert pool is not None  # the lifespan connected at startup
                jids = await post_signups(f"http://127.0.0.1:{port}")
                assert tasks.app._redis is pool  # every request used the one shared pool
            finally:
                server.should_exit = True  # graceful: runs the lifespan's shutdown
    # the example_app fixture checks that the lifespan closed the pool
    await wait_all_ran(redis, jids, worker.output())
    assert await worker.stop() == 0, worker.output()
    await assert_ran_exactly_once(redis, redis_url, jids)


async def test_fastapi_under_the_uvicorn_command(
    redis: aioredis.Redis, redis_url: str, worker: Process, tmp_path: Path, free_tcp_port: int
) -> None:
    base = f"http://127.0.0.1:{free_tcp_port}"
    server = Process(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:api"]
        + ["--host", "127.0.0.1", "--port", str(free_tcp_port), "--no-access-log"],
        redis_url,
        tmp_path / "uvicorn.log",
    )
    try:

        async def up() -> bool:
            assert server.proc.poll() is None, server.output()
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{base}/openapi.json")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(up, timeout=20)
        jids = await post_signups(base)
        # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal it caught
        # so that the exit status says why it ended.
        assert await server.stop() in (0, -signal.SIGTERM), server.output()
    finally:
        server.kill()
    log = server.output()
    assert "Application shutdown complete." in log, log
    assert "Traceback" not in log and "ERROR" not in log, log
    await wait_all_ran(redis, jids, worker.output())
    assert await worker.stop() == 0, worker.output()
    await assert_ran_exactly_once(redis, redis_url, jids)


@pytest.mark.parametrize("embedded", [False, True], ids=["worker-process", "embedded-worker"])
async def test_aiohttp_under_app_runner(
    example_app: None,
    redis: aioredis.Redis,
    redis_url: str,
    tmp_path: Path,
    embedded: bool,
) -> None:
    worker = None
    if not embedded:
        args = [*WORKER_CMD, "worker", "tests.apps.web_worker:app", "-c", "20"]
        worker = Process(args + ["-q", "critical,2", "-q", "default,1"], redis_url, tmp_path / "w")
    try:
        runner = web.AppRunner(aiohttp_app.make_app(embedded_worker=embedded))
        await runner.setup()  # runs the cleanup_ctx startups: the pool (and worker)
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            port = runner.addresses[0][1]
            pool = tasks.app._redis
            assert pool is not None
            jids = await post_signups(f"http://127.0.0.1:{port}")
            assert tasks.app._redis is pool

            # defer() validates: a bad argument is a 422 naming it, and enqueues nothing
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                r = await client.post("/signups", json={"user_id": "seven", "email": "a@b"})
                assert r.status_code == 422
                assert r.json()["argument"] == "user_id"
                assert "Expected `int`, got `str`" in r.json()["error"]
                r = await client.post("/signups", json={"email": "a@b"})
                assert (r.status_code, r.json()["argument"]) == (422, "user_id")
                r = await client.post("/signups", content=b"not json")
                assert r.status_code == 400

            if embedded:
                await wait_all_ran(redis, jids)  # while the web app runs
        finally:
            await runner.cleanup()  # stops the embedded worker, then closes the pool
        if worker is not None:
            await wait_all_ran(redis, jids, worker.output())
            assert await worker.stop() == 0, worker.output()
    finally:
        if worker is not None:
            worker.kill()
    await assert_ran_exactly_once(redis, redis_url, jids)
