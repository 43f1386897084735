"""A window limiter across processes (#13): 10 per second, 4 worker processes at
concurrency 50 each, every call let through is timed by Redis's clock; no one-second
window holds more than 10."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import anyio
import redis.asyncio as aioredis

import asyncjobs
from tests.apps import limited
from tests.conftest import WORKER_CMD, subprocess_env, text
from tests.faults._support import report, write_config

JOBS = 100


def spawn(url: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*WORKER_CMD, "worker", "tests.apps.limited:app", "--config", str(config)],
            env=subprocess_env(url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def most_in_a_window(times: list[float], width: float = 1.0) -> int:
    """The most grants in any half-open window [t, t + width) (times sorted)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= width - 1e-9:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_window_of_10_per_second_holds_across_4_processes_at_concurrency_50(
    redis_url: str, redis: aioredis.Redis, tmp_path: Path
) -> None:
    app = asyncjobs.App(redis_url)

    # The worker's job, by name (its app reads the URL from the environment).
    @app.job(name=limited.call_api.name)
    async def call_api(n: int) -> None: ...

    await call_api.defer_many([{"n": n} for n in range(JOBS)])
    config = write_config(tmp_path, concurrency=50, scheduler_poll=0.2)
    procs = [spawn(redis_url, config, tmp_path / f"w{i}.log") for i in range(4)]
    t0 = time.monotonic()
    try:
        with anyio.fail_after(60):
            while await redis.llen("test:granted") < JOBS:
                await anyio.sleep(0.1)
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        await app.aclose()
    entries = [text(e).split() for e in await redis.lrange("test:granted", 0, -1)]
    assert sorted(int(n) for n, _ in entries) == list(range(JOBS))
    times = sorted(float(t) for _, t in entries)
    most = most_in_a_window(times)
    report(
        "window 10/s, 4 processes x 50",
        jobs=JOBS,
        seconds=round(elapsed, 1),
        most_in_any_second=most,
        span=round(times[-1] - times[0], 2),
    )
    assert most <= 10
    # Not starved either: 100 calls at 10 per second take about 9 s of grants.
    assert times[-1] - times[0] < 20
    assert await redis.get("{asyncjobs}:stat:failed") is None
