"""A job app with rate limiters, for worker subprocess tests (#13): jobs record the
time each was let through (Redis's clock, as the limiter saw it) in Redis."""

from __future__ import annotations

import os

import anyio
import redis.asyncio as aioredis

import asyncjobs

app = asyncjobs.App()
_r: aioredis.Redis | None = None

# 10 per second in any one-second window, across every process.
per_second = app.limiter(
    "per_second", "window", 10, per=1.0, sliding=True, reschedules=1000, max_backoff=1.0
)
# At most 3 holders; a killed holder's lease runs out within a second.
three = app.limiter("three", "concurrent", 3, lease=1.5, reschedules=1000, max_backoff=0.5)


def r() -> aioredis.Redis:
    global _r
    if _r is None:
        _r = aioredis.Redis.from_url(app.redis_url)
    return _r


@app.job
async def call_api(n: int) -> None:
    """Let through by ``per_second`` inside the job: records the grant's time."""
    async with per_second.acquire() as lease:
        await r().rpush("test:granted", f"{n} {lease.at:.3f}")


@app.job(limits=[three])
async def hold(n: int, seconds: float) -> None:
    """Holds one of ``three``'s slots for ``seconds``. ``test:holders`` counts the jobs
    inside (a transaction with the record of the start or end, so the test can take
    a SIGKILLed process's holders out); a count over 3 is recorded."""
    async with r().pipeline(transaction=True) as pipe:
        pipe.incr("test:holders")
        pipe.rpush("test:started", f"{n} {os.getpid()}")
        level, _ = await pipe.execute()
    await r().rpush("test:levels", level)
    await anyio.sleep(seconds)
    async with r().pipeline(transaction=True) as pipe:
        pipe.decr("test:holders")
        pipe.rpush("test:ran", f"{n} {os.getpid()}")
        await pipe.execute()
