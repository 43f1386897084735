"""What durable enqueue costs: defers per second with ``min_replicas=0`` and ``1``.

``python benchmarks/durable_cost.py``: starts a master, a replica and three Sentinels
(``tests.sentinel``, so run it from the checkout), then defers ``N`` jobs through the
``redis+sentinel://`` URL, one at a time (each ``defer`` awaited before the next) and
from 50 concurrent tasks, with durable mode off and on, alternating, twice each. It also
prints the commands per defer that ``INFO commandstats`` counted on the master.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncjobs
from tests.sentinel import SentinelSetup

N = 5000


async def _stats(r: aioredis.Redis) -> dict[str, int]:
    info = await r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


async def run(url: str, master: str, min_replicas: int, concurrency: int) -> tuple[float, str]:
    app = asyncjobs.App(url, min_replicas=min_replicas, replica_timeout=5)

    @app.job(name="work")
    async def work(i: int) -> None:
        pass

    r = aioredis.Redis.from_url(master)
    try:
        await work.defer(0)  # connected, scripts loaded
        await r.flushall()
        before = await _stats(r)

        async def producer(k: int) -> None:
            for i in range(k, N, concurrency):
                await work.defer(i)

        t0 = time.perf_counter()
        await asyncio.gather(*(producer(k) for k in range(concurrency)))
        rate = N / (time.perf_counter() - t0)
        after = await _stats(r)
    finally:
        await app.aclose()
        await r.aclose()
    calls = {k: (v - before.get(k, 0)) / N for k, v in after.items()}
    per = ", ".join(f"{k} {v:g}" for k, v in sorted(calls.items()) if v >= 0.05 and k != "info")
    return rate, per


async def main(setup: SentinelSetup) -> None:
    master = setup.server_url(setup.master.port)
    for concurrency in (1, 50):
        for min_replicas in (0, 1, 0, 1):
            rate, per = await run(setup.url, master, min_replicas, concurrency)
            print(
                f"concurrency {concurrency:>2}  min_replicas={min_replicas}: "
                f"{rate:>8,.0f} defer/s  (per defer: {per})"
            )


if __name__ == "__main__":
    with SentinelSetup() as s:
        asyncio.run(main(s))
