"""A job app for worker subprocess tests: each job records its run in Redis."""

from __future__ import annotations

import os

import anyio
import redis.asyncio as aioredis

import asyncjobs

app = asyncjobs.App()
_r: aioredis.Redis | None = None


def r() -> aioredis.Redis:
    global _r
    if _r is None:
        _r = aioredis.Redis.from_url(app.redis_url)
    return _r


@app.job(queue="default")
async def record(n: int, sleep: float = 0.0) -> None:
    """Record a run: RPUSH 'ran' with n and the queue, after an optional sleep."""
    ctx = asyncjobs.current_job()
    await r().rpush("test:started", n)
    if sleep:
        await anyio.sleep(sleep)
    await r().rpush("test:ran", f"{n}:{ctx.queue}")


@app.job
async def crash() -> None:
    os._exit(1)
