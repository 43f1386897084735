"""The introspection API and the inspection CLI, against a real Redis."""

from __future__ import annotations

import time

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from tests.conftest import all_sent, cli, loads, text, wait_for


@pytest.fixture
def jobs(app: asyncjobs.App) -> tuple[asyncjobs.Job[..., None], asyncjobs.Job[..., None]]:
    @app.job(name="shop.resize")
    async def resize(n: int) -> None: ...

    @app.job(name="shop.email")
    async def email(n: int) -> None: ...

    return resize, email


async def test_queues_size_and_latency(
    app: asyncjobs.App, jobs: tuple[asyncjobs.Job[..., None], ...]
) -> None:
    resize, email = jobs
    await resize.defer(1)
    await anyio.sleep(0.05)
    await resize.defer(2)
    await email.configure(queue="mail").defer(3)
    qs = {q.name: q for q in await api.queues(app)}
    assert qs["default"].size == 2 and qs["mail"].size == 1
    assert qs["default"].latency >= 0.05
    entries = await api.queue_entries(app, "default")
    assert [e.args["n"] for e in entries] == [1, 2]  # next to run first
    assert await api.clear_queue(app, "default") == 2
    assert [q.name for q in await api.queues(app)] == ["mail"]


async def test_sets_listing_filtering_and_moves(
    app: asyncjobs.App, redis: aioredis.Redis, jobs: tuple[asyncjobs.Job[..., None], ...]
) -> None:
    resize, email = jobs
    jids = all_sent([await resize.configure(delay=100 + i).defer(i) for i in range(5)])
    ejid = await email.configure(delay=50).defer(9)
    scheduled = api.ScheduledSet(app)
    assert await scheduled.size() == 6
    page = await scheduled.entries(limit=2)
    assert [e.jid for e in page] == [ejid, jids[0]]  # by due time
    only = await scheduled.entries(job="resize", offset=1, limit=2)
    assert [e.jid for e in only] == jids[1:3]
    found = await scheduled.find(jids[2])
    assert found.args == {"n": 2} and found.score is not None and found.score > time.time()
    await scheduled.delete(jids[0])
    await scheduled.kill(jids[1])
    await scheduled.retry(jids[2])
    assert await scheduled.size() == 3
    dead = await api.DeadSet(app).entries()
    assert [(e.jid, e.error_class) for e in dead] == [(jids[1], "Killed")]
    [queued] = await api.queue_entries(app, "default")
    assert queued.jid == jids[2] and queued.enqueued_at is not None
    with pytest.raises(api.JobNotFound):
        await scheduled.delete("nope")
    assert await scheduled.retry_all() == 3
    assert await scheduled.size() == 0
    assert len(await api.queue_entries(app, "default")) == 4  # the one retried before, too
    assert await api.DeadSet(app).clear() == 1


async def test_stats_processes_and_inflight(app: asyncjobs.App) -> None:
    gate = anyio.Event()

    @app.job
    async def hold(n: int) -> None:
        await gate.wait()

    await hold.defer_many([(i,) for i in range(3)])
    worker = app.worker(concurrency=5, heartbeat_interval=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: sum(len(c.running) for c in worker.capsules) == 3)

        async def busy() -> bool:
            ps = await api.ProcessSet(app).list()
            return len(ps) == 1 and ps[0].busy == 3

        await wait_for(busy)
        [proc] = await api.ProcessSet(app).list()
        assert proc.id == worker.process_id and proc.concurrency == 5
        held = await api.ProcessSet(app).inflight(proc.id)
        assert sorted(e.args["n"] for e in held) == [0, 1, 2]
        gate.set()
        await worker.wait_idle()
        stats = await api.Stats.fetch(app)
        assert stats.processed == 3 and stats.failed == 0
        today = next(iter(stats.history))
        assert stats.history[today] == {"processed": 3, "failed": 0}
        await api.ProcessSet(app).send("stop", [proc.id])
    assert await api.ProcessSet(app).list() == []


async def test_cli_tables_and_json(
    app: asyncjobs.App, redis_url: str, jobs: tuple[asyncjobs.Job[..., None], ...]
) -> None:
    resize, _ = jobs
    jid = await resize.configure(delay=60).defer(7)
    assert jid is not None
    await resize.defer(8)
    r = await cli(redis_url, "scheduled")
    assert r.returncode == 0 and jid in text(r.stdout) and "shop.resize" in text(r.stdout)
    r = await cli(redis_url, "queues", "--json")
    assert loads(r.stdout) == [{"name": "default", "size": 1, "latency": pytest.approx(0, abs=5)}]
    r = await cli(redis_url, "stats", "--json")
    s = loads(r.stdout)
    assert (s["scheduled"], s["enqueued"], s["dead"]) == (1, 1, 0)
    r = await cli(redis_url, "kill", jid)
    assert r.returncode == 0
    r = await cli(redis_url, "dead", "--json", "--job", "resize")
    assert [e["jid"] for e in loads(r.stdout)] == [jid]
    r = await cli(redis_url, "queues", "--clear", "default")
    assert r.returncode == 2 and "--yes" in text(r.stderr)
    r = await cli(redis_url, "queues", "--clear", "default", "--yes")
    assert r.returncode == 0 and "1 jobs deleted" in text(r.stdout)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["retry", "nosuchjid"], "no job with jid nosuchjid"),
        (
            ["stats", "-r", "redis://u:hunter2@127.0.0.1:1/0"],
            "cannot reach Redis at redis://u:***@127.0.0.1:1/0",
        ),
        (["stats", "--app", "nosuch:app"], "cannot import module 'nosuch'"),
        (["quiet"], "give PROCESS_ID"),
        (["dead", "--limit", "x"], "Invalid value for '--limit'"),
    ],
)
async def test_cli_errors_are_one_line(redis_url: str, args: list[str], needle: str) -> None:
    r = await cli(redis_url, *args)
    err = text(r.stderr)
    assert r.returncode == 2, err
    assert needle in err
    assert "hunter2" not in err
    assert len(err.strip().splitlines()) == 1, err
