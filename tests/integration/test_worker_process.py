"""A real ``asyncjobs worker`` subprocess: weights, exactly-once, SIGTERM, SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.apps import recorder
from tests.conftest import WORKER_CMD, loads, subprocess_env, text, wait_for


@pytest.fixture
def spawn(redis_url: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        if p.stdout is not None:
            # shown by pytest when the test failed
            print(p.stdout.read().decode(errors="replace")[-3000:])  # noqa: T201
            p.stdout.close()


def start_worker(
    procs: list[subprocess.Popen[bytes]],
    redis_url: str,
    *args: str,
    app: str = "tests.apps.recorder:app",
) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        [*WORKER_CMD, "worker", app, *args],
        env=subprocess_env(redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    procs.append(p)
    return p


async def enqueue(redis_url: str, queue: str, ns: range, sleep: float = 0.0) -> None:
    """Enqueue ``record`` jobs through the recorder app, pointed at the test Redis."""
    recorder.app.redis_url = redis_url
    try:
        await recorder.record.configure(queue=queue).defer_many([(n, sleep) for n in ns])
    finally:
        await recorder.app.aclose()


async def test_weighted_queues_exactly_once(
    redis_url: str, redis: aioredis.Redis, spawn: list[subprocess.Popen[bytes]]
) -> None:
    await enqueue(redis_url, "critical", range(0, 1000))
    await enqueue(redis_url, "default", range(1000, 2000))
    await enqueue(redis_url, "low", range(2000, 3000))
    p = start_worker(
        spawn, redis_url, "-q", "critical,3", "-q", "default,2", "-q", "low,1", "-c", "10"
    )
    await wait_for(lambda: _ran_count(redis, 3000), timeout=30)
    ran = [text(x).split(":") for x in await redis.lrange("test:ran", 0, -1)]
    assert Counter(int(n) for n, _ in ran) == Counter(range(3000)), "each job exactly once"
    # While all three queues were non-empty (critical, weight 3, empties first after
    # about 2,000 jobs), shares follow the weights 3:2:1 within 5 points.
    first = [q for _, q in ran[:1500]]
    shares = {q: first.count(q) / len(first) for q in ("critical", "default", "low")}
    assert abs(shares["critical"] - 3 / 6) < 0.05, shares
    assert abs(shares["default"] - 2 / 6) < 0.05, shares
    assert abs(shares["low"] - 1 / 6) < 0.05, shares
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0


async def _ran_count(redis: aioredis.Redis, n: int) -> bool:
    return int(await redis.llen("test:ran")) >= n


async def test_sigterm_with_running_jobs_exits_0_and_loses_nothing(
    redis_url: str, redis: aioredis.Redis, spawn: list[subprocess.Popen[bytes]]
) -> None:
    await enqueue(redis_url, "default", range(20), sleep=5.0)
    p = start_worker(spawn, redis_url, "-c", "5", "--timeout", "0.5")
    await wait_for(lambda: _started(redis, 5), timeout=10)
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0
    out = p.stdout.read().decode() if p.stdout else ""
    assert "Traceback" not in out
    queued = [loads(x)["args"]["n"] for x in await redis.lrange("{asyncjobs}:queue:default", 0, -1)]
    assert sorted(queued) == list(range(20)), "all 20 jobs are back in the queue"
    assert not await redis.keys("{asyncjobs}:inflight:*")


async def test_sigkill_mid_run_leaves_every_unfinished_job_in_redis(
    redis_url: str, redis: aioredis.Redis, spawn: list[subprocess.Popen[bytes]]
) -> None:
    await enqueue(redis_url, "default", range(200), sleep=0.05)
    p = start_worker(spawn, redis_url, "-c", "10")
    await wait_for(lambda: _ran_count(redis, 30), timeout=10)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    done = {int(text(x).split(":")[0]) for x in await redis.lrange("test:ran", 0, -1)}
    queued = {loads(x)["args"]["n"] for x in await redis.lrange("{asyncjobs}:queue:default", 0, -1)}
    inflight: set[int] = set()
    for key in await redis.keys("{asyncjobs}:inflight:*"):
        inflight |= {loads(v)["args"]["n"] for v in (await redis.hgetall(key)).values()}
    assert inflight, "the kill caught jobs in flight"
    assert done | queued | inflight == set(range(200)), "nothing lost"
    assert not (queued & inflight)


async def test_sigterm_during_startup_exits_0_and_fetches_nothing(
    redis_url: str, redis: aioredis.Redis, spawn: list[subprocess.Popen[bytes]]
) -> None:
    from tests.apps import gated

    gated.app.redis_url = redis_url
    try:
        await gated.touch.defer_many([(n,) for n in range(5)])
    finally:
        await gated.app.aclose()
    p = start_worker(spawn, redis_url, app="tests.apps.gated:app")

    async def booting() -> bool:
        return bool(await redis.exists("test:booting"))

    await wait_for(booting, timeout=10)  # in its startup hook, before it registers
    p.send_signal(signal.SIGTERM)
    await redis.set("test:go", 1)
    assert p.wait(10) == 0
    out = p.stdout.read().decode() if p.stdout else ""
    assert "Traceback" not in out
    assert "stopped before it started" in out
    assert await redis.llen("{asyncjobs}:queue:default") == 5, "nothing was fetched"
    assert not await redis.exists("test:ran")
    assert await redis.exists("test:shutdown-hook"), "shutdown hooks ran"
    assert not await redis.keys("{asyncjobs}:inflight:*")
    assert not await redis.keys("{asyncjobs}:process:*")


async def _started(redis: aioredis.Redis, n: int) -> bool:
    return int(await redis.llen("test:started")) >= n


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nosuch:app"], "cannot import module 'nosuch'"),
        (["tests.apps.recorder:nope"], "has no attribute 'nope'"),
        (["tests.apps.recorder:app", "-q", "critical,x"], "invalid queue weight"),
        (
            ["tests.apps.recorder:app", "-r", "redis://127.0.0.1:1/0"],
            "cannot reach Redis at redis://127.0.0.1:1/0",
        ),
        (["tests.apps.recorder:app", "-r", "http://x"], "invalid Redis URL"),
    ],
)
def test_bad_input_one_line_exit_2(redis_url: str, args: list[str], needle: str) -> None:
    r = subprocess.run(
        [*WORKER_CMD, "worker", *args],
        env=subprocess_env(redis_url),
        capture_output=True,
        timeout=30,
    )
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_config_file_with_unknown_key(redis_url: str, tmp_path: pytest.TempPathFactory) -> None:
    cfg = tmp_path / "asyncjobs.toml"  # type: ignore[operator]
    cfg.write_text('app = "tests.apps.recorder:app"\nconcurency = 5\n')
    r = subprocess.run(
        [*WORKER_CMD, "worker", "--config", str(cfg)],
        env=subprocess_env(redis_url),
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "unknown field `concurency`" in r.stderr.decode()


async def test_processes_supervisor_restarts_children_and_stops_cleanly(
    redis_url: str, redis: aioredis.Redis, spawn: list[subprocess.Popen[bytes]]
) -> None:
    sup = start_worker(spawn, redis_url, "--processes", "2")

    async def pids() -> set[str]:
        return {text(m) for m in await redis.smembers("{asyncjobs}:processes")}

    await wait_for(lambda: _count(pids, 2), timeout=20)
    first = await pids()
    victim = int(sorted(first)[0].split(":")[1])
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> bool:
        # A replacement registered, and the survivor is still there. (The dead one's
        # record may be gone already: a worker on the same host reaps it at once.)
        now = await pids()
        return len(now - first) >= 1 and len(now & first) >= 1

    await wait_for(replaced, timeout=20)
    await enqueue(redis_url, "default", range(50))
    try:
        await wait_for(lambda: _ran_count(redis, 50), timeout=30)
    except TimeoutError:
        where = {
            "queue": await redis.llen("{asyncjobs}:queue:default"),
            "started": await redis.llen("test:started"),
            "ran": await redis.llen("test:ran"),
            "keys": sorted(text(k) for k in await redis.keys("*")),
        }
        raise AssertionError(f"the 50 jobs did not all run: {where}") from None
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(20) == 0
    out = sup.stdout.read().decode() if sup.stdout else ""
    assert "restarting" in out and "all worker processes stopped" in out


async def _count(pids: Any, n: int) -> bool:
    return len(await pids()) >= n
