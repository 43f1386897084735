"""Shared fixtures: a private redis-server per session (free port, no persistence), a
clean database per test, and an App bound to it."""

from __future__ import annotations

import gc
import inspect
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from tests.devserver import RedisProcess

ROOT = Path(__file__).resolve().parent.parent


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: no error without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """How ``pytest -n N --dist loadscope`` (pytest-xdist; scripts/check) shares the tests
    out: a file's tests run in one process, so a module's servers (a Cluster, a Sentinel
    set) start once; the fault tests (tests/faults) all run one after another in one
    process, first, so two of them never SIGKILL, stall or restart servers at the same
    time, and each one's deadlines meet one fault at a time. Other ``--dist`` modes are
    left as they are."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class FaultsTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/faults" if path.startswith("tests/faults/") else path

    return FaultsTogether(config, log)


@pytest.fixture(autouse=True)
def _collect_garbage_at_teardown() -> Iterator[None]:
    """A socket or transport a test leaves open is reported (an unraisable
    ``ResourceWarning``, an error here) by the test that leaked it, not by whichever later
    test the garbage collector happens to run in."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    import redis

    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    r.close()
    return redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def app(redis_url: str) -> AsyncIterator[asyncjobs.App]:
    application = asyncjobs.App(redis_url)
    yield application
    await application.aclose()


async def wait_for(
    condition: Callable[[], Awaitable[object]] | Callable[[], object],
    timeout: float = 5.0,
    interval: float = 0.01,
) -> None:
    """Poll ``condition`` until truthy; fail the test after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while True:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await anyio.sleep(interval)


async def wait_settled(
    app: asyncjobs.App, worker: asyncjobs.Worker, queues: list[str], timeout: float = 10
) -> None:
    """Wait until every job has run. A job is always in a queue, the schedule, or the
    process's landing list or in-flight hash (invariant 1; a job that ends pushes what
    it deferred, and the callbacks and chain steps it fires, before its acknowledgement
    takes it out), so all of them empty at one instant (one MULTI: a job moves on
    between separate reads) means done. The retry and dead sets are not waited for."""
    store = await app.open_store()
    keys = store.keys
    places = [
        *(keys.queue(q) for q in queues),
        keys.landing(worker.process_id),
        keys.inflight(worker.process_id),
    ]

    async def empty() -> bool:
        async with store.client.pipeline(transaction=True) as pipe:
            pipe.exists(*places)
            pipe.zcard(keys.schedule)
            found = await pipe.execute()
        return not any(found)

    await wait_for(empty, timeout=timeout)
    await worker.wait_idle()


@asynccontextmanager
async def running(worker: asyncjobs.Worker) -> AsyncIterator[asyncjobs.Worker]:
    """Run ``worker`` in the background for the block; stop it (gracefully) after."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(5):
            await worker.wait_started()
        try:
            yield worker
        finally:
            worker.stop()


def text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def loads(raw: Any) -> Any:
    """``json.loads`` for a value read with redis-py (typed loosely there)."""
    return json.loads(raw)


def subprocess_env(redis_url: str, **extra: str) -> dict[str, str]:
    """Environment for a worker subprocess: the test Redis, and tests/ importable."""
    env = dict(os.environ)
    env["ASYNCJOBS_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


WORKER_CMD = [sys.executable, "-m", "asyncjobs"]


async def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``asyncjobs ARGS`` against the test Redis (env), without raising on failure."""
    return await anyio.run_process([*WORKER_CMD, *args], env=subprocess_env(redis_url), check=False)


def spawn_worker(
    redis_url: str, *args: str, app: str = "tests.apps.recorder:app"
) -> subprocess.Popen[bytes]:
    """Start ``asyncjobs worker APP ARGS`` against the test Redis, output discarded."""
    return subprocess.Popen(
        [*WORKER_CMD, "worker", app, *args],
        env=subprocess_env(redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def all_sent(jids: list[str | None]) -> list[str]:
    """The jids of ``defer_many``, asserting that no middleware stopped one."""
    assert None not in jids, jids
    return [j for j in jids if j is not None]
