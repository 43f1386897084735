"""Redis commands per job for unique and expiring jobs, next to a plain job (#13).

``python benchmarks/flow_costs.py [REDIS_URL]``: without a URL, starts a private
``redis-server`` on a free port. Defers 1,000 jobs of each kind, runs them with one
worker, and prints the calls per job that ``INFO commandstats`` counted for the defers
and for the runs (commands run inside scripts included; rare ones left out).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import Unique
from benchmarks.runner import private_redis

N = 1000


async def _stats(r: aioredis.Redis) -> dict[str, int]:
    info = await r.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in info.items()}


def _per_job(a: dict[str, int], b: dict[str, int]) -> dict[str, float]:
    out = {k: (b[k] - a.get(k, 0)) / N for k in b}
    return {k: round(v, 2) for k, v in sorted(out.items()) if v >= 0.05}


async def measure(url: str, label: str, **options: Any) -> None:
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    app = asyncjobs.App(url)
    done = 0

    @app.job(name=f"flow_costs.{label}", **options)
    async def job(n: int) -> None:
        nonlocal done
        done += 1

    await app.connect()
    s0 = await _stats(r)
    for i in range(N):
        await job.defer(i)
    s1 = await _stats(r)
    async with app.run_worker(concurrency=1, heartbeat_interval=60):
        while done < N:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # background unlocks land
    s2 = await _stats(r)
    await app.aclose()
    await r.aclose()
    print(f"{label:10} defer: {_per_job(s0, s1)}")
    print(f"{label:10} run:   {_per_job(s1, s2)}")


async def main(url: str) -> None:
    await measure(url, "plain")
    await measure(url, "unique", unique=True)
    await measure(url, "start", unique=Unique(until="start"))
    await measure(url, "executing", unique=Unique(until="executing"))
    await measure(url, "expires", expires_in=60)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with private_redis() as server_url:
            asyncio.run(main(server_url))
