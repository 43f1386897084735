"""A job app whose startup hook waits for a go-ahead, to signal a worker mid-startup."""

from __future__ import annotations

import anyio
import redis.asyncio as aioredis

import asyncjobs

app = asyncjobs.App()


@app.job(queue="default")
async def touch(n: int) -> None:
    r = aioredis.Redis.from_url(app.redis_url)
    await r.rpush("test:ran", n)
    await r.aclose()


async def _wait_for_go() -> None:
    """Say we are starting, then hold startup until the test sets ``test:go``."""
    r = aioredis.Redis.from_url(app.redis_url)
    await r.set("test:booting", 1)
    with anyio.fail_after(30):
        while not await r.exists("test:go"):
            await anyio.sleep(0.01)
    await r.aclose()


async def _shutdown() -> None:
    r = aioredis.Redis.from_url(app.redis_url)
    await r.set("test:shutdown-hook", 1)
    await r.aclose()


app.on_startup.append(_wait_for_go)
app.on_shutdown.append(_shutdown)
