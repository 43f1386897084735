"""Periodic tick lateness: how long after its tick a periodic job is enqueued.

    python -m benchmarks.periodic_lateness [--ticks 60] [--workers 1] [--processes N]

One entry ticks every second (``* * * * * *``) against a private redis-server, for
``--ticks`` ticks; reports the lateness p50, p99, max, and the minimum (negative would
mean a tick enqueued early), in milliseconds.

- ``--workers N`` (the default, 1): N embedded workers in this process, one event loop
  on uvloop. Lateness: the time the enqueue script's reply arrived (wall clock) minus
  the tick, covering the timer's wake-up, building the payload and the round trip.
- ``--processes N``: ``asyncjobs worker --processes N``, N worker processes racing for
  every tick. Lateness: the time Redis pushed the job (the server's clock, as the
  entry's history records it) minus the tick: the wake-up and the way to the server,
  without the reply's way back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys

import anyio
import redis.asyncio as aioredis

import asyncjobs
from tests.devserver import RedisProcess

NS = "periodic-bench"
app = asyncjobs.App(namespace=NS)


@app.periodic("* * * * * *", name="tick", history=1000)
@app.job(name="periodic_bench.tick")
async def tick() -> None:
    pass


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def figures(ms: list[float], **extra: int) -> dict[str, float]:
    return {
        "ticks": len(ms),
        **extra,
        "p50_ms": round(pct(ms, 50), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "min_ms": round(min(ms), 3),
    }


async def embedded(url: str, ticks: int, workers: int) -> dict[str, float]:
    apps = [asyncjobs.App(url, namespace=NS) for _ in range(workers)]
    for a in apps:
        a.periodic(a.job(tick.fn, name="periodic_bench.tick"), "* * * * * *", name="tick")
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
    return figures(ms, workers=workers)


def start_worker(url: str, n: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "asyncjobs", "worker", "benchmarks.periodic_lateness:app",
         "--processes", str(n), "--log-level", "WARNING"],
        env={**os.environ, "ASYNCJOBS_REDIS_URL": url},
    )  # fmt: skip


async def processes(url: str, ticks: int, n: int) -> dict[str, float]:
    client = aioredis.Redis.from_url(url)
    history = f"{{{NS}}}:periodic:tick:history"
    worker = start_worker(url, n)
    try:
        # The first ticks fall while processes are still starting: measured after.
        while await client.llen(history) < ticks + 3:
            await asyncio.sleep(0.5)
        runs = [bytes(r).decode().split() for r in await client.lrange(history, 0, ticks - 1)]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        await client.aclose()
    ms = [(float(at) - float(t)) * 1000 for t, at, _jid, _how in runs]
    return figures(ms, processes=n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--processes", type=int, default=0)
    args = parser.parse_args()
    with RedisProcess() as server:
        if args.processes:
            fn, n = processes, args.processes
        else:
            fn, n = embedded, args.workers
        result = anyio.run(fn, server.url, args.ticks, n, backend_options={"use_uvloop": True})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
