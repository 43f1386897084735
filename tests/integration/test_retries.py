"""Retries, retry_in, permanent errors, the dead set, death hooks, scheduled promotion."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from tests.conftest import cli, loads, running, spawn_worker, text, wait_for


def fast(count: int, exc: BaseException) -> float:
    return 0.05


async def test_failing_twice_then_succeeding_runs_three_times(app: asyncjobs.App) -> None:
    runs: list[int] = []

    @app.job(retry_in=fast)
    async def flaky() -> None:
        runs.append(asyncjobs.current_job().retry_count)
        if len(runs) < 3:
            raise RuntimeError("not yet")

    await flaky.defer()
    async with running(app.worker()):
        await wait_for(lambda: len(runs) == 3)
        await anyio.sleep(0.3)  # and no fourth run comes
    assert runs == [0, 1, 2]
    assert await api.RetrySet(app).size() == 0
    assert await api.DeadSet(app).size() == 0


async def test_retry_1_runs_twice_then_dead_then_cli_retry_runs_it(
    app: asyncjobs.App, redis_url: str, redis: aioredis.Redis
) -> None:
    runs: list[int] = []
    deaths: list[tuple[str, str]] = []

    async def on_exhausted(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        deaths.append((ctx.jid, type(exc).__name__))

    async def broken_handler(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        raise RuntimeError("a broken death handler is logged, never fatal")

    app.death_handlers.append(broken_handler)

    @app.job(retry=1, retry_in=fast, on_exhausted=on_exhausted)
    async def doomed(n: int) -> None:
        runs.append(n)
        raise KeyError(f"missing {n}")

    jid = await doomed.defer(5)
    assert jid is not None
    async with running(app.worker()):
        await wait_for(lambda: api.DeadSet(app).size())
        await wait_for(lambda: bool(deaths))
        assert runs == [5, 5]
        assert deaths == [(jid, "KeyError")]
        r = await cli(redis_url, "dead", "--json")
        assert r.returncode == 0, r.stderr
        [entry] = loads(r.stdout)
        assert entry["jid"] == jid
        assert entry["error_class"] == "KeyError"
        assert entry["error_message"] == "'missing 5'"
        assert entry["args"] == {"n": 5}
        r = await cli(redis_url, "retry", jid)
        assert r.returncode == 0, r.stderr
        assert "was in the dead set" in text(r.stdout)
        await wait_for(lambda: len(runs) == 3)
        await wait_for(lambda: api.DeadSet(app).size())
    assert await redis.get(app.keys.stat_failed) == b"3"


async def test_retry_in_answers(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    runs: Counter[str] = Counter()

    def answer(count: int, exc: BaseException) -> float | str:
        return str(exc) if str(exc) in ("kill", "discard") else 0.05

    @app.job(retry=3, retry_in=answer)
    async def job(mode: str) -> None:
        runs[mode] += 1
        raise RuntimeError(mode)

    await job.defer("kill")
    await job.defer("discard")
    await job.defer("number")
    async with running(app.worker()):
        await wait_for(lambda: runs["number"] == 4, timeout=5)
        await wait_for(lambda: _dead_count(app, 2))
    assert runs["kill"] == 1 and runs["discard"] == 1
    dead = [e.args["mode"] for e in await api.DeadSet(app).entries()]
    assert sorted(dead) == ["kill", "number"]  # discard leaves no trace but a log line


async def _dead_count(app: asyncjobs.App, n: int) -> bool:
    return await api.DeadSet(app).size() >= n


class BadRecord(asyncjobs.Permanent):
    pass


async def test_permanent_errors_go_dead_at_once(app: asyncjobs.App) -> None:
    runs: list[str] = []

    @app.job(dead_on=(ValueError,), discard_on=(LookupError,))
    async def parse(kind: str) -> None:
        runs.append(kind)
        if kind == "permanent":
            raise BadRecord("row 3 is garbage")
        if kind == "value":
            raise ValueError("bad value")
        raise KeyError("gone")

    for kind in ("permanent", "value", "lookup"):
        await parse.defer(kind)
    async with running(app.worker()) as w:
        await wait_for(lambda: len(runs) == 3)
        await w.wait_idle()
    assert sorted(e.error_class or "" for e in await api.DeadSet(app).entries()) == [
        "BadRecord",
        "ValueError",
    ]
    assert await api.RetrySet(app).size() == 0


async def test_dead_on_and_discard_on_take_a_class_or_a_list(app: asyncjobs.App) -> None:
    """As Sidekiq users write them: one class, or a list; a list once crashed the worker
    at the job's first failure (isinstance takes no list)."""
    runs: list[str] = []

    @app.job(dead_on=ValueError, discard_on=[LookupError, OSError])
    async def parse(kind: str) -> None:
        runs.append(kind)
        raise ValueError("bad") if kind == "value" else KeyError("gone")

    for kind in ("value", "lookup"):
        await parse.defer(kind)
    async with running(app.worker()) as w:
        await wait_for(lambda: len(runs) == 2)
        await w.wait_idle()
        assert w.statistics()["failed"] == 2
    assert [e.error_class for e in await api.DeadSet(app).entries()] == ["ValueError"]
    assert await api.RetrySet(app).size() == 0
    with pytest.raises(asyncjobs.ConfigError, match="discard_on takes exception classes"):
        app.job(name="bad", discard_on=["KeyError"])(parse.fn)  # type: ignore[list-item]


async def test_dead_set_is_trimmed(redis_url: str) -> None:
    app = asyncjobs.App(redis_url, dead_max_jobs=5)

    @app.job(retry=0)
    async def die(n: int) -> None:
        raise RuntimeError(str(n))

    await die.defer_many([(i,) for i in range(12)])
    async with running(app.worker()) as w:
        await wait_for(lambda: _processed(app, 12))
        await w.wait_idle()
    assert await api.DeadSet(app).size() == 5
    await app.aclose()


async def _processed(app: asyncjobs.App, n: int) -> bool:
    return (await api.Stats.fetch(app)).processed >= n


async def test_two_processes_promote_1000_scheduled_jobs_exactly_once(
    redis_url: str, redis: aioredis.Redis
) -> None:
    from tests.apps import recorder

    recorder.app.redis_url = redis_url
    try:
        await recorder.record.configure(delay=1.0).defer_many([(n,) for n in range(1000)])
    finally:
        await recorder.app.aclose()
    procs = [spawn_worker(redis_url, "-c", "20") for _ in range(2)]
    try:
        await wait_for(lambda: _ran(redis, 1000), timeout=30)
        await anyio.sleep(0.5)
        ran = [int(text(x).split(":")[0]) for x in await redis.lrange("test:ran", 0, -1)]
        assert Counter(ran) == Counter(range(1000))
        assert await redis.zcard("{asyncjobs}:schedule") == 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            assert p.wait(15) == 0


async def _ran(redis: aioredis.Redis, n: int) -> bool:
    return int(await redis.llen("test:ran")) >= n
