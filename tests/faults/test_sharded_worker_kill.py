"""A worker process of a sharded app (``ASYNCJOBS_SHARDS=3``) is SIGKILLed while it runs
jobs of every shard: another worker's reapers (one per shard) give each shard's jobs
back, and every job runs."""

from __future__ import annotations

import signal

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs._keys import Keys
from tests.conftest import spawn_worker, text, wait_for

pytestmark = pytest.mark.faults

SHARDS = 3
JOBS = 30


async def _llen(r: aioredis.Redis, key: str, n: int) -> bool:
    return int(await r.llen(key)) >= n


@pytest.mark.timeout(60)
async def test_a_killed_sharded_worker_jobs_are_reaped_in_every_shard(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCJOBS_SHARDS", str(SHARDS))  # the workers' environment
    app = asyncjobs.App(redis_url, shards=SHARDS)

    @app.job(name="tests.apps.recorder.record")
    async def record(n: int, sleep: float = 0.0) -> None:
        raise AssertionError("runs in the worker subprocesses")

    r = aioredis.Redis.from_url(redis_url)
    first = spawn_worker(redis_url, "-c", "60")
    second = None
    try:
        async with app:
            stores = await app.open_stores()
            await record.defer_many([(n, 1.0) for n in range(JOBS)])
            await wait_for(lambda: _llen(r, "test:started", JOBS), timeout=20)
            first.send_signal(signal.SIGKILL)
            await anyio.to_thread.run_sync(first.wait, 10)
            held = []
            for s in stores:
                keys = await r.keys(s.keys.inflight("*"))
                held.append(sum([await r.hlen(k) for k in keys]))
            assert all(held), held  # the dead process held jobs in every shard
            second = spawn_worker(redis_url, "-c", "60")  # reaps a dead pid of its host at once
            await wait_for(lambda: _ran_all(r), timeout=40)
            for s in stores:  # every shard's reaper emptied the dead one's hash
                await wait_for(lambda s=s: _no_inflight_of(r, s.keys, first.pid), timeout=5)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        await r.aclose()


async def _ran_all(r: aioredis.Redis) -> bool:
    ran = {int(text(x).split(":")[0]) for x in await r.lrange("test:ran", 0, -1)}
    return ran == set(range(JOBS))


async def _no_inflight_of(r: aioredis.Redis, keys: Keys, pid: int) -> bool:
    return not await r.keys(keys.inflight(f"*:{pid}:*"))
