"""Periodic jobs against a real Redis: ticks enqueued once, reconciliation, pause,
resume, run now, remove, the missed-tick policies."""

from __future__ import annotations

import logging
import time

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from asyncjobs._periodic import Cron
from tests.conftest import cli, loads, running, text, wait_for

NS = "{asyncjobs}"


async def test_every_second_ticks_once_with_two_workers(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    runs: list[float] = []

    @app.periodic("* * * * * *")
    async def tick() -> None:
        runs.append(time.time())

    w1, w2 = app.worker(), app.worker()
    async with running(w1), running(w2):
        await wait_for(lambda: len(runs) >= 3, timeout=6)
    history = [
        text(h).split() for h in await redis.lrange(f"{NS}:periodic:{tick.name}:history", 0, -1)
    ]
    ticks = [int(h[0]) for h in history]
    assert len(ticks) == len(set(ticks)), history
    assert ticks == list(range(ticks[0], ticks[0] - len(ticks), -1)), history
    assert w1.periodic is not None and w2.periodic is not None
    assert w1.periodic.enqueued + w2.periodic.enqueued == len(ticks)
    for late in w1.periodic.lateness + w2.periodic.lateness:
        assert late >= 0


async def test_no_periodic_entry_no_loop(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job
    async def plain() -> None:
        pass

    w = app.worker()
    async with running(w):
        pass
    assert w.periodic is None
    assert await redis.keys(f"{NS}:periodic*") == []


def test_cron_smoke() -> None:
    assert Cron("*/5 * * * *").next_after(0) == 300


async def test_list_pause_resume_run_through_api_and_cli(
    app: asyncjobs.App, redis_url: str, redis: aioredis.Redis
) -> None:
    runs: list[str] = []

    @app.job
    async def report(kind: str) -> None:
        runs.append(kind)

    app.periodic(report, "* * * * * *", args={"kind": "fast"}, name="fast-report", queue="q1")
    w = app.worker(queues=["q1"])
    async with running(w):
        await wait_for(lambda: len(runs) >= 1, timeout=4)
        [info] = await api.periodic_entries(app)
        assert (info.name, info.job, info.cron, info.queue) == (
            "fast-report",
            report.name,
            "* * * * * *",
            "q1",
        )
        assert info.args == {"kind": "fast"} and not info.paused
        assert info.last_tick is not None and info.next_tick is not None
        assert info.next_tick > info.last_tick
        assert info.history[0].how == "tick" and info.history[0].tick == info.last_tick

        await api.pause_periodic(app, "fast-report")
        paused_at = len(runs)
        await anyio.sleep(2.2)
        [info] = await api.periodic_entries(app)
        assert info.paused and info.next_tick is None
        assert len(runs) <= paused_at + 1  # at most a tick already on its way

        # Run now works while paused, and does not move the schedule.
        before = len(runs)
        jid = await api.run_periodic(app, "fast-report")
        await wait_for(lambda: len(runs) == before + 1)
        [info] = await api.periodic_entries(app)
        assert info.history[0].how == "now" and info.history[0].jid == jid

        out = await cli(redis_url, "periodic", "resume", "fast-report")
        assert out.returncode == 0, out.stderr
        n = len(runs)
        await wait_for(lambda: len(runs) >= n + 2, timeout=4)

        out = await cli(redis_url, "periodic", "list")
        assert out.returncode == 0 and b"fast-report" in out.stdout and b"active" in out.stdout
        out = await cli(redis_url, "periodic", "list", "--json")
        assert loads(out.stdout)[0]["name"] == "fast-report"
        out = await cli(redis_url, "periodic", "run", "fast-report")
        assert out.returncode == 0 and b"enqueued" in out.stdout
        out = await cli(redis_url, "periodic", "pause", "nope")
        assert out.returncode == 2
        assert out.stderr.count(b"\n") == 1 and b"no periodic entry 'nope'" in out.stderr
    with pytest.raises(api.PeriodicNotFound):
        await api.run_periodic(app, "nope")


async def test_entries_removed_from_code_are_deleted_at_start(
    redis_url: str, redis: aioredis.Redis
) -> None:
    old = asyncjobs.App(redis_url)

    @old.periodic("0 3 * * *", name="gone")
    async def nightly() -> None:
        pass

    @old.periodic("0 4 * * *", name="kept")
    async def kept() -> None:
        pass

    async with running(old.worker()):
        pass
    assert {e.name for e in await api.periodic_entries(old)} == {"gone", "kept"}
    await redis.hset(f"{NS}:periodic:gone", "last", "1")

    new = asyncjobs.App(redis_url)
    new.periodic(new.job(kept.fn), "0 4 * * *", name="kept")
    async with running(new.worker()):
        pass
    assert [e.name for e in await api.periodic_entries(new)] == ["kept"]
    assert not await redis.exists(f"{NS}:periodic:gone")
    # A process still running the old code enqueues nothing for the removed entry.
    store = await old.open_store()
    assert await store.periodic_enqueue("gone", 10, "default", b"{}", "j", 1.0, history=1) == -2
    await old.aclose()
    await new.aclose()


@pytest.mark.parametrize("missed", ["skip", "latest"])
async def test_missed_ticks_after_downtime_follow_the_policy(
    app: asyncjobs.App, redis: aioredis.Redis, missed: str
) -> None:
    runs: list[float] = []

    @app.periodic("0 3 * * *", missed=missed, name="nightly")
    async def nightly() -> None:
        runs.append(time.time())

    # As if the last run was 3 days ago and no worker ran since.
    last = Cron("0 3 * * *").latest_at_or_before(time.time() - 3 * 86400)
    assert last is not None
    await redis.hset(f"{NS}:periodic:nightly", "last", repr(last))
    async with running(app.worker()), running(app.worker()):
        if missed == "latest":
            await wait_for(lambda: len(runs) == 1)
        await anyio.sleep(0.3)
    assert len(runs) == (1 if missed == "latest" else 0)  # once, with two workers
    [info] = await api.periodic_entries(app)
    if missed == "latest":
        assert info.history[0].how == "missed"
        assert info.last_tick == Cron("0 3 * * *").latest_at_or_before(time.time() - 60)
    else:
        assert info.last_tick == last


async def test_ticks_go_on_after_redis_lost_its_data(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    runs: list[float] = []

    @app.periodic("* * * * * *")
    async def tick() -> None:
        runs.append(time.time())

    async with running(app.worker()):
        await wait_for(lambda: len(runs) >= 1, timeout=4)
        await redis.flushall()  # as a restart without persistence
        n = len(runs)
        await wait_for(lambda: len(runs) >= n + 2, timeout=5)
    assert [e.name for e in await api.periodic_entries(app)] == [tick.name]


async def test_ticks_of_a_pause_are_not_missed_ones_after_resume(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    runs: list[float] = []

    @app.periodic("0 3 * * *", missed="latest", name="nightly")
    async def nightly() -> None:
        runs.append(time.time())

    last = Cron("0 3 * * *").latest_at_or_before(time.time() - 3 * 86400)
    definition = app.periodic_entries["nightly"].definition
    await redis.hset(f"{NS}:periodic", "nightly", definition)  # as if declared before
    await redis.hset(f"{NS}:periodic:nightly", mapping={"last": repr(last), "paused": "1"})
    await api.resume_periodic(app, "nightly")  # paused for three days, resumed now
    async with running(app.worker()):
        await anyio.sleep(0.3)
    assert runs == []


async def test_an_unreadable_definition_is_one_line(
    app: asyncjobs.App, redis_url: str, redis: aioredis.Redis
) -> None:
    await redis.hset(f"{NS}:periodic", "odd", b"not json")
    with pytest.raises(asyncjobs.AsyncJobsError, match="stored definition is unreadable"):
        await api.periodic_entries(app)
    out = await cli(redis_url, "periodic", "run", "odd")
    assert out.returncode == 2 and out.stderr.count(b"\n") == 1, out.stderr


async def test_a_worker_quieted_before_it_started_enqueues_no_tick(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    @app.periodic("* * * * * *")
    async def tick() -> None:
        pass

    w = app.worker()
    w.quiet_down()
    async with running(w):
        await anyio.sleep(1.5)
    assert await redis.llen(f"{NS}:queue:default") == 0
    assert await redis.llen(f"{NS}:periodic:{tick.name}:history") == 0


async def test_check_lists_the_periodic_entries(redis_url: str) -> None:
    out = await cli(redis_url, "check", "tests.apps.periodic:app")
    assert out.returncode == 0, out.stderr
    assert b"  periodic every_second  '* * * * * *' UTC -> tests.apps.periodic.every_second" in (
        out.stdout
    )


async def _declare_two(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    """Entries "a" and "b" stored as a worker writes them, each with state and history."""

    @app.job
    async def report(kind: str) -> None:
        pass

    app.periodic(report, "0 7 * * *", args={"kind": "a"}, name="a")
    app.periodic(report, "0 8 * * *", args={"kind": "b"}, name="b")
    async with running(app.worker()):
        pass
    for name in ("a", "b"):
        await api.run_periodic(app, name)  # a state hash and a history
        assert await redis.exists(f"{NS}:periodic:{name}", f"{NS}:periodic:{name}:history") == 2


async def test_remove_deletes_the_entry_its_state_and_history(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    await _declare_two(app, redis)
    await api.remove_periodic(app, "a")
    assert [e.name for e in await api.periodic_entries(app)] == ["b"]
    assert await redis.hkeys(f"{NS}:periodic") == [b"b"]
    assert await redis.exists(f"{NS}:periodic:a", f"{NS}:periodic:a:history") == 0
    assert await redis.exists(f"{NS}:periodic:b", f"{NS}:periodic:b:history") == 2

    # An unknown name among known ones: one error naming it, and nothing removed.
    with pytest.raises(api.PeriodicNotFound, match=r"no periodic entry 'a' .*nothing removed"):
        await api.remove_periodic(app, "b", "a")
    assert [e.name for e in await api.periodic_entries(app)] == ["b"]
    with pytest.raises(api.PeriodicNotFound, match="no periodic entries 'x', 'y'"):
        await api.remove_periodic(app, "x", "y")

    assert await api.clear_periodic(app) == ["b"]
    assert await api.periodic_entries(app) == []
    assert await redis.keys(f"{NS}:periodic:*") == []
    assert await api.clear_periodic(app) == []  # nothing stored: nothing to do


async def test_remove_through_the_cli(
    app: asyncjobs.App, redis_url: str, redis: aioredis.Redis
) -> None:
    await _declare_two(app, redis)

    out = await cli(redis_url, "periodic", "remove", "a", "nope")
    assert out.returncode == 2 and out.stdout == b""
    assert out.stderr.count(b"\n") == 1, out.stderr
    assert b"asyncjobs: error: no periodic entry 'nope'" in out.stderr
    assert b"nothing removed" in out.stderr
    out = await cli(redis_url, "periodic", "remove")
    assert out.returncode == 2 and out.stderr.count(b"\n") == 1, out.stderr
    assert b"give NAME" in out.stderr
    out = await cli(redis_url, "periodic", "remove", "a", "--all", "--yes")
    assert out.returncode == 2 and out.stderr.count(b"\n") == 1, out.stderr
    out = await cli(redis_url, "periodic", "remove", "--all")
    assert out.returncode == 2 and out.stderr.count(b"\n") == 1, out.stderr
    assert b"add --yes to confirm" in out.stderr
    assert sorted(await redis.hkeys(f"{NS}:periodic")) == [b"a", b"b"]  # all refused

    out = await cli(redis_url, "periodic", "remove", "a", "a")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"a: removed\n"
    assert await redis.hkeys(f"{NS}:periodic") == [b"b"]
    assert not await redis.exists(f"{NS}:periodic:a", f"{NS}:periodic:a:history")

    out = await cli(redis_url, "periodic", "remove", "--all", "--yes")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"removed 1 periodic entry: b\n"
    assert await redis.keys(f"{NS}:periodic:*") == []
    out = await cli(redis_url, "periodic", "list")
    assert out.returncode == 0 and b" b " not in out.stdout


async def test_a_running_worker_stops_enqueuing_a_removed_entry(
    app: asyncjobs.App, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "asyncjobs.periodic")

    # The only entry, on a queue the worker does not fetch: its jobs stay there to count.
    @app.periodic("* * * * * *", queue="ticks")
    async def tick() -> None:
        pass

    w = app.worker(queues=["default"])
    async with running(w):
        loop = w.periodic
        assert loop is not None
        await wait_for(lambda: loop.enqueued >= 1, timeout=4)
        await api.remove_periodic(app, tick.name)
        removed_at = time.time()
        queued = await redis.llen(f"{NS}:queue:ticks")  # every tick before the removal
        # Three ticks the worker tried after the removal (a cursor moves past a tick
        # once its call returned): none enqueued, the schedule not written again.
        await wait_for(lambda: loop.cursors[tick.name] > removed_at + 3, timeout=6)
        assert await redis.llen(f"{NS}:queue:ticks") == queued
        assert await api.periodic_entries(app) == []
    refused = [r for r in caplog.records if "no longer in the schedule" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]

    # A worker started with the code that declares it writes it again (the documented
    # model: the code defines the schedule), and it ticks again.
    w = app.worker(queues=["default"])
    async with running(w):
        assert [e.name for e in await api.periodic_entries(app)] == [tick.name]
        assert not await redis.exists(f"{NS}:periodic-removed")
        await wait_for(lambda: w.periodic is not None and w.periodic.enqueued >= 1, timeout=4)
