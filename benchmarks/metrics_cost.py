"""The cost of per-job metrics (App(metrics=True)): no-op drain jobs/s with metrics off
and on, alternated, and the Redis commands per job each way.

``python benchmarks/metrics_cost.py [--jobs N] [--rounds R] [--concurrency C]
[--modes off,on] [REDIS_URL]``: without a URL, starts a private ``redis-server`` on a
free port. Each round defers N no-op jobs (not timed), then times one in-process worker
(uvloop when installed) draining them, once per mode, in turn. Prints each drain, then
per mode the median jobs/s, the worker's CPU time per job (steadier than jobs/s on a
busy machine), the commands per job that ``INFO commandstats`` counted
(commands run inside scripts included), and Redis's CPU seconds per 100k jobs.

To check that metrics off costs nothing, run it with ``--modes off`` from two checkouts
(``PYTHONPATH=...``), alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import redis.asyncio as aioredis

import asyncjobs
from benchmarks import _uvloop
from benchmarks.runner import private_redis


async def _stats(r: aioredis.Redis) -> tuple[dict[str, int], float]:
    info = await r.info("commandstats")
    cpu = await r.info("cpu")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}
    return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


async def drain(url: str, n: int, concurrency: int, metrics: bool) -> dict[str, Any]:
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    app = asyncjobs.App(url, metrics=metrics)
    done = 0
    finished = asyncio.Event()

    @app.job(name="bench.noop", retry=0)
    async def noop() -> None:
        nonlocal done
        done += 1
        if done == n:
            finished.set()

    for start in range(0, n, 5000):
        await noop.defer_many([() for _ in range(min(5000, n - start))])
    s0, c0 = await _stats(r)
    worker = app.worker(queues=["default"], concurrency=concurrency, heartbeat_interval=60)
    task = asyncio.create_task(worker.run())
    t0 = time.perf_counter()
    p0 = time.process_time()
    await finished.wait()
    elapsed = time.perf_counter() - t0

    async def acked() -> bool:
        raw = await r.get("{asyncjobs}:stat:processed")
        return raw is not None and int(raw) >= n

    while not await acked():
        await asyncio.sleep(0.01)
    elapsed_acked = time.perf_counter() - t0
    cpu_us = (time.process_time() - p0) * 1e6 / n
    s1, c1 = await _stats(r)
    worker.stop()
    await task
    await app.aclose()
    await r.aclose()
    per_job = {k: (s1[k] - s0.get(k, 0)) / n for k in s1}
    per_job = {k: round(v, 3) for k, v in sorted(per_job.items()) if v >= 0.001}
    return {
        "rate": n / elapsed_acked,
        "ran_rate": n / elapsed,
        "per_job": per_job,
        "cpu_100k": (c1 - c0) * 100_000 / n,
        "cpu_us": cpu_us,
    }


async def main(url: str, jobs: int, rounds: int, concurrency: int, modes: list[str]) -> None:
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for i in range(rounds):
        for mode in modes:
            res = await drain(url, jobs, concurrency, mode == "on")
            results[mode].append(res)
            print(
                f"round {i + 1} metrics {mode:3}: {res['rate']:>9,.0f} jobs/s, worker CPU "
                f"{res['cpu_us']:.2f} us/job, Redis CPU {res['cpu_100k']:.2f} s per 100k jobs"
            )
    for mode, runs in results.items():
        med = statistics.median(r["rate"] for r in runs)
        cpu = statistics.median(r["cpu_100k"] for r in runs)
        wcpu = statistics.median(r["cpu_us"] for r in runs)
        print(
            f"metrics {mode:3}: median {med:,.0f} jobs/s; worker CPU {wcpu:.2f} us/job; "
            f"Redis CPU {cpu:.2f} s per 100k jobs"
        )
        print(f"             commands per job (last round): {runs[-1]['per_job']}")
    if "on" in results and "off" in results:
        on = statistics.median(r["rate"] for r in results["on"])
        off = statistics.median(r["rate"] for r in results["off"])
        print(f"metrics on / off: {on / off - 1:+.1%} jobs/s")
        won = statistics.median(r["cpu_us"] for r in results["on"])
        woff = statistics.median(r["cpu_us"] for r in results["off"])
        print(f"metrics on / off: {won / woff - 1:+.1%} worker CPU per job")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--modes", default="off,on")
    a = parser.parse_args()
    modes = a.modes.split(",")
    if a.url:
        _uvloop.run(main(a.url, a.jobs, a.rounds, a.concurrency, modes))
    else:
        with private_redis() as server_url:
            _uvloop.run(main(server_url, a.jobs, a.rounds, a.concurrency, modes))
