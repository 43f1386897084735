"""A job app for the dashboard's browser test: a job that naps, one that fails, one that
records its run, and a batch's callback."""

from __future__ import annotations

import anyio
import redis.asyncio as aioredis

import asyncjobs

# Per-job metrics on: the Metrics page shows these jobs' runs.
app = asyncjobs.App(metrics=True)


@app.job
async def nap(seconds: float) -> None:
    await anyio.sleep(seconds)


@app.job(retry=5)
async def boom(text: str) -> None:
    raise ValueError(f"cannot handle {text}")


@app.job
async def mark(n: int) -> None:
    r = aioredis.Redis.from_url(app.redis_url)
    await r.rpush("test:ran", n)
    await r.aclose()


@app.job
async def batch_done(bid: str) -> None:
    pass


app.periodic(mark, "0 3 * * *", args={"n": 0}, name="nightly-mark")
