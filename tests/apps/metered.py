"""A job app with per-job metrics (App(metrics=True)) for the Prometheus tests: jobs
that succeed, die, are discarded or retried; each run records its pid."""

from __future__ import annotations

import os

import anyio
import redis.asyncio as aioredis

import asyncjobs

app = asyncjobs.App(metrics=True)


class Nope(Exception):
    pass


async def _mark() -> None:
    r = aioredis.Redis.from_url(app.redis_url)
    try:
        await r.rpush("test:pids", os.getpid())
    finally:
        await r.aclose()


@app.job
async def work(n: int, sleep: float = 0.0) -> None:
    await _mark()
    if sleep:
        await anyio.sleep(sleep)


@app.job(retry=0)
async def dies() -> None:
    await _mark()
    raise Nope("dead on the first failure")


@app.job(discard_on=(Nope,))
async def discarded() -> None:
    await _mark()
    raise Nope("discarded")


@app.job(retry=3, retry_in=lambda count, exc: 3600)
async def retried() -> None:
    await _mark()
    raise Nope("retried in an hour")
