"""Expiring jobs (#13): a job not started by its expires_in is dropped, logged, counted."""

from __future__ import annotations

import datetime as dt
import logging

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from tests.conftest import cli, loads, running, wait_for


async def test_a_stale_job_is_dropped_logged_and_counted(
    app: asyncjobs.App,
    redis: aioredis.Redis,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    @app.job(expires_in=0.2)
    async def notify(who: str) -> None:
        ran.append(who)

    stale = await notify.defer("stale")
    # A unique job's lock is released when it expires.
    await notify.configure(unique=True).defer("stale too")
    await anyio.sleep(0.3)
    await notify.configure(expires_in=dt.timedelta(minutes=5)).defer("fresh")
    await notify.configure(expires_in=0.1, delay=0.3).defer("counted from its due time")
    caplog.set_level(logging.INFO, logger="asyncjobs.job")
    async with running(app.worker()):
        await wait_for(lambda: sorted(ran) == ["counted from its due time", "fresh"])
        await wait_for(lambda: redis.get(app.keys.stat_expired))
        await wait_for(lambda: _expired(redis, app, 2))
    assert f"expired {notify.name} jid={stale}: not started by its expires_in" in caplog.text
    assert not await redis.keys(f"{app.keys.prefix}:unique:*")
    assert (await api.Stats.fetch(app)).expired == 2
    r = await cli(redis_url, "stats", "--json")
    assert r.returncode == 0, r.stderr
    assert loads(r.stdout)["expired"] == 2
    assert await redis.get(app.keys.stat_failed) is None


async def _expired(redis: aioredis.Redis, app: asyncjobs.App, n: int) -> bool:
    return await redis.get(app.keys.stat_expired) == str(n).encode()


async def test_no_expiry_no_field(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job
    async def plain() -> None: ...

    await plain.defer()
    [raw] = await redis.lrange(app.keys.queue("default"), 0, -1)
    assert b"expires_at" not in raw and b"unique" not in raw


async def test_bad_expires_in(app: asyncjobs.App) -> None:
    @app.job
    async def plain() -> None: ...

    with pytest.raises(asyncjobs.ConfigError, match="expires_in"):
        plain.configure(expires_in=0)


async def test_a_retry_due_after_the_expiry_is_dropped(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    runs: list[int] = []

    @app.job(expires_in=0.3, retry_in=lambda count, exc: 0.5)
    async def flaky() -> None:
        runs.append(1)
        raise RuntimeError("not yet")

    await flaky.defer()
    async with running(app.worker()):
        await wait_for(lambda: _expired(redis, app, 1), timeout=5)
    assert runs == [1]
    assert await redis.zcard(app.keys.retry) == 0 and await redis.zcard(app.keys.dead) == 0
