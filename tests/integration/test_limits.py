"""Rate limiters (#13): each kind's decisions in Redis, ``async with limiter``, jobs
declared with ``limits=[...]`` rescheduled over the limit (not retried, not failed),
then failed with OverLimit; the state in the API and CLI."""

from __future__ import annotations

import json
import logging

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from tests.conftest import cli, running, wait_for


async def test_concurrent_is_a_semaphore_with_leases(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    two = app.limiter("two", "concurrent", 2, lease=5)
    async with two.acquire() as a, two.acquire() as b:
        assert a.at > 0 and b.at >= a.at
        with pytest.raises(asyncjobs.OverLimit, match="over the limit of rate limiter two"):
            async with two:
                pass
        state = await api.limiter_state(app, "two")
        assert (state.used, state.available) == (2, 0)
        assert set(state.holders) == {a.token, b.token}
        assert all(0 < left <= 5 for left in state.holders.values())
        # Per key: another count.
        async with two(key="acct-1"), two(key="acct-1"):
            assert (await api.limiter_state(app, "two", key="acct-1")).used == 2
    assert (await api.limiter_state(app, "two")).used == 0
    # The keys are in the namespace's hash tag.
    assert sorted(await redis.keys("*limit*")) == []  # released: nothing left


async def test_a_lease_not_renewed_runs_out(app: asyncjobs.App) -> None:
    one = app.limiter("one", "concurrent", 1, lease=0.3)
    store = await app.open_store()
    # A holder that died: took the slot and never renews it.
    ok, _, _ = await store.limit_acquire(one.spec, None, "dead-holder")
    assert ok
    with pytest.raises(asyncjobs.OverLimit):
        async with one:
            pass
    # The live holder renews its lease: held past three leases.
    async with one.acquire(wait=2):
        await anyio.sleep(1.0)
        assert (await one.state()).used == 1


async def test_fixed_and_sliding_windows(app: asyncjobs.App) -> None:
    fixed = app.limiter("fixed", "window", 3, per=0.5)
    sliding = app.limiter("sliding", "window", 3, per=0.5, sliding=True)
    for lim in (fixed, sliding):
        granted = 0
        for _ in range(5):
            try:
                async with lim:
                    granted += 1
            except asyncjobs.OverLimit as exc:
                assert 0 < exc.retry_after <= 0.51
        assert granted == 3, lim
        assert (await lim.state()).used == 3
        # wait: the block waits for room instead of raising.
        async with lim.acquire(wait=1.0):
            pass
    with pytest.raises(asyncjobs.ConfigError, match="cost of 4 is more than its limit of 3"):
        sliding.acquire(cost=4)


async def test_token_bucket_points_and_leaky_bucket(app: asyncjobs.App) -> None:
    points = app.limiter("points", "points", 100, per=1.0)
    async with points.acquire(cost=60):
        pass
    with pytest.raises(asyncjobs.OverLimit) as info:
        async with points.acquire(cost=60):
            pass
    # 20 points short at 100 per second: about 0.2 s.
    assert 0.1 < info.value.retry_after <= 0.21
    state = await points.state()
    assert 55 <= state.used <= 60
    async with points.acquire(cost=60, wait=1.0):
        pass

    leaky = app.limiter("leaky", "leaky", 2, per=0.2)
    async with leaky, leaky:
        pass
    with pytest.raises(asyncjobs.OverLimit) as info:
        async with leaky:
            pass
    assert 0 < info.value.retry_after <= 0.1
    bucket = app.limiter("bucket", "bucket", 2, per=10)
    async with bucket, bucket:
        pass
    with pytest.raises(asyncjobs.OverLimit):
        async with bucket:
            pass


async def test_declared_limit_gates_jobs_rescheduled_not_retried(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    two = app.limiter("two", "concurrent", 2, reschedules=1000)
    running_now: list[int] = []
    peak = 0
    done: list[int] = []

    @app.job(limits=[two])
    async def slow(n: int) -> None:
        nonlocal peak
        running_now.append(n)
        peak = max(peak, len(running_now))
        await anyio.sleep(0.1)
        running_now.remove(n)
        done.append(n)

    for n in range(8):
        await slow.defer(n)
    async with running(app.worker(concurrency=8, scheduler_poll=0.2)):
        await wait_for(lambda: len(done) == 8, timeout=15)
    assert peak == 2
    assert await redis.get(app.keys.stat_failed) is None
    assert await redis.zcard(app.keys.retry) == 0
    assert (await api.limiter_state(app, "two")).used == 0


async def test_over_limit_inside_a_job_then_fails_after_its_reschedules(
    app: asyncjobs.App, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    busy = app.limiter("busy", "concurrent", 1, lease=60, reschedules=2)
    ok, _, _ = await (await app.open_store()).limit_acquire(busy.spec, None, "someone-else")
    assert ok
    attempts: list[int] = []

    @app.job(retry=0)
    async def call() -> None:
        attempts.append(1)
        async with busy:
            pass

    await call.defer()
    async with running(app.worker(scheduler_poll=0.2)):
        await wait_for(lambda: redis.zcard(app.keys.dead), timeout=10)
    # Run, rescheduled twice, then failed (retry=0: dead); not a retry, not a failure
    # until then.
    assert len(attempts) == 3
    [entry] = await api.DeadSet(app).entries()
    assert entry.error_class == "OverLimit"
    assert "rescheduled 2 times already (reschedules=2)" in (entry.error_message or "")


async def test_a_job_without_limits_has_no_limited_field(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    @app.job
    async def plain() -> None: ...

    await plain.defer()
    [raw] = await redis.lrange(app.keys.queue("default"), 0, -1)
    assert b'"limited"' not in raw


async def test_bad_limiters(app: asyncjobs.App) -> None:
    with pytest.raises(asyncjobs.ConfigError, match="kind must be one of"):
        app.limiter("x", "fast", 1)
    with pytest.raises(asyncjobs.ConfigError, match="limit must be a whole number"):
        app.limiter("x", "window", 0)
    with pytest.raises(asyncjobs.ConfigError, match="invalid limiter name"):
        app.limiter("a:b", "window", 1)
    lim = app.limiter("x", "concurrent", 1)
    with pytest.raises(asyncjobs.ConfigError, match="concurrent limiter has no cost"):
        lim.acquire(cost=2)
    with pytest.raises(asyncjobs.ConfigError, match="limits takes limiters"):

        @app.job(limits=["x"])  # type: ignore[list-item]
        async def bad() -> None: ...


async def test_state_unknown_limiter(app: asyncjobs.App) -> None:
    with pytest.raises(asyncjobs.ConfigError, match="no limiter named 'nope'"):
        await api.limiter_state(app, "nope")


async def test_cli_shows_limiters(redis_url: str) -> None:
    app = asyncjobs.App(redis_url)
    three = app.limiter("three", "concurrent", 3, lease=1.5, reschedules=1000, max_backoff=0.5)
    try:
        async with three:
            r = await cli(redis_url, "limits", "--app", "tests.apps.limited:app", "--json")
            assert r.returncode == 0, r.stderr
            states = {s["name"]: s for s in json.loads(r.stdout)}
            assert states["three"]["used"] == 1 and states["three"]["available"] == 2
            assert states["per_second"]["kind"] == "window"
            r = await cli(redis_url, "limits", "three", "--app", "tests.apps.limited:app")
            assert r.returncode == 0, r.stderr
            assert b"three" in r.stdout and b"concurrent" in r.stdout
            r = await cli(redis_url, "limits", "nope", "--app", "tests.apps.limited:app")
            assert r.returncode != 0
            assert b"no limiter named 'nope'" in r.stderr
    finally:
        await app.aclose()


async def test_declared_limit_keyed_by_an_argument(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    one = app.limiter("one-per-account", "concurrent", 1, reschedules=1000, max_backoff=0.2)
    inside: dict[str, int] = {}
    peak: dict[str, int] = {}
    done: list[str] = []

    @app.job(limits=[one.by("account")])
    async def sync(account: str, n: int) -> None:
        inside[account] = inside.get(account, 0) + 1
        peak[account] = max(peak.get(account, 0), inside[account])
        await anyio.sleep(0.05)
        inside[account] -= 1
        done.append(account)

    await sync.defer_many([("a", n) for n in range(4)] + [("b", n) for n in range(4)])
    async with running(app.worker(concurrency=8, scheduler_poll=0.1)):
        await wait_for(lambda: len(done) == 8, timeout=15)
    assert peak == {"a": 1, "b": 1}
    with pytest.raises(asyncjobs.ConfigError, match="no argument named 'acount'"):

        @app.job(limits=[one.by("acount")])
        async def typo(account: str) -> None: ...


async def test_test_modes_grant_every_acquire_without_redis() -> None:
    from asyncjobs import testing

    app = asyncjobs.App("redis://127.0.0.1:9/0")  # nothing listens there
    lim = app.limiter("api", "window", 1, per=3600)
    ran: list[int] = []

    @app.job(limits=[lim])
    async def call(n: int) -> None:
        async with lim, lim:
            ran.append(n)

    with testing.inline(app):
        await call.defer(1)
        await call.defer(2)
    assert ran == [1, 2]


async def test_a_gate_redis_refuses_reschedules_the_job_unchanged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from asyncjobs._redis import ACL_COMMANDS
    from tests.servers import acl_redis

    # A user that may not read Redis's clock: every limiter script is refused.
    allowed = [c for c in ACL_COMMANDS if c != "time"]
    with acl_redis("jobs", "pw", allowed) as server:
        app = asyncjobs.App(server.make_url(username="jobs", password="pw"))
        lim = app.limiter("api", "window", 10)
        ran: list[int] = []

        @app.job(limits=[lim])
        async def call() -> None:
            ran.append(1)

        jid = await call.defer()
        caplog.set_level(logging.WARNING, logger="asyncjobs.executor")
        async with running(app.worker(scheduler_poll=5)):
            await wait_for(lambda: "cannot take the limiters" in caplog.text, timeout=10)
            await wait_for(lambda: api.ScheduledSet(app).size(), timeout=5)
        [entry] = await api.ScheduledSet(app).entries()
        assert entry.jid == jid and not ran
        assert (await api.Stats.fetch(app)).failed == 0
        await app.aclose()
