"""``max_memory`` on an in-process worker (``app.worker(max_memory=...)``): over the
limit it quiets, finishes its running job, stops by itself and says why
(``worker.replace``; the CLI turns that into exit 75)."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs._errors import ConfigError
from asyncjobs._worker.heartbeat import rss_kib
from tests.conftest import wait_for


@pytest.mark.timeout(30)
async def test_worker_over_max_memory_finishes_its_job_and_stops(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    gate = anyio.Event()
    held: list[bytes] = []

    @app.job
    async def hog() -> None:
        held.append(b"\x01" * (200 * 1024 * 1024))  # touched: it counts in the RSS
        await gate.wait()
        held.clear()
        await redis.rpush("test:done", "hog")

    await app.connect()
    worker = app.worker(
        heartbeat_interval=0.1,
        heartbeat_ttl=1.0,
        max_memory=rss_kib() * 1024 + 100 * 1024 * 1024,
        timeout=10,
    )
    stopped = anyio.Event()

    async def run() -> None:
        await worker.run()  # returns by itself: nobody calls stop()
        stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(5):
            await worker.wait_started()
        assert not worker.quiet
        await hog.defer()
        await wait_for(lambda: worker.quiet, timeout=10)  # over the limit: quiet
        assert worker.replace
        assert worker.statistics()["busy"] == 1  # the job still runs
        assert not stopped.is_set()
        gate.set()
        with anyio.fail_after(10):
            await stopped.wait()
    assert await redis.lrange("test:done", 0, -1) == [b"hog"]
    assert worker.requeued == 0
    assert await redis.llen(app.keys.queue("default")) == 0


@pytest.mark.timeout(10)
def test_max_memory_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_memory must be more than 0 bytes"):
        asyncjobs.App().worker(max_memory=0)
