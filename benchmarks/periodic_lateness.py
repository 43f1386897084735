"""Periodic tick lateness: how long after its tick a periodic job is enqueued.

    python -m benchmarks.periodic_lateness [--ticks 60] [--workers 1]

Runs ``--workers`` embedded workers (each with its own connection and periodic loop,
as separate processes would be, but in one event loop on uvloop) against a private
redis-server, with one entry ticking every second (``* * * * * *``), for ``--ticks``
ticks. For every tick, the worker that enqueued it records the time the enqueue script's
reply arrived (wall clock) minus the tick: the lateness, covering the timer's wake-up,
building the payload and the round trip of the claim-and-enqueue. Reports p50, p99,
max, and the minimum (negative would mean a tick enqueued early), in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import anyio

import asyncjobs
from tests.devserver import RedisProcess


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def run(url: str, ticks: int, workers: int) -> dict[str, float]:
    apps = [asyncjobs.App(url, namespace="periodic-bench") for _ in range(workers)]
    for a in apps:

        @a.periodic("* * * * * *", name="tick")
        @a.job(name="periodic_bench.tick")
        async def tick() -> None:
            pass

    started = [a.worker(concurrency=5) for a in apps]
    async with anyio.create_task_group() as tg:
        for w in started:
            tg.start_soon(w.run)
        for w in started:
            await w.wait_started()
        while sum(len(w.periodic.lateness) for w in started if w.periodic) < ticks:
            await asyncio.sleep(0.2)
        for w in started:
            w.stop()
    ms = [x * 1000 for w in started if w.periodic for x in w.periodic.lateness][:ticks]
    for a in apps:
        await a.aclose()
    return {
        "ticks": len(ms),
        "workers": workers,
        "p50_ms": round(pct(ms, 50), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "min_ms": round(min(ms), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with RedisProcess() as server:
        result = anyio.run(
            run, server.url, args.ticks, args.workers, backend_options={"use_uvloop": True}
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
