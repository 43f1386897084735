"""Pausing and resuming a queue (#13): no worker fetches a paused queue; defer still
works; a resume is picked up by running workers."""

from __future__ import annotations

from pathlib import Path

import anyio
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from tests.conftest import cli, running, spawn_worker, text, wait_for


async def test_pause_and_resume_with_a_running_worker(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    ran: list[tuple[str, int]] = []

    @app.job
    async def work(n: int) -> None:
        ran.append((asyncjobs.current_job().queue, n))

    assert await api.pause_queue(app, "low") is True
    assert await api.pause_queue(app, "low") is False
    assert await api.paused_queues(app) == ["low"]
    low = work.configure(queue="low")
    async with running(app.worker(queues=["default", "low"], heartbeat_interval=0.1)):
        await low.defer(1)  # deferring to a paused queue works
        await work.defer(2)
        await wait_for(lambda: ("default", 2) in ran)
        await anyio.sleep(0.3)
        assert ran == [("default", 2)]
        assert await redis.llen(app.keys.queue("low")) == 1
        assert await api.resume_queue(app, "low") is True
        await wait_for(lambda: ("low", 1) in ran, timeout=5)
        # Paused again while the worker runs: the next job waits.
        await api.pause_queue(app, "low")
        await anyio.sleep(0.3)  # more than a heartbeat: the worker has seen it
        await low.defer(3)
        await anyio.sleep(0.3)
        assert ("low", 3) not in ran
        await api.resume_queue(app, "low")
        await wait_for(lambda: ("low", 3) in ran, timeout=5)
    assert await api.resume_queue(app, "low") is False
    assert await api.paused_queues(app) == []


async def test_one_queue_capsule_paused_waits_for_resume(app: asyncjobs.App) -> None:
    ran: list[int] = []

    @app.job
    async def work(n: int) -> None:
        ran.append(n)

    await api.pause_queue(app, "default")
    async with running(app.worker(heartbeat_interval=0.1)):
        await work.defer(1)
        await anyio.sleep(0.5)
        assert ran == []
        await api.resume_queue(app, "default")
        # The fetcher waits for the resume itself: well within a heartbeat and a poll.
        with anyio.fail_after(3):
            while not ran:
                await anyio.sleep(0.01)


async def test_cli_pause_resume(app: asyncjobs.App, redis_url: str) -> None:
    r = await cli(redis_url, "queues", "--pause", "mail")
    assert r.returncode == 0, r.stderr
    assert text(r.stdout).strip() == "queue mail: paused"
    assert await api.paused_queues(app) == ["mail"]
    r = await cli(redis_url, "queues")
    assert "paused: mail" in text(r.stdout)
    r = await cli(redis_url, "queues", "--resume", "mail")
    assert text(r.stdout).strip() == "queue mail: resumed"
    r = await cli(redis_url, "queues", "--pause", "bad:name")
    assert r.returncode != 0
    assert "invalid queue name" in text(r.stderr)


async def test_two_worker_processes_leave_a_paused_queue_alone(
    redis_url: str, redis: aioredis.Redis, tmp_path: Path
) -> None:
    from tests.apps import recorder

    fast = tmp_path / "fast.toml"  # short heartbeats: pauses and resumes are seen sooner
    fast.write_text("heartbeat_interval = 0.2\nheartbeat_ttl = 2.0\n")
    recorder.app.redis_url = redis_url
    try:
        await api.pause_queue(recorder.app, "default")
        await recorder.record.defer_many([(n,) for n in range(20)])
        procs = [spawn_worker(redis_url, "-C", str(fast), "-c", "5") for _ in range(2)]
        try:
            await wait_for(lambda: _registered(redis, 2), timeout=15)
            await anyio.sleep(0.5)  # several heartbeats and fetch rounds
            assert await redis.llen("test:started") == 0
            assert await redis.llen(recorder.app.keys.queue("default")) == 20
            await api.resume_queue(recorder.app, "default")
            await wait_for(lambda: _ran(redis, 20), timeout=10)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                assert p.wait(15) == 0
    finally:
        await recorder.app.aclose()


async def _registered(redis: aioredis.Redis, n: int) -> bool:
    return int(await redis.scard("{asyncjobs}:processes")) >= n


async def _ran(redis: aioredis.Redis, n: int) -> bool:
    return int(await redis.llen("test:ran")) >= n


async def test_a_pause_seen_while_waiting_for_a_job_stops_the_pickup_taking_more(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """An idle one-queue worker waits in BLMOVE; the pause is seen by its heartbeat
    while it waits. The job BLMOVE then takes runs (a pause takes effect within a
    heartbeat), but the land that follows takes no more from the paused queue."""
    ran: list[int] = []

    @app.job
    async def work(n: int) -> None:
        ran.append(n)

    async with running(app.worker(concurrency=10, heartbeat_interval=0.05)) as worker:
        [fetcher] = worker.fetchers
        await anyio.sleep(0.1)  # the fetcher waits in BLMOVE
        assert await api.pause_queue(app, "default") is True
        await wait_for(lambda: fetcher.capsule.paused, timeout=5)
        await work.defer_many([(i,) for i in range(5)])
        await anyio.sleep(0.3)
        # 1 if BLMOVE was still waiting, 0 if its 2 s wait ended meanwhile; never more.
        assert len(ran) <= 1
        assert await redis.llen(app.keys.queue("default")) == 5 - len(ran)
        await api.resume_queue(app, "default")
        await wait_for(lambda: len(ran) == 5, timeout=5)
