"""A job app for the shutdown tests: a job slow to die after its cancellation."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

import asyncjobs

app = asyncjobs.App()


@app.job(queue="default")
async def stubborn(n: int) -> None:
    """Say it started, then wait; cancelled, clean up for 30 s before dying."""
    r = aioredis.Redis.from_url(app.redis_url)
    try:
        await r.set("test:started", n)
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await r.set("test:cleaning", n)
        await asyncio.sleep(30)
        raise
    finally:
        await r.aclose()
