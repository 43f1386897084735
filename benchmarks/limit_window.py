"""A window limiter of 10 per second across 4 worker processes at concurrency 50, for
60 s (#13): the most grants in any one-second window, by Redis's clock.

``python -m benchmarks.limit_window [--seconds 60] [REDIS_URL]``: without a URL, starts
a private ``redis-server`` on a free port. Keeps the queue fed with more jobs than the
limiter lets through (the workers reschedule the rest), and prints the figures as JSON.
The same check, for 100 jobs, is ``tests/integration/test_limits_processes.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

import asyncjobs
from benchmarks.flow_costs import _server

RATE = 10
PROCESSES = 4
CONCURRENCY = 50

app = asyncjobs.App()
per_second = app.limiter(
    "bench_per_second", "window", RATE, per=1.0, sliding=True, reschedules=10_000, max_backoff=1.0
)
_r: aioredis.Redis | None = None


@app.job(name="bench.limited_call")
async def limited_call(n: int) -> None:
    global _r
    if _r is None:
        _r = aioredis.Redis.from_url(app.redis_url)
    async with per_second.acquire() as lease:
        await _r.rpush("bench:granted", f"{lease.at:.3f}")


def most_in_a_window(times: list[float], width: float = 1.0) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= width - 1e-9:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _spawn(config: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*WORKER, "benchmarks.limit_window:app", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


WORKER = [sys.executable, "-m", "asyncjobs", "worker"]


async def run(url: str, seconds: float) -> dict[str, object]:
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    client = asyncjobs.App(url)

    @client.job(name="bench.limited_call")
    async def call(n: int) -> None: ...

    jobs = int(RATE * seconds * 1.5)
    await call.defer_many([{"n": n} for n in range(jobs)])
    env = {**os.environ, "ASYNCJOBS_REDIS_URL": url, "PYTHONPATH": os.getcwd()}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "worker.toml"
        config.write_text(f"concurrency = {CONCURRENCY}\nscheduler_poll = 0.2\n")
        procs = [_spawn(config, env) for _ in range(PROCESSES)]
        t0 = time.monotonic()
        try:
            await asyncio.sleep(seconds)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
    elapsed = time.monotonic() - t0
    times = sorted(float(t) for t in await r.lrange("bench:granted", 0, -1))
    await client.aclose()
    await r.aclose()
    return {
        "rate": RATE,
        "processes": PROCESSES,
        "concurrency": CONCURRENCY,
        "seconds": round(elapsed, 1),
        "granted": len(times),
        "most_in_any_second": most_in_a_window(times),
        "grants_per_second": round(len(times) / (times[-1] - times[0]), 2) if times else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("url", nargs="?")
    ns = parser.parse_args()
    if ns.url:
        print(json.dumps(asyncio.run(run(ns.url, ns.seconds))))
    else:
        with _server() as url:
            print(json.dumps(asyncio.run(run(url, ns.seconds))))


if __name__ == "__main__":
    main()
