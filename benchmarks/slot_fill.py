"""How long a worker with many slots takes to fill them from a full queue.

``python -m benchmarks.slot_fill [SLOTS] [ROUNDS]``: starts a private ``redis-server``,
queues ``SLOTS`` × 1.2 jobs that each wait 5 s (``asyncio.sleep``), starts one
in-process worker with ``SLOTS`` slots (10,000 by default) and prints, per round, the
time from ``worker.run()`` until every slot runs a job, and the longest the event loop
was blocked meanwhile (a task that sleeps 1 ms and measures how late it wakes).

A worker starts on a full queue after a deploy or a restart; with I/O-bound jobs and
thousands of slots, its first fetches bring thousands of jobs that all wait at once.
"""

from __future__ import annotations

import asyncio
import sys
import time

import redis.asyncio as aioredis

import asyncjobs
from benchmarks import _uvloop
from benchmarks.runner import private_redis


async def fill(url: str, slots: int) -> tuple[float, float]:
    app = asyncjobs.App(url)
    started = 0
    full = asyncio.Event()

    @app.job(name="slot_fill.wait", retry=0)
    async def wait() -> None:
        nonlocal started
        started += 1
        if started >= slots:
            full.set()
        await asyncio.sleep(5)

    admin = aioredis.Redis.from_url(url)
    await admin.flushall()
    await admin.aclose()
    queued = slots * 6 // 5
    for i in range(0, queued, 5000):
        await wait.defer_many([()] * min(5000, queued - i))
    lag = 0.0

    async def monitor() -> None:
        nonlocal lag
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = max(lag, time.perf_counter() - t - 0.001)

    worker = app.worker(queues=["default"], concurrency=slots)
    watch = asyncio.create_task(monitor())
    t0 = time.perf_counter()
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(full.wait(), 300)
    took = time.perf_counter() - t0
    watch.cancel()
    worker.stop()
    task.cancel()  # its jobs sleep on; the next round flushes them
    try:
        await task
    except asyncio.CancelledError:
        pass
    await app.aclose()
    return took, lag


async def main(url: str, slots: int, rounds: int) -> None:
    for r in range(rounds):
        took, lag = await fill(url, slots)
        print(
            f"round {r + 1}: {slots:,} slots busy after {took:.3f} s;"
            f" event loop blocked up to {lag * 1000:.0f} ms"
        )


if __name__ == "__main__":
    slots = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    with private_redis() as redis_url:
        _uvloop.run(main(redis_url, slots, rounds))
