"""Scheduled-job lateness: how long after its due time a scheduled job starts.

    python -m benchmarks.lateness [--jobs 300] [--processes 1 4]

Defers jobs with delays spread uniformly over 0.2-5 s (all at once, so the worker is
idle between due times), runs `asyncjobs worker benchmarks.lateness:app --processes N`
against a private redis-server, and reports start - due: p50, p99, max, and the minimum
(negative would mean a job started early). Each job records its own start time
(time.time() at entry) in Redis; due times are the wall-clock times given to `at=`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import signal
import statistics
import subprocess
import sys
import time

import redis.asyncio as aioredis

import asyncjobs
from tests.devserver import RedisProcess

app = asyncjobs.App(namespace="lateness")
_r: aioredis.Redis | None = None


@app.job(name="lateness.due")
async def due(at: float) -> None:
    started = time.time()
    global _r
    if _r is None:
        _r = aioredis.Redis.from_url(app.redis_url)
    await _r.rpush("lateness:ms", repr((started - at) * 1000))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def start_worker(processes: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "asyncjobs", "worker", "benchmarks.lateness:app",
         "--processes", str(processes), "-c", "50", "--log-level", "WARNING"],
        env=env,
    )  # fmt: skip


async def run(url: str, jobs: int, processes: int) -> dict[str, float]:
    app.redis_url = url
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    env = {**os.environ, "ASYNCJOBS_REDIS_URL": url}
    worker = start_worker(processes, env)
    try:
        while await client.scard("{lateness}:processes") < processes:
            await asyncio.sleep(0.05)
        rng = random.Random(7)
        now = time.time()
        for _ in range(jobs):
            at = now + rng.uniform(0.2, 5.0)
            await due.configure(at=dt.datetime.fromtimestamp(at, dt.UTC)).defer(at)
        deadline = time.monotonic() + 30
        while await client.llen("lateness:ms") < jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        ms = [float(x) for x in await client.lrange("lateness:ms", 0, -1)]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        await client.aclose()
        await app.aclose()
    return {
        "jobs": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": pct(ms, 99),
        "max_ms": max(ms),
        "min_ms": min(ms),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    with RedisProcess() as server:
        for n in args.processes:
            r = asyncio.run(run(server.url, args.jobs, n))
            print(
                f"processes={n}: {r['jobs']} jobs, lateness p50 {r['p50_ms']:.2f} ms, "
                f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms, "
                f"min {r['min_ms']:+.2f} ms ({'never early' if r['min_ms'] >= 0 else 'EARLY'})"
            )


if __name__ == "__main__":
    main()
