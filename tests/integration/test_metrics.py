"""Per-job metrics (App(metrics=True)): written with the acknowledgements, read back by
asyncjobs.api over a window and as totals."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from asyncjobs._metrics import BOUNDS_MS, minute_stamp
from tests.conftest import running, text, wait_for

pytestmark = pytest.mark.timeout(60)


class Boom(Exception):
    pass


@pytest.fixture
async def mapp(redis_url: str) -> AsyncIterator[asyncjobs.App]:
    application = asyncjobs.App(redis_url, metrics=True)
    yield application
    await application.aclose()


async def test_runs_failures_and_times_are_counted(
    mapp: asyncjobs.App, redis: aioredis.Redis
) -> None:
    ran: list[int] = []

    @mapp.job(name="nap")
    async def nap(i: int) -> None:
        await anyio.sleep(0.05)
        ran.append(i)

    @mapp.job(name="fail", retry=1, queue="low")
    async def fail() -> None:
        raise Boom("no")

    @mapp.job(name="doomed", retry=0, queue="low")
    async def doomed() -> None:
        raise Boom("dead")

    for i in range(10):
        await nap.defer(i)
    await fail.defer()
    await doomed.defer()
    async with running(mapp.worker(queues=["default", "low"], concurrency=20)):
        await wait_for(lambda: len(ran) == 10)
        await wait_for(lambda: _processed(redis, 12), timeout=10)
    report = await api.job_metrics(mapp, 1)
    by = {j.job: j for j in report.jobs}
    assert by["nap"].runs == 10 and by["nap"].failures == 0
    # 50 ms naps: past the 30 ms bound; later only by the box's load.
    assert by["nap"].p50_ms is not None and 30 <= by["nap"].p50_ms <= 500
    assert by["nap"].seconds >= 0.5
    assert sum(by["nap"].histogram) == 10
    assert sum(by["nap"].latency_histogram) == 10
    assert by["fail"].runs == 1 and by["fail"].failures == 1
    assert by["doomed"].runs == 1 and by["doomed"].failures == 1
    assert report.jobs[0].job == "nap"  # busiest first
    assert sum(p.runs.get("nap", 0) for p in report.series) == 10
    totals = await api.metrics_totals(mapp)
    counts = {(c.queue, c.job): c for c in totals.counts}
    assert counts["default", "nap"].runs == 10
    assert counts["low", "fail"].retried == 1 and counts["low", "fail"].failed == 1
    assert counts["low", "doomed"].dead == 1
    assert totals.execution["nap"].count == 10
    assert totals.execution["nap"].sum_seconds >= 0.5
    assert totals.latency["default"].count == 10
    assert totals.latency["low"].count == 2


async def _processed(redis: aioredis.Redis, n: int) -> bool:
    raw = await redis.get("{asyncjobs}:stat:processed")
    return raw is not None and int(raw) >= n


async def test_off_by_default_writes_nothing(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    done: list[int] = []

    @app.job
    async def one() -> None:
        done.append(1)

    await one.defer()
    async with running(app.worker()):
        await wait_for(lambda: _processed(redis, 1))
    keys = [text(k) for k in await redis.keys("*")]
    assert not [k for k in keys if k.startswith("{asyncjobs}:m:")], keys
    report = await api.job_metrics(app, 1)
    assert report.jobs == []


async def test_minute_hash_expires(mapp: asyncjobs.App, redis: aioredis.Redis) -> None:
    @mapp.job
    async def one() -> None:
        pass

    await one.defer()
    async with running(mapp.worker()):
        await wait_for(lambda: _processed(redis, 1))
    keys = [text(k) for k in await redis.keys("{asyncjobs}:m:*")]
    minute = [k for k in keys if k != "{asyncjobs}:m:total" and ":m:last:" not in k]
    (last,) = [k for k in keys if ":m:last:" in k]  # the worker's last metrics token
    assert 0 < await redis.ttl(last) <= 3600
    assert minute and all(k[len("{asyncjobs}:m:") :].isdigit() for k in minute)
    ttl = await redis.ttl(minute[0])
    assert 72 * 3600 < ttl <= 73 * 3600
    assert await redis.ttl("{asyncjobs}:m:total") == -1
    assert minute_stamp(time.time()) >= minute[0][-10:]
    assert len(BOUNDS_MS) == 26


async def test_window_is_checked(mapp: asyncjobs.App) -> None:
    with pytest.raises(api.InvalidArgument, match="hours must be 1 to 72"):
        await api.job_metrics(mapp, 73)


async def test_a_repeated_ack_counts_nothing_twice(
    mapp: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """The acker writes a batch again when the reply was lost: its metrics (sent again
    with the same token), like the processed counter, count once; the next token
    counts. A call without fields (the metrics left when the worker went idle) writes
    its metrics too."""
    from asyncjobs._metrics import Recorder
    from asyncjobs._store._metrics import metrics_args

    await mapp.connect()
    store = mapp.store
    assert store is not None
    inflight = mapp.keys.inflight("h:1:abc")
    await redis.hset(inflight, mapping={"j1": "{}", "j2": "{}"})
    rec = Recorder()
    rec.record("job", "default", 0.01, 0.002, 0)
    rec.record("job", "default", 0.02, 0.002, 0)
    now = time.time()
    last = mapp.keys.metrics_last("h:1:abc")
    metrics = metrics_args(mapp.keys, now, rec, last, "1")
    day = __import__("datetime").date.today()
    for _ in range(2):
        await store.done(
            inflight, [b"j1", b"j2"], day=day, ttl=60, conn=store.client, metrics=metrics
        )
    report = await api.job_metrics(mapp, 1, now=now)
    assert [(j.job, j.runs) for j in report.jobs] == [("job", 2)]
    # ack.lua (a batch with a failure) the same way
    await redis.hset(inflight, mapping={"j3": "{}", "j4": "{}"})
    rec = Recorder()
    rec.record("job", "default", 0.01, 0.002, 0)
    rec.record("job", "default", 0.01, 0.002, 2)
    metrics = metrics_args(mapp.keys, now, rec, last, "2")
    moves = [b"j4", "dead", repr(now), b"{}"]
    for _ in range(2):
        await store.ack(
            inflight, [b"j3"], moves, now=now, ttl=60, conn=store.client, metrics=metrics
        )
    totals = await api.metrics_totals(mapp)
    (c,) = totals.counts
    assert (c.runs, c.failed, c.dead) == (4, 1, 1)
    assert int(await redis.get("{asyncjobs}:stat:processed") or 0) == 4
    assert await redis.zcard("{asyncjobs}:dead") == 1
    rec = Recorder()
    rec.record("job", "default", 0.01, 0.002, 0)
    metrics = metrics_args(mapp.keys, now, rec, last, "3")
    for _ in range(2):
        assert (
            await store.done(inflight, [], day=day, ttl=60, conn=store.client, metrics=metrics) == 0
        )
    (c,) = (await api.metrics_totals(mapp)).counts
    assert c.runs == 5
    assert await redis.ttl(last) > 3000


async def test_the_script_writes_every_increment(
    mapp: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """done.lua writes every increment of a batch of many values, groups and outcomes
    (the metrics arguments read from the end of ARGV, after the fields)."""
    import random

    from asyncjobs._metrics import DEAD, DISCARD, OK, RETRY, Recorder
    from asyncjobs._store._metrics import metrics_args

    await mapp.connect()
    store = mapp.store
    assert store is not None
    rng = random.Random(7)
    values = [b / 1000 for b in BOUNDS_MS] + [0.0, -0.5, 1e-7, 400.0]
    values += [rng.lognormvariate(-4, 2) for _ in range(500)]
    rec = Recorder()
    outcomes = (OK, OK, OK, RETRY, DEAD, DISCARD)
    for i, v in enumerate(values):
        job = ("a.job", "b:job|x")[i % 2]
        queue = ("default", "low")[i % 3 == 0]
        rec.record(job, queue, v, values[-1 - i], outcomes[i % len(outcomes)])
    minute, total = rec.increments()
    inflight = mapp.keys.inflight("h:1:abc")
    fields = [f"j{i}".encode() for i in range(len(values))]
    await redis.hset(inflight, mapping=dict.fromkeys(fields, "{}"))
    now = time.time()
    day = __import__("datetime").date.today()
    removed = await store.done(
        inflight,
        fields,
        day=day,
        ttl=60,
        conn=store.client,
        metrics=metrics_args(mapp.keys, now, rec, mapp.keys.metrics_last("h:1:abc"), "1"),
    )
    assert removed == len(values)
    got_minute = {
        text(k): int(v)
        for k, v in (await redis.hgetall(mapp.keys.metrics_minute(minute_stamp(now)))).items()
    }
    got_total = {text(k): int(v) for k, v in (await redis.hgetall(mapp.keys.metrics_total)).items()}
    assert got_minute == minute
    assert got_total == total


async def test_metrics_left_after_the_last_outcome_are_written_when_idle_and_at_stop(
    mapp: asyncjobs.App, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metrics go out with acknowledgements at most every 0.1 s: those left after the
    last outcome are written once the worker idles (0.1 s), or when it stops."""
    from asyncjobs._worker import acker, metrics

    monkeypatch.setattr(metrics, "EVERY", 3600.0)  # none go with acks: idle or stop only

    @mapp.job(name="tick")
    async def tick() -> None:
        pass

    async def runs() -> int:
        return sum(j.runs for j in (await api.job_metrics(mapp, 1)).jobs)

    await tick.defer()
    async with running(mapp.worker()):
        await wait_for(lambda: _processed(redis, 1))
        await wait_for(lambda: _equals(runs, 1), timeout=2)  # idle: written alone
        monkeypatch.setattr(acker, "METRICS_IDLE", 3600.0)  # from now on, only at stop
        await tick.defer_many([(), (), ()])
        await wait_for(lambda: _processed(redis, 4))
        await anyio.sleep(0.3)
        assert await runs() == 1
    assert await runs() == 4


async def _equals(fn: Any, n: int) -> bool:
    return bool(await fn() == n)
