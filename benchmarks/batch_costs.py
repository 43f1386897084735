"""Redis commands and round trips per job of a batch, next to plain jobs (#14).

``python benchmarks/batch_costs.py [REDIS_URL] [N]``: without a URL, starts a private
``redis-server`` on a free port. Defers N jobs (100,000 by default) with
``defer_many``, plain, then in one batch with complete and success callbacks; runs them
with one in-process worker; prints per job what ``INFO commandstats`` counted for the
defers and for the runs (commands run inside scripts included), the script calls
(``evalsha``: each is one round trip of the acker or the client, or part of one
pipeline) and the server CPU time of those script calls.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import redis.asyncio as aioredis

import asyncjobs
from benchmarks.runner import private_redis

CHUNK = 5000


async def _stats(r: aioredis.Redis) -> dict[str, tuple[int, int]]:
    info = await r.info("commandstats")
    return {k.removeprefix("cmdstat_"): (v["calls"], v["usec"]) for k, v in info.items()}


def _per_job(a: dict[str, Any], b: dict[str, Any], n: int) -> dict[str, float]:
    out = {k: (b[k][0] - a.get(k, (0, 0))[0]) / n for k in b}
    return {k: round(v, 5) for k, v in sorted(out.items()) if v > 0}


def _usec(a: dict[str, Any], b: dict[str, Any], n: int, cmd: str = "evalsha") -> float:
    return round((b.get(cmd, (0, 0))[1] - a.get(cmd, (0, 0))[1]) / n, 2)


async def measure(url: str, label: str, n: int, batched: bool) -> None:
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    app = asyncjobs.App(url)
    done = 0

    @app.job(name=f"batch_costs.{label}")
    async def job(i: int) -> None:
        nonlocal done
        done += 1

    @app.job(name=f"batch_costs.{label}.callback")
    async def callback(bid: str, event: str) -> None:
        nonlocal done
        done += 1

    await app.connect()
    await r.config_resetstat()
    s0 = await _stats(r)
    t0 = time.perf_counter()
    items = [(i,) for i in range(n)]
    if batched:
        async with app.batch(
            on_complete=callback.s(event="complete"), on_success=callback.s(event="success")
        ) as batch:
            for i in range(0, n, CHUNK):
                await job.defer_many(items[i : i + CHUNK])
    else:
        for i in range(0, n, CHUNK):
            await job.defer_many(items[i : i + CHUNK])
    t_defer = time.perf_counter() - t0
    s1 = await _stats(r)
    want = n + (2 if batched else 0)
    t0 = time.perf_counter()
    async with app.run_worker(concurrency=50, heartbeat_interval=60):
        while done < want:
            await asyncio.sleep(0.01)
    t_run = time.perf_counter() - t0
    s2 = await _stats(r)
    if batched:
        st = await app.batch_status(batch.bid)
        assert st.success and st.total == n and st.pending == 0, st
    await app.aclose()
    await r.aclose()
    print(f"{label:6} n={n}: defer {t_defer:.2f}s, run {t_run:.2f}s ({n / t_run:,.0f} jobs/s)")
    print(f"{label:6} defer, per job: {_per_job(s0, s1, n)}")
    print(f"{label:6} run, per job:   {_per_job(s1, s2, n)}")
    print(f"{label:6} run, evalsha server usec per job: {_usec(s1, s2, n)}")


async def main(url: str, n: int) -> None:
    await measure(url, "plain", n, batched=False)
    await measure(url, "batch", n, batched=True)


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 and "://" in sys.argv[1] else None
    count = int(sys.argv[-1]) if len(sys.argv) > 1 and sys.argv[-1].isdigit() else 100_000
    if url is not None:
        asyncio.run(main(url, count))
    else:
        with private_redis() as server_url:
            asyncio.run(main(server_url, count))
