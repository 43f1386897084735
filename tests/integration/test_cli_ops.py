"""What an operator does daily from the CLI: what each process runs now, a queue's jobs,
one job wherever it is, stats over N days, the dead set newest first."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from tests.conftest import all_sent, cli, loads, text, wait_for

Jobs = tuple[asyncjobs.Job[..., None], asyncjobs.Job[..., None]]


@pytest.fixture
def jobs(app: asyncjobs.App) -> Jobs:
    @app.job(name="shop.resize")
    async def resize(n: int, label: str = "") -> None: ...

    @app.job(name="shop.boom", retry=1)
    async def boom(n: int) -> None:
        raise ValueError(f"kaboom {n}")

    return resize, boom


async def _ok(redis_url: str, *args: str) -> str:
    r = await cli(redis_url, *args)
    assert r.returncode == 0, text(r.stderr)
    return text(r.stdout)


async def _refused(redis_url: str, *args: str) -> str:
    r = await cli(redis_url, *args)
    err = text(r.stderr)
    assert r.returncode == 2, err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
async def holding(app: asyncjobs.App) -> AsyncIterator[tuple[asyncjobs.Worker, list[str]]]:
    """A worker running three jobs that wait until the test ends. Its heartbeat is 60 s
    apart: the record's own busy count stays at its first beat's, 0."""
    gate = anyio.Event()

    @app.job(name="shop.hold")
    async def hold(n: int, blob: str) -> None:
        await gate.wait()

    jids = all_sent([await hold.defer(i, "x" * 200) for i in range(3)])
    worker = app.worker(concurrency=5, heartbeat_interval=60, heartbeat_ttl=200)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: sum(len(c.running) for c in worker.capsules) == 3)
        yield worker, jids
        gate.set()
        worker.stop()


async def test_processes_shows_current_jobs_and_busy(
    redis_url: str, holding: tuple[asyncjobs.Worker, list[str]]
) -> None:
    worker, jids = holding
    out = await _ok(redis_url, "processes")
    assert worker.process_id in out
    for jid in jids:
        assert jid in out
    assert "shop.hold" in out and "x" * 200 not in out  # arguments abbreviated
    [proc] = loads(await _ok(redis_url, "processes", "--json"))
    assert proc["busy"] == 3  # from the in-flight hash, not the beat-old record
    assert sorted(j["jid"] for j in proc["jobs"]) == sorted(jids)
    assert {j["queue"] for j in proc["jobs"]} == {"default"}
    # asyncjobs job finds a running job in its process
    found = loads(await _ok(redis_url, "job", jids[0], "--json"))
    assert found["state"] == "running" and found["process"] == worker.process_id
    assert found["job"]["args"] == {"n": 0, "blob": "x" * 200}


async def test_processes_shows_unhealthy_loops(
    app: asyncjobs.App, redis: aioredis.Redis, redis_url: str
) -> None:
    pid = "host:1:abcdef"
    info = {"hostname": "host", "pid": 1, "unhealthy": {"scheduler": "KeyError: 'x'"}}
    await redis.sadd(app.keys.processes, pid)
    await redis.hset(app.keys.process(pid), mapping={"info": json.dumps(info), "busy": 0})
    out = await _ok(redis_url, "processes")
    assert "unhealthy: host:1:abcdef: scheduler: KeyError: 'x'" in out
    [proc] = loads(await _ok(redis_url, "processes", "--json"))
    assert proc["unhealthy"] == {"scheduler": "KeyError: 'x'"}


async def test_queue_jobs_listed_paginated_and_deleted(
    app: asyncjobs.App, redis_url: str, jobs: Jobs
) -> None:
    resize, _ = jobs
    jids = all_sent([await resize.defer(i, label=f"L{i}") for i in range(5)])
    page = loads(
        await _ok(redis_url, "queues", "default", "--offset", "1", "--limit", "2", "--json")
    )
    assert [e["jid"] for e in page] == jids[1:3]  # next to run first
    out = await _ok(redis_url, "queues", "default")
    assert all(jid in out for jid in jids) and '"label":"L4"' in out
    out = await _ok(redis_url, "queues", "default", "--delete", jids[2])
    assert f"shop.resize {jids[2]}: deleted from queue default" in out
    assert [e.jid for e in await api.queue_entries(app, "default")] == [
        jids[0],
        jids[1],
        jids[3],
        jids[4],
    ]
    err = await _refused(redis_url, "queues", "default", "--delete", jids[2])
    assert f"no job with jid {jids[2]} waiting in queue default" in err
    err = await _refused(redis_url, "queues", "--delete", jids[0])
    assert "name the queue" in err


async def test_job_found_queued_scheduled_retrying_dead_with_backtrace(
    app: asyncjobs.App, redis_url: str, jobs: Jobs
) -> None:
    resize, boom = jobs
    queued = await resize.configure(queue="waiting").defer(1)
    scheduled = await resize.configure(delay=300).defer(2)
    failing = await boom.defer(3)
    assert queued and scheduled and failing
    # a worker on "default" runs only the failing job: it lands in the retry set
    worker = app.worker(queues=["default"])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: api.RetrySet(app).size())
        worker.stop()

    found = loads(await _ok(redis_url, "job", queued, "--json"))
    assert (found["state"], found["job"]["queue"]) == ("queued", "waiting")
    found = loads(await _ok(redis_url, "job", scheduled, "--json"))
    assert found["state"] == "scheduled" and found["job"]["args"] == {"n": 2}
    found = loads(await _ok(redis_url, "job", failing, "--json"))
    assert found["state"] == "retry"
    assert found["job"]["error_class"] == "ValueError"
    out = await _ok(redis_url, "job", failing)
    assert "retrying at" in out and "ValueError: kaboom 3" in out
    assert "backtrace:" in out and 'raise ValueError(f"kaboom {n}")' in out
    await api.RetrySet(app).kill(failing)
    found = loads(await _ok(redis_url, "job", failing, "--json"))
    assert found["state"] == "dead" and "kaboom 3" in found["job"]["error_message"]
    err = await _refused(redis_url, "job", "nosuchjid")
    assert "no job with jid nosuchjid" in err


async def test_dead_set_newest_first(app: asyncjobs.App, redis_url: str, jobs: Jobs) -> None:
    resize, _ = jobs
    jids = all_sent([await resize.configure(delay=100 + i).defer(i) for i in range(3)])
    for jid in jids:  # killed in this order: the last is the newest death
        await api.ScheduledSet(app).kill(jid)
        await anyio.sleep(0.01)
    listed = loads(await _ok(redis_url, "dead", "--json"))
    assert [e["jid"] for e in listed] == jids[::-1]
    assert [e.jid for e in await api.DeadSet(app).entries(limit=2)] == jids[:0:-1]


async def test_stats_days(redis_url: str) -> None:
    s = loads(await _ok(redis_url, "stats", "--days", "3", "--json"))
    assert len(s["history"]) == 3
    out = await _ok(redis_url, "stats", "--days", "2")
    assert out.count("\n20") == 2  # one row per day
    await _refused(redis_url, "stats", "--days", "0")


async def test_check_reports_unhealthy_loops_of_live_workers(
    app: asyncjobs.App, redis: aioredis.Redis, redis_url: str
) -> None:
    r = await cli(redis_url, "check", "tests.apps.recorder:app")
    assert r.returncode == 0, text(r.stderr)
    pid = "host:1:abcdef"
    info = {"hostname": "host", "pid": 1, "unhealthy": {"reaper": "KeyError: 'x'"}}
    await redis.sadd(app.keys.processes, pid)
    await redis.hset(app.keys.process(pid), mapping={"info": json.dumps(info), "busy": 0})
    r = await cli(redis_url, "check", "tests.apps.recorder:app")
    assert r.returncode == 1
    assert "problem: process host:1:abcdef: its reaper loop is failing: KeyError: 'x'" in text(
        r.stderr
    )


async def test_processes_shows_start_and_runtime_when_the_worker_publishes_them(
    app: asyncjobs.App, redis: aioredis.Redis, redis_url: str, jobs: Jobs
) -> None:
    # A record as a worker listing its running jobs (info.running: jid -> start) writes
    # it, with one job in its in-flight hash.
    resize, _ = jobs
    jid = await resize.defer(5)
    assert jid is not None
    [raw] = await redis.lrange(app.keys.queue("default"), 0, -1)
    pid = "host:2:abcdef"
    started = time.time() - 90
    info = {"hostname": "host", "pid": 2, "running": {jid: started}}
    await redis.sadd(app.keys.processes, pid)
    await redis.hset(app.keys.process(pid), mapping={"info": json.dumps(info), "busy": 1})
    await redis.hset(app.keys.inflight(pid), jid, raw)
    [proc] = loads(await _ok(redis_url, "processes", "--json"))
    assert proc["busy"] == 1 and [j["started_at"] for j in proc["jobs"]] == [started]
    before = time.time()
    out = await _ok(redis_url, "processes")
    after = time.time()
    # The runtime is as of the command's own clock: anywhere between these two (a loaded
    # machine takes seconds to start a Python process).
    shown = {
        f"{int(t) // 60}m{int(t) % 60:02d}s"
        for t in range(int(before - started), int(after - started) + 2)
    }
    assert any(runtime in out for runtime in shown), (shown, out)
