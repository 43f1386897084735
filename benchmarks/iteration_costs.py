"""What iterable jobs cost (#14): Redis commands per plain job (unchanged by the
feature), the defer and drain rates of plain jobs, and the commands of one iterable job.

``PYTHONPATH=. python benchmarks/iteration_costs.py [REDIS_URL]``: without a URL, starts
a private ``redis-server`` on a free port. With ``PYTHONPATH`` on another checkout (one
without iterable jobs) it measures that one's plain jobs: the iterable part is skipped.
Commands are counted by ``INFO commandstats`` (those run inside scripts included); the
rates are medians of three rounds, in process, and move with the machine's load.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

import asyncjobs
from benchmarks.flow_costs import _per_job, _server, _stats

N = 1000
DRAIN = 20_000
ROUNDS = 3


async def plain_commands(url: str) -> None:
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    app = asyncjobs.App(url)
    done = 0

    @app.job(name="iteration_costs.plain")
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
    s2 = await _stats(r)
    await app.aclose()
    await r.aclose()
    print(f"plain defer: {_per_job(s0, s1)}")
    print(f"plain run:   {_per_job(s1, s2)}")


async def rates(url: str) -> None:
    r = aioredis.Redis.from_url(url)
    defers: list[float] = []
    drains: list[float] = []
    for _ in range(ROUNDS):
        await r.flushall()
        app = asyncjobs.App(url)
        done = 0

        @app.job(name="iteration_costs.noop")
        async def noop() -> None:
            nonlocal done
            done += 1

        await app.connect()
        t0 = time.perf_counter()
        for _ in range(5000):
            await noop.defer()
        defers.append(5000 / (time.perf_counter() - t0))
        await noop.defer_many([() for _ in range(DRAIN - 5000)])
        t0 = time.perf_counter()
        async with app.run_worker(concurrency=100, heartbeat_interval=60):
            while done < DRAIN:
                await asyncio.sleep(0.001)
            drains.append(DRAIN / (time.perf_counter() - t0))
        await app.aclose()
    await r.aclose()
    print(
        f"plain rates: defer {statistics.median(defers):,.0f}/s, "
        f"drain {statistics.median(drains):,.0f} jobs/s (medians of {ROUNDS})"
    )


async def iterable_commands(url: str) -> None:
    app = asyncjobs.App(url)
    if not hasattr(app, "iterable_job"):
        print("iterable: not in this checkout")
        await app.aclose()
        return
    from asyncjobs.iteration import from_range

    r = aioredis.Redis.from_url(url)
    await r.flushall()
    finished = asyncio.Event()

    @app.iterable_job(name="iteration_costs.walk", save_every=100, save_interval=None)
    async def walk(it: Any, stop: int) -> AsyncIterator[int]:
        async for _, cursor in from_range(0, stop, cursor=it.cursor):
            yield cursor
        finished.set()

    @app.job(name="iteration_costs.one")
    async def one() -> None:
        finished.set()

    await app.connect()
    async with app.run_worker(concurrency=1, heartbeat_interval=60):
        s0 = await _stats(r)
        await one.defer()
        await finished.wait()
        await asyncio.sleep(0.2)
        s1 = await _stats(r)
        finished.clear()
        await walk.defer(N)
        await finished.wait()
        await asyncio.sleep(0.2)
        s2 = await _stats(r)
    await app.aclose()
    await r.aclose()
    plain = {k: s1[k] - s0.get(k, 0) for k in s1}
    walked = {k: s2[k] - s1.get(k, 0) for k in s2}
    # The state's commands (background loops add noise to the others): HGETALL, the
    # saves (EVALSHA, or EVAL on first use, running HSET and PEXPIRE), DEL.
    keys = ("hgetall", "evalsha", "eval", "hset", "pexpire", "del")
    extra = {k: walked.get(k, 0) - plain.get(k, 0) for k in keys}
    print(f"iterable job of {N} items, save_every=100, beyond a plain job: {extra}")


async def main(url: str) -> None:
    await plain_commands(url)
    await rates(url)
    await iterable_commands(url)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with _server() as server_url:
            asyncio.run(main(server_url))
