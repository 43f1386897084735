"""Redis commands per acquire of each rate limiter kind, and per job for a job declared
with ``limits=[...]`` next to a plain job (#13).

``python -m benchmarks.limit_costs [REDIS_URL]``: without a URL, starts a private
``redis-server`` on a free port. Counts with ``INFO commandstats`` (commands run inside
scripts included) over 1,000 acquires (``async with limiter:``) of each kind, and over
1,000 jobs deferred and run by one worker.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import redis.asyncio as aioredis

import asyncjobs
from benchmarks.flow_costs import _per_job, _server, _stats

N = 1000

KINDS: list[tuple[str, dict[str, Any]]] = [
    ("concurrent", {"kind": "concurrent", "limit": 10}),
    ("window", {"kind": "window", "limit": 10 * N}),
    ("sliding", {"kind": "window", "limit": 10 * N, "sliding": True}),
    ("bucket", {"kind": "bucket", "limit": 10 * N}),
    ("leaky", {"kind": "leaky", "limit": 10 * N}),
    ("points", {"kind": "points", "limit": 10 * N}),
]


async def acquires(url: str, label: str, spec: dict[str, Any]) -> None:
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    app = asyncjobs.App(url)
    kind = spec.pop("kind")
    limit = spec.pop("limit")
    limiter = app.limiter(f"costs-{label}", kind, limit, per=60, **spec)
    await app.connect()
    s0 = await _stats(r)
    for _ in range(N):
        async with limiter:
            pass
    s1 = await _stats(r)
    await app.aclose()
    await r.aclose()
    print(f"{label:10} acquire: {_per_job(s0, s1)}")


async def jobs(url: str, label: str, kind: str | None) -> None:
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    app = asyncjobs.App(url)
    done = 0
    limits = [] if kind is None else [app.limiter(f"jobs-{label}", kind, 10 * N, per=60)]

    @app.job(name=f"limit_costs.{label}", limits=limits)
    async def job(n: int) -> None:
        nonlocal done
        done += 1

    await app.connect()
    for i in range(N):
        await job.defer(i)
    s1 = await _stats(r)
    async with app.run_worker(concurrency=1, heartbeat_interval=60):
        while done < N:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # background releases land
    s2 = await _stats(r)
    await app.aclose()
    await r.aclose()
    print(f"{label:10} run:     {_per_job(s1, s2)}")


async def main(url: str) -> None:
    for label, spec in KINDS:
        await acquires(url, label, dict(spec))
    await jobs(url, "plain", None)
    await jobs(url, "window", "window")
    await jobs(url, "concurrent", "concurrent")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with _server() as server_url:
            asyncio.run(main(server_url))
