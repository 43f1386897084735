"""A job app for cross-process cancellation tests (#14): jobs that run until cancelled."""

from __future__ import annotations

import anyio
import redis.asyncio as aioredis

import asyncjobs

app = asyncjobs.App()


async def _on_cancel(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
    r = aioredis.Redis.from_url(app.redis_url)
    await r.rpush("test:cancel-hook", ctx.jid)
    await r.aclose()


app.cancel_handlers.append(_on_cancel)


@app.job(keep_result=60, name="cancelling.forever")
async def forever(n: int) -> int:
    """Report progress, then wait until cancelled (an hour)."""
    asyncjobs.current_job().progress(0.1, f"job {n} started")
    await anyio.sleep(3600)
    return n
