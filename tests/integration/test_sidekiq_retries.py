"""Sidekiq fidelity of retries and failures (issue 11), on a real Redis."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from tests.conftest import loads, running, wait_for


def fast(count: int, exc: BaseException) -> float:
    return 0.05


async def retry_entries(redis: aioredis.Redis, key: str) -> list[dict[str, Any]]:
    return [loads(m) for m in await redis.zrange(key, 0, -1)]


async def test_retry_count_means_retries_already_made_as_in_sidekiq(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    seen: list[int] = []

    @app.job(retry=2, retry_in=fast)
    async def flaky() -> None:
        seen.append(asyncjobs.current_job().retry_count)
        raise RuntimeError("always")

    jid = await flaky.defer()
    raw_first = loads((await redis.lrange(app.keys.queue("default"), 0, -1))[0])
    assert "retry_count" not in raw_first  # absent until the first failure, as in Sidekiq
    async with running(app.worker()):
        await wait_for(lambda: api.DeadSet(app).size())
    [dead] = await api.DeadSet(app).entries()
    assert dead.jid == jid
    # Three runs: the first, retry 1, retry 2; the job sees which run it is.
    assert seen == [0, 1, 2]
    # Dead after 2 retries: retry_count 2, Sidekiq's value for a job with retry: 2.
    assert dead.retry_count == 2
    raw = loads(dead.raw)
    assert raw["retry_count"] == 2 and raw["retried_at"] >= raw["failed_at"]


async def test_retry_set_entry_after_the_first_failure_has_retry_count_0(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    @app.job(retry=3)  # the default backoff: 15 s or more, the entry stays put
    async def fails() -> None:
        raise RuntimeError("no")

    await fails.defer()
    async with running(app.worker()) as w:
        await wait_for(lambda: api.RetrySet(app).size())
        await w.wait_idle()
    [entry] = await retry_entries(redis, app.keys.retry)
    assert entry["retry_count"] == 0
    assert "retried_at" not in entry  # only set once a retry has run (Sidekiq)
    [rec] = await api.RetrySet(app).entries()
    assert rec.retry_count == 0


async def test_backtrace_is_stored_packed_and_the_api_returns_its_lines(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    @app.job(retry=0, backtrace=True)
    async def explodes() -> None:
        raise ValueError("kaboom " + "y" * 20_000)

    jid = await explodes.defer()
    async with running(app.worker()):
        await wait_for(lambda: api.DeadSet(app).size())
    [raw] = await retry_entries(redis, app.keys.dead)
    assert isinstance(raw["error_backtrace"], str)  # zlib + base64, as Sidekiq stores it
    assert jid is not None
    rec = await api.DeadSet(app).find(jid)
    assert rec.error_backtrace is not None
    assert rec.error_backtrace[0] == "Traceback (most recent call last):"
    assert rec.error_backtrace[-1].startswith("ValueError: kaboom yyy")
    assert rec.error_message is not None and len(rec.error_message) == 10_000
    assert rec.to_dict()["error_backtrace"] == rec.error_backtrace


async def test_retry_queue_sends_retries_and_their_runs_to_another_queue(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    queues: list[str] = []

    @app.job(retry=2, retry_in=fast, retry_queue="slow")
    async def moves() -> None:
        queues.append(asyncjobs.current_job().queue)
        raise RuntimeError("again")

    await moves.defer()
    async with running(app.worker(queues=("default", "slow"))):
        await wait_for(lambda: api.DeadSet(app).size())
    assert queues == ["default", "slow", "slow"]
    [dead] = await api.DeadSet(app).entries()
    assert dead.queue == "slow"  # so a retry by hand goes there too, as in Sidekiq


async def test_retry_for_retries_past_the_count_while_young(app: asyncjobs.App) -> None:
    runs: list[int] = []

    @app.job(retry=0, retry_for=60, retry_in=fast)  # retry=0 alone would kill it at once
    async def patient() -> None:
        runs.append(asyncjobs.current_job().retry_count)
        if len(runs) < 3:
            raise RuntimeError("not yet")

    await patient.defer()
    async with running(app.worker()) as w:
        await wait_for(lambda: len(runs) == 3)
        await w.wait_idle()
    assert runs == [0, 1, 2]
    assert await api.DeadSet(app).size() == 0


async def test_retry_for_then_dies(app: asyncjobs.App) -> None:
    runs: list[float] = []

    @app.job(retry=1000, retry_for=0.3, retry_in=fast)
    async def hopeless() -> None:
        runs.append(1.0)
        raise RuntimeError("never")

    await hopeless.defer()
    async with running(app.worker()):
        await wait_for(lambda: api.DeadSet(app).size())
    [dead] = await api.DeadSet(app).entries()
    assert 2 <= len(runs) < 100 and dead.retry_count == len(runs) - 1


async def test_on_exhausted_returning_discard_leaves_nothing_in_the_dead_set(
    app: asyncjobs.App,
) -> None:
    handled: list[tuple[str | None, str | None, bool]] = []

    async def on_exhausted(ctx: asyncjobs.JobContext, exc: BaseException) -> str | None:
        return "discard" if ctx.error_class == "LookupError" else None

    async def handler(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        handled.append((ctx.error_class, ctx.error_message, ctx.discarded_at is not None))

    app.death_handlers.append(handler)

    @app.job(retry=0, on_exhausted=on_exhausted)
    async def sometimes(kind: str) -> None:
        raise (LookupError if kind == "lookup" else ValueError)(f"{kind} failed")

    await sometimes.defer("lookup")
    await sometimes.defer("value")
    async with running(app.worker()) as w:
        await wait_for(lambda: len(handled) == 2)
        await w.wait_idle()
    assert sorted(handled) == [
        ("LookupError", "lookup failed", True),
        ("ValueError", "value failed", False),
    ]
    [dead] = await api.DeadSet(app).entries()
    assert dead.error_class == "ValueError"
    assert w.statistics()["failed"] == 2


# -- Enqueue ----------------------------------------------------------------------------


async def test_defer_many_with_a_due_time_per_job(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    import datetime as dt

    @app.job
    async def remind(user_id: int) -> None: ...

    now = dt.datetime.now(dt.UTC)
    soon, later = now + dt.timedelta(hours=1), now + dt.timedelta(hours=2)
    jids = await remind.defer_many([(1,), (2,), (3,)], at=[None, soon, later])
    assert None not in jids
    queued = [loads(r) for r in await redis.lrange(app.keys.queue("default"), 0, -1)]
    assert [(q["jid"], q["args"]) for q in queued] == [(jids[0], {"user_id": 1})]
    scheduled: list[Any] = await redis.zrange(app.keys.schedule, 0, -1, withscores=True)
    assert [(loads(m)["jid"], round(s)) for m, s in scheduled] == [
        (jids[1], round(soon.timestamp())),
        (jids[2], round(later.timestamp())),
    ]


async def test_defer_many_refuses_a_due_time_list_of_another_length(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    import datetime as dt

    import pytest

    @app.job
    async def remind(user_id: int) -> None: ...

    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with pytest.raises(asyncjobs.ConfigError, match="2 due times in at= for 3 items"):
        await remind.defer_many([(1,), (2,), (3,)], at=[soon, soon])
    with pytest.raises(asyncjobs.ConfigError, match=r"at\[1\] must be an aware datetime"):
        await remind.defer_many([(1,), (2,)], at=[soon, dt.datetime.now()])
    with pytest.raises(asyncjobs.ConfigError, match="not both"):
        await remind.configure(delay=5).defer_many([(1,)], at=[soon])
    assert await redis.keys("*") == []  # nothing was enqueued


async def test_empty_queue_name_is_refused_at_registration(app: asyncjobs.App) -> None:
    import pytest

    for queue in ("", "a b", "x:y", "{t}"):
        with pytest.raises(asyncjobs.ConfigError, match="queue: invalid queue name"):

            @app.job(queue=queue)
            async def nowhere() -> None: ...

    assert not any(n.endswith("nowhere") for n in app.jobs)


# -- Killing and retrying through the API -----------------------------------------------


async def seed(
    app: asyncjobs.App,
    redis: aioredis.Redis,
    job: asyncjobs.Job[Any, Any],
    key: str,
    n: int,
    **fields: Any,
) -> list[str]:
    """``n`` entries of ``job`` in the sorted set ``key``, due in an hour."""
    import time

    import msgspec

    from asyncjobs._payload import ENCODER

    jids = []
    for i in range(n):
        p = job._build(job._opts, (i,), {}, time.time())
        p = msgspec.structs.replace(p, enqueued_at=None, **fields)
        await redis.zadd(key, {ENCODER.encode(p): time.time() + 3600 + i})
        jids.append(p.jid)
    return jids


async def test_kill_runs_the_death_handlers_once_unless_asked_not_to(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    calls: list[tuple[str, str, str]] = []

    async def handler(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        calls.append((ctx.jid, type(exc).__name__, str(exc)))

    app.death_handlers.append(handler)

    @app.job
    async def charge(n: int) -> None: ...

    a, b = await seed(app, redis, charge, app.keys.retry, 2, retry_count=0, error_class="E")
    await api.RetrySet(app).kill(a)
    await api.RetrySet(app).kill(b, notify=False)
    assert calls == [(a, "RuntimeError", "killed by API")]
    assert {r.jid for r in await api.DeadSet(app).entries()} == {a, b}


async def test_kill_all_empties_the_retry_and_scheduled_sets_and_trims_once(
    redis_url: str, redis: aioredis.Redis
) -> None:
    app = asyncjobs.App(redis_url, dead_max_jobs=4)
    calls: list[str] = []

    async def handler(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        calls.append(ctx.jid)

    app.death_handlers.append(handler)

    @app.job
    async def charge(n: int) -> None: ...

    try:
        await seed(app, redis, charge, app.keys.retry, 3, retry_count=0, error_class="E")
        scheduled = await seed(app, redis, charge, app.keys.schedule, 2)
        assert await api.RetrySet(app).kill_all() == 3
        assert calls == []  # Sidekiq's kill_all does not notify by default
        assert await api.ScheduledSet(app).kill_all(notify=True) == 2
        assert sorted(calls) == sorted(scheduled)
        assert await api.RetrySet(app).size() == 0
        assert await api.ScheduledSet(app).size() == 0
        assert await api.DeadSet(app).size() == 4  # 5 killed, trimmed to dead_max_jobs
        try:
            await api.DeadSet(app).kill_all()
        except api.JobNotFound as exc:
            assert "already dead" in str(exc)
        else:
            raise AssertionError("kill_all on the dead set must refuse")
    finally:
        await app.aclose()


async def test_retry_by_hand_does_not_count_against_the_limit(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    runs: list[int] = []

    @app.job(retry=1)
    async def fragile(n: int) -> None:
        runs.append(asyncjobs.current_job().retry_count)
        raise RuntimeError("still broken")

    # In the retry set after its first failure: no retry made yet, one left.
    [jid] = await seed(app, redis, fragile, app.keys.retry, 1, retry_count=0, error_class="E")
    await api.RetrySet(app).retry(jid)
    async with running(app.worker()) as w:
        await wait_for(lambda: len(runs) == 1)
        await wait_for(lambda: api.RetrySet(app).size())
        await w.wait_idle()
    # The run by hand did not spend the one retry left: back in the retry set, not dead.
    [entry] = await api.RetrySet(app).entries()
    assert (entry.jid, entry.retry_count) == (jid, 0)
    assert await api.DeadSet(app).size() == 0
