"""A job app with a death handler that records each call in Redis (key
``test:deaths``: ``jid:error``), for the CLI's kill commands."""

from __future__ import annotations

import redis.asyncio as aioredis

import asyncjobs

app = asyncjobs.App()


@app.job(name="doomed")
async def doomed(n: int) -> None:
    raise ValueError(n)


async def record_death(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
    r = aioredis.Redis.from_url(app.redis_url)
    try:
        await r.rpush("test:deaths", f"{ctx.jid}:{exc}")
    finally:
        await r.aclose()


app.death_handlers.append(record_death)
