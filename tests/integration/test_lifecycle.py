"""Quiet, shutdown, hooks and background-loop health of an in-process worker (issue 10)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs._errors import ConfigError, RedisUnavailable
from asyncjobs._worker.acker import Acker
from asyncjobs._worker.fetcher import IDLE_POLL
from asyncjobs._worker.heartbeat import Heartbeat
from asyncjobs._worker.reaper import Reaper
from asyncjobs._worker.scheduler import Scheduler
from tests.conftest import loads, running, wait_for
from tests.proxy import TcpProxy

QUEUE = "{asyncjobs}:queue:default"
SCHEDULE = "{asyncjobs}:schedule"
PROCESSES = "{asyncjobs}:processes"
INFLIGHT = "{asyncjobs}:inflight:"


def record_key(worker: asyncjobs.Worker) -> str:
    return "{asyncjobs}:process:" + worker.process_id


async def queued(redis: aioredis.Redis) -> list[int]:
    """The ``n`` argument of each job in the queue, tail first, head (next out) last."""
    return [loads(x)["args"]["n"] for x in await redis.lrange(QUEUE, 0, -1)]


# -- quiet ------------------------------------------------------------------------------


async def test_quiet_puts_prefetched_jobs_back_at_once(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    started: list[int] = []
    gate = anyio.Event()

    @app.job
    async def slow(n: int) -> None:
        started.append(n)
        await gate.wait()

    await slow.defer_many([(i,) for i in range(12)])
    worker = app.worker(concurrency=4, prefetch=4, timeout=5)
    async with running(worker):
        capsule = worker.capsules[0]
        await wait_for(lambda: len(started) == 4 and len(capsule.ready) == 4)
        prefetched = {loads(raw)["args"]["n"] for _, raw in capsule.ready}
        worker.quiet_down()
        # Back at the head of the queue at once, not when a slot frees.
        await wait_for(lambda: _llen_is(redis, 8), timeout=2)
        assert set((await queued(redis))[-4:]) == prefetched
        gate.set()
        await wait_for(lambda: capsule.processed == 4)
        await worker.wait_idle()
        assert sorted(started) == sorted(set(range(12)) - set(await queued(redis)))
        assert len(started) == 4  # none of the prefetched jobs started
        assert not await redis.hlen(INFLIGHT + worker.process_id)


async def _llen_is(redis: aioredis.Redis, n: int) -> bool:
    return bool(await redis.llen(QUEUE) == n)


async def test_jobs_landing_after_quiet_go_back_unstarted(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    started: list[int] = []

    @app.job
    async def touch(n: int) -> None:
        started.append(n)

    worker = app.worker(concurrency=4, timeout=5)
    async with running(worker):
        worker.quiet_down()
        # A fetch whose reply arrives just after quiet: the job is in the in-flight hash
        # and is handed to the capsule.
        payload = app._encode(_payload(app, touch, 7))
        jid = loads(payload)["jid"]
        await redis.hset(INFLIGHT + worker.process_id, jid, payload)
        worker.capsules[0].start([jid.encode(), payload])
        await wait_for(lambda: _llen_is(redis, 1), timeout=2)
        assert not await redis.hlen(INFLIGHT + worker.process_id)
    assert started == []


def _payload(app: asyncjobs.App, job: Any, n: int) -> Any:
    from asyncjobs._payload import Payload, new_jid

    return Payload(
        jid=new_jid(),
        job=job.name,
        queue="default",
        args=msgspec.Raw(json.dumps({"n": n}).encode()),
        created_at=time.time(),
        retry=25,
    )


async def test_quiet_process_takes_no_job_pushed_meanwhile(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    @app.job
    async def touch(n: int) -> None:
        pass

    worker = app.worker(concurrency=2)
    async with running(worker):
        await anyio.sleep(0.1)  # idle: the fetcher waits in BLMOVE on the queue
        worker.quiet_down()
        await touch.defer(1)
        # A BLMOVE left blocked in Redis would take it into our landing list, where it
        # would sit until shutdown; it must stay in the queue for the other workers.
        await anyio.sleep(IDLE_POLL + 0.5)
        assert await queued(redis) == [1]
        assert not await redis.llen("{asyncjobs}:landing:" + worker.process_id)


async def test_quiet_process_does_not_promote(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job
    async def later(n: int) -> None:
        pass

    worker = app.worker(scheduler_poll=0.02)
    async with running(worker):
        worker.quiet_down()
        await later.configure(delay=0.01).defer(1)
        assert worker.scheduler is not None
        await anyio.sleep(0.5)  # many poll intervals: a live scheduler promotes in one
        assert await redis.zcard(SCHEDULE) == 1
        assert worker.scheduler.promoted == 0


async def test_quiet_shows_in_the_process_record_at_once(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    worker = app.worker(heartbeat_interval=30)
    async with running(worker):
        assert await redis.hget(record_key(worker), "quiet") == b"0"
        worker.quiet_down()

        async def shows_quiet() -> bool:
            return bool(await redis.hget(record_key(worker), "quiet") == b"1")

        await wait_for(shows_quiet, timeout=2)


# -- shutdown ---------------------------------------------------------------------------


async def test_job_slow_to_die_is_put_back_before_the_wait_and_cannot_hold_shutdown(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    state: dict[str, bool] = {}

    @app.job
    async def stubborn(n: int) -> None:
        state["started"] = True
        try:
            await anyio.sleep(60)
        except asyncio.CancelledError:
            state["cleaning"] = True
            await asyncio.sleep(30)  # slow to die: cleans up for a long while
            raise

    await stubborn.defer(1)
    worker = app.worker(timeout=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: state.get("started"))
        t0 = time.monotonic()
        worker.stop()
        # Back at the head of its queue while it still cleans up (a SIGKILL now loses
        # nothing), and the worker leaves within a few seconds all the same.
        await wait_for(lambda: _llen_is(redis, 1), timeout=1.5)
        assert state.get("cleaning")
    assert time.monotonic() - t0 < 4
    assert await queued(redis) == [1]
    assert not await redis.hlen(INFLIGHT + worker.process_id)
    assert await redis.scard(PROCESSES) == 0


async def test_job_put_back_then_finishing_is_not_counted(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    state: dict[str, bool] = {}

    @app.job
    async def finishes_anyway(n: int) -> None:
        state["started"] = True
        try:
            await anyio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)
            state["finished"] = True  # swallows the cancellation: succeeds

    await finishes_anyway.defer(1)
    worker = app.worker(timeout=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: state.get("started"))
        worker.stop()
    assert state.get("finished")
    assert await queued(redis) == [1]  # put back once, and not acknowledged
    assert await redis.get("{asyncjobs}:stat:processed") is None


async def test_job_whose_cleanup_raises_at_shutdown_is_put_back_not_failed(
    app: asyncjobs.App, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    state: dict[str, bool] = {}

    @app.job
    async def messy(n: int) -> None:
        state["started"] = True
        try:
            await anyio.sleep(60)
        except asyncio.CancelledError:
            raise ValueError("cleanup") from None

    await messy.defer(1)
    worker = app.worker(timeout=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: state.get("started"))
        worker.stop()
    assert await redis.zcard("{asyncjobs}:retry") == 0
    entries = await redis.lrange(QUEUE, 0, -1)
    assert len(entries) == 1
    assert loads(entries[0]).get("retry_count", 0) == 0
    # Interrupted, not failed: no "fail ... retry 1/25" line (the early put-back already
    # keeps it out of the retry set), no failure counted.
    assert not [r for r in caplog.records if r.name == "asyncjobs.job" and r.levelno >= 30]
    assert worker.statistics()["failed"] == 0


async def test_redis_unreachable_at_shutdown_fails_and_the_record_expires(
    redis_url: str, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with TcpProxy("127.0.0.1", port) as proxy:
        app = asyncjobs.App(proxy.url)
        worker = app.worker(heartbeat_interval=0.2, heartbeat_ttl=1.0, timeout=0.1)

        async def cut_then_stop() -> None:
            with anyio.fail_after(5):
                await worker.wait_started()
            await proxy.stop()  # aborts every connection; none gets through any more
            worker.stop()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cut_then_stop)
            with anyio.fail_after(15), pytest.raises(RedisUnavailable, match="unreachable"):
                await worker.run()
        await app.aclose()
    assert any(
        r.levelno == logging.ERROR and "shutdown: Redis unreachable" in r.getMessage()
        for r in caplog.records
    )
    key = record_key(worker)
    assert await redis.sismember(PROCESSES, worker.process_id)
    ttl = await redis.pttl(key)
    assert ttl == -2 or 0 < ttl <= 1000  # gone already, or going
    await wait_for(lambda: _gone(redis, key), timeout=3)
    # Another worker's reaper removes it from the process set.
    other = asyncjobs.App(redis_url)
    await Reaper(await other.open_store(), "other:1:abcdef", interval=1).reap_once()
    assert not await redis.sismember(PROCESSES, worker.process_id)
    await other.aclose()


async def _gone(redis: aioredis.Redis, key: str) -> bool:
    return not await redis.exists(key)


# -- hooks ------------------------------------------------------------------------------


async def test_hooks_run_in_sidekiq_order(app: asyncjobs.App) -> None:
    calls: list[str] = []

    def hook(name: str) -> Any:
        async def h() -> None:
            calls.append(name)

        return h

    for kind in ("startup", "quiet", "shutdown", "exit", "heartbeat"):
        for i in (1, 2):
            getattr(app, f"on_{kind}").append(hook(f"{kind}{i}"))
    app.on_beat.append(hook("beat"))
    worker = app.worker(heartbeat_interval=0.05)
    async with running(worker):
        await wait_for(lambda: calls.count("beat") >= 3)
    assert calls[:2] == ["startup1", "startup2"]
    assert calls.count("heartbeat1") == calls.count("heartbeat2") == 1
    assert calls.index("heartbeat1") < calls.index("heartbeat2") < calls.index("beat")
    ends = [c for c in calls if c[:-1] in ("quiet", "shutdown", "exit")]
    assert ends == ["quiet2", "quiet1", "shutdown2", "shutdown1", "exit2", "exit1"]


async def test_failing_startup_hook_aborts_the_start(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    async def broken() -> None:
        raise ValueError("no database")

    app.on_startup.append(broken)
    worker = app.worker()
    with (
        anyio.fail_after(5),
        pytest.raises(ConfigError, match="startup hook .*broken.* no database"),
    ):
        await worker.run()
    assert await redis.scard(PROCESSES) == 0


async def test_failing_hook_is_logged_and_the_worker_goes_on(
    app: asyncjobs.App, caplog: pytest.LogCaptureFixture
) -> None:
    beats: list[int] = []

    async def bad_beat() -> None:
        beats.append(1)
        raise ValueError("beat hook bug")

    async def bad_quiet() -> None:
        raise ValueError("quiet hook bug")

    app.on_beat.append(bad_beat)
    app.on_quiet.append(bad_quiet)
    worker = app.worker(heartbeat_interval=0.05)
    async with running(worker):
        await wait_for(lambda: len(beats) >= 3)
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    messages = {str(r.exc_info[1]) for r in failures if r.exc_info}
    assert {"beat hook bug", "quiet hook bug"} <= messages


# -- owned tasks --------------------------------------------------------------------------


async def test_owned_tasks_are_awaited_at_shutdown(app: asyncjobs.App) -> None:
    done: list[str] = []

    async def background() -> None:
        await anyio.sleep(0.3)
        done.append("background")

    async with app.run_worker(timeout=5) as worker:
        worker.tasks.start_soon(background)
    assert done == ["background"]
    assert len(worker.tasks) == 0


async def test_owned_tasks_past_the_timeout_are_cancelled(app: asyncjobs.App) -> None:
    state: list[str] = []

    async def forever() -> None:
        try:
            await anyio.sleep(60)
        except asyncio.CancelledError:
            state.append("cancelled")
            raise

    t0 = time.monotonic()
    async with app.run_worker(timeout=0.2) as worker:
        worker.tasks.start_soon(forever)
    assert time.monotonic() - t0 < 3
    assert state == ["cancelled"]
    assert len(worker.tasks) == 0


async def test_death_handler_running_at_exit_is_not_abandoned(app: asyncjobs.App) -> None:
    handled: list[str] = []

    async def on_death(ctx: Any, exc: BaseException) -> None:
        await anyio.sleep(0.3)
        handled.append(ctx.jid)

    app.death_handlers.append(on_death)

    @app.job(retry=0)
    async def doomed() -> None:
        raise ValueError("boom")

    async with app.run_worker(timeout=5) as worker:
        jid = await doomed.defer()
        await wait_for(lambda: worker.capsules[0].failed == 1)
    assert handled == [jid]


# -- background-loop health ---------------------------------------------------------------


@pytest.mark.parametrize("error", [ValueError, RuntimeError])
async def test_bug_in_the_scheduler_is_logged_and_marked_and_the_loop_goes_on(
    app: asyncjobs.App,
    redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    error: type[Exception],
) -> None:
    calls: list[int] = []
    broken = [True]
    original = Scheduler.read_upcoming

    async def buggy(self: Scheduler) -> list[tuple[float, bytes, str]]:
        calls.append(1)
        if broken[0]:
            raise error("scheduler bug")
        return await original(self)

    monkeypatch.setattr(Scheduler, "read_upcoming", buggy)
    worker = app.worker(scheduler_poll=0.02, heartbeat_interval=0.05)

    async def unhealthy() -> dict[str, str]:
        info = json.loads(await redis.hget(record_key(worker), "info") or b"{}")
        return dict(info.get("unhealthy", {}))

    async with running(worker):
        await wait_for(lambda: len(calls) >= 3)  # backs off and goes on
        errors = [
            r
            for r in caplog.records
            if r.name == "asyncjobs.scheduler" and r.levelno == logging.ERROR and r.exc_info
        ]
        assert errors and "scheduler bug" in errors[0].getMessage()

        async def marked() -> bool:
            return (await unhealthy()).get("scheduler") == f"{error.__name__}: scheduler bug"

        await wait_for(marked)
        broken[0] = False

        async def cleared() -> bool:
            return "scheduler" not in await unhealthy()

        await wait_for(cleared)


@pytest.mark.parametrize(
    ("loop", "cls", "method"),
    [
        ("reaper", Reaper, "reap_once"),
        ("heartbeat", Heartbeat, "beat"),
        ("acker", Acker, "_write"),
    ],
)
async def test_bug_in_a_background_loop_is_logged_and_the_loop_recovers(
    app: asyncjobs.App,
    redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    loop: str,
    cls: type[Any],
    method: str,
) -> None:
    ran: list[int] = []

    @app.job
    async def touch(n: int) -> None:
        ran.append(n)

    failures = [2]
    original = getattr(cls, method)

    async def buggy(self: Any, *args: Any) -> Any:
        if failures[0] > 0:
            failures[0] -= 1
            raise ValueError(f"{loop} bug")
        return await original(self, *args)

    worker = app.worker(heartbeat_interval=0.05)
    async with running(worker):
        monkeypatch.setattr(cls, method, buggy)
        await touch.defer(1)
        await wait_for(lambda: failures[0] == 0)
        errors = [
            r
            for r in caplog.records
            if r.levelno == logging.ERROR and f"{loop} bug" in r.getMessage()
        ]
        assert errors and errors[0].exc_info
        # It goes on: the job is acknowledged, the loop healthy again.
        await wait_for(lambda: ran == [1])
        await worker.wait_idle()
        await wait_for(lambda: loop not in worker.health.unhealthy)
    assert await redis.get("{asyncjobs}:stat:processed") == b"1"
