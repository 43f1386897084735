"""The worker against a real Redis: running, typed arguments, failures, shutdown."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import logging
import time
import uuid
from decimal import Decimal
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs._payload import decode_backtrace
from tests.conftest import loads, running, wait_for

INFLIGHT_PREFIX = "{asyncjobs}:inflight:"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(msgspec.Struct):
    sku: str
    qty: int


@dataclasses.dataclass
class Address:
    city: str
    zip: str


async def test_typed_arguments_round_trip(app: asyncjobs.App) -> None:
    got: list[tuple[Any, ...]] = []

    @app.job
    async def typed(
        when: dt.datetime,
        day: dt.date,
        u: uuid.UUID,
        amount: Decimal,
        color: Color,
        item: Item,
        addr: Address,
        items: list[Item],
        by_day: dict[str, dt.date],
        *,
        note: str = "",
    ) -> None:
        got.append((when, day, u, amount, color, item, addr, items, by_day, note))

    sent = (
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        dt.date(2026, 1, 2),
        uuid.uuid4(),
        Decimal("12.34"),
        Color.BLUE,
        Item("a", 2),
        Address("Paris", "75001"),
        [Item("b", 1)],
        {"x": dt.date(2025, 5, 6)},
    )
    await typed.defer(*sent, note="hi")
    async with running(app.worker()):
        await wait_for(lambda: bool(got))
    assert got == [(*sent, "hi")]
    for value, t in zip(
        got[0][:7], (dt.datetime, dt.date, uuid.UUID, Decimal, Color, Item, Address), strict=True
    ):
        assert type(value) is t


async def test_context_and_counters(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    seen: list[asyncjobs.JobContext] = []

    @app.job(queue="q1")
    async def who() -> None:
        ctx = asyncjobs.current_job()
        ctx.logger.info("running")
        seen.append(ctx)

    jid = await who.defer()
    async with running(app.worker(queues=["q1"])) as w:
        await wait_for(lambda: bool(seen))
        await w.wait_idle()
    ctx = seen[0]
    assert (ctx.jid, ctx.queue, ctx.retry_count, ctx.name) == (jid, "q1", 0, who.name)
    assert ctx.enqueued_at is not None and ctx.enqueued_at.tzinfo is not None
    assert await redis.get("{asyncjobs}:stat:processed") == b"1"
    assert not await redis.keys(INFLIGHT_PREFIX + "*")


async def test_failed_job_is_recorded_with_error(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job(retry=2)
    async def boom(n: int) -> None:
        raise ValueError(f"bad {n}")

    jid = await boom.defer(7)
    async with running(app.worker()) as w:
        await wait_for(lambda: redis.zcard("{asyncjobs}:retry"))
        await w.wait_idle()
    [raw] = await redis.zrange("{asyncjobs}:retry", 0, -1)
    p = loads(raw)
    assert (p["jid"], p["error_class"], p["error_message"], p["retry_count"]) == (
        jid,
        "ValueError",
        "bad 7",
        0,  # Sidekiq's meaning: retries already made
    )
    assert (decode_backtrace(p["error_backtrace"]) or [])[-1] == "ValueError: bad 7"
    assert await redis.get("{asyncjobs}:stat:failed") == b"1"
    assert not await redis.keys(INFLIGHT_PREFIX + "*")


async def test_bad_payloads_go_dead_and_worker_keeps_running(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    ran: list[int] = []

    @app.job
    async def ok(n: int) -> None:
        ran.append(n)

    await redis.lpush("{asyncjobs}:queue:default", b"not json at all")
    await redis.lpush(
        "{asyncjobs}:queue:default",
        json.dumps(
            {
                "jid": "u1",
                "class": "nope.job",
                "queue": "default",
                "args": {},
                "created_at": 1,
                "retry": 1,
            }
        ),
    )
    await redis.lpush(
        "{asyncjobs}:queue:default",
        json.dumps(
            {
                "jid": "a1",
                "class": ok.name,
                "queue": "default",
                "args": {"n": "x"},
                "created_at": 1,
                "retry": 1,
            }
        ),
    )
    await ok.defer(1)
    async with running(app.worker()) as w:
        await wait_for(lambda: redis.zcard("{asyncjobs}:dead"), timeout=5)
        await wait_for(lambda: ran == [1])
        await w.wait_idle()
        await ok.defer(2)
        await wait_for(lambda: ran == [1, 2])
        await w.wait_idle()
    dead = [loads(m) for m in await redis.zrange("{asyncjobs}:dead", 0, -1)]
    reasons = {d["error_class"] for d in dead}
    assert reasons == {"PayloadError", "UnknownJobError", "ArgumentError"}
    raw_entry = next(d for d in dead if d["error_class"] == "PayloadError")
    assert raw_entry["meta"]["raw"] == "not json at all"
    assert not await redis.keys(INFLIGHT_PREFIX + "*")


async def test_shutdown_timeout_requeues_running_jobs_at_head(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    started: list[int] = []

    @app.job
    async def slow(n: int) -> None:
        started.append(n)
        await anyio.sleep(30)

    await slow.defer_many([(i,) for i in range(5)])
    worker = app.worker(concurrency=3, timeout=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: len(started) == 3)
        t0 = time.monotonic()
        worker.stop()
    assert time.monotonic() - t0 < 3
    queue = [loads(x)["args"]["n"] for x in await redis.lrange("{asyncjobs}:queue:default", 0, -1)]
    # the 3 interrupted jobs are back at the head (right end), the 2 waiting ones behind
    assert sorted(queue) == [0, 1, 2, 3, 4]
    assert sorted(queue[-3:]) == sorted(started)
    assert not await redis.keys(INFLIGHT_PREFIX + "*")
    assert await redis.scard("{asyncjobs}:processes") == 0


async def test_scheduled_job_runs_when_due(app: asyncjobs.App) -> None:
    ran: list[float] = []

    @app.job
    async def later() -> None:
        ran.append(time.time())

    async with running(app.worker()):
        t0 = time.time()
        await later.configure(delay=0.3).defer()
        await wait_for(lambda: bool(ran))
    assert ran[0] - t0 >= 0.3
    assert ran[0] - t0 < 0.5


async def test_timeout_is_a_failure(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job(timeout=0.1, retry=0)
    async def hang() -> None:
        await anyio.sleep(10)

    await hang.defer()
    async with running(app.worker()):
        await wait_for(lambda: redis.zcard("{asyncjobs}:dead"))
    [raw] = await redis.zrange("{asyncjobs}:dead", 0, -1)
    assert loads(raw)["error_class"] == "JobTimeout"


async def test_idle_worker_picks_up_within_milliseconds(app: asyncjobs.App) -> None:
    started: list[float] = []

    @app.job
    async def ping(t: float) -> None:
        started.append(time.perf_counter() - t)

    async with running(app.worker()):
        for i in range(1, 21):
            await ping.defer(time.perf_counter())
            await wait_for(lambda n=i: len(started) == n, timeout=2)
    started.sort()
    # Generous bound: the figure itself is measured in benchmarks/, not asserted here;
    # this only proves an idle worker is woken by the hint, not by its 2 s poll.
    assert started[10] < 0.1


async def test_trickling_queue_costs_no_fetch_between_pickups(app: asyncjobs.App) -> None:
    """An idle worker on one queue takes each job with BLMOVE; the land that follows
    also looks for more (pickup.lua). Finding none, the fetcher blocks again at once:
    no fetch between two pickups that would find the queue empty."""
    ran: list[int] = []

    @app.job
    async def ping(n: int) -> None:
        ran.append(n)

    async with running(app.worker(concurrency=10)) as worker:
        [fetcher] = worker.fetchers
        await anyio.sleep(0.1)  # every lane settles into waiting
        before = fetcher.fetches
        for i in range(20):
            await ping.defer(i)
            await wait_for(lambda n=i: len(ran) == n + 1, timeout=2)
        # One per job (the pickup); a BLMOVE timing out meanwhile (every 2 s) may add
        # one fetch per lane. Without pickup.lua it was two or three per job.
        assert fetcher.fetches - before <= 20 + 2
    assert ran == list(range(20))


async def test_burst_into_an_idle_worker_is_taken_by_the_pickup(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """Jobs that arrive together at an idle worker: BLMOVE takes the first, its land
    takes as many more as there is room for, the lanes fetch the rest; each runs once."""
    ran: list[int] = []

    @app.job
    async def work(n: int) -> None:
        ran.append(n)
        await anyio.sleep(0.01)

    async with running(app.worker(concurrency=8)) as worker:
        await anyio.sleep(0.1)
        await work.defer_many([(i,) for i in range(200)])
        await wait_for(lambda: len(ran) == 200, timeout=10)
        await worker.wait_idle()
        assert not await redis.keys(INFLIGHT_PREFIX + "*")  # each acknowledged
    assert sorted(ran) == list(range(200))


async def test_pickups_after_redis_lost_its_scripts_run_each_job_once(
    app: asyncjobs.App, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis loses its scripts (a restart, SCRIPT FLUSH) while BLMOVE waits: the
    pickup, the ack and the next pickups still work; no error logged, no job run twice
    or left in the in-flight hash or the landing list."""
    ran: list[int] = []

    @app.job
    async def ping(n: int) -> None:
        ran.append(n)

    caplog.set_level(logging.WARNING, logger="asyncjobs")
    async with running(app.worker(concurrency=10)) as worker:
        [fetcher] = worker.fetchers
        for i in range(5):
            await wait_for(lambda: fetcher.fetching == 0)  # waiting in BLMOVE
            await redis.script_flush()
            await ping.defer(i)
            await wait_for(lambda n=i: len(ran) == n + 1, timeout=5)
        await worker.wait_idle()
        assert not await redis.keys(INFLIGHT_PREFIX + "*")  # each acknowledged
        assert not await redis.keys("{asyncjobs}:landing:*")
    assert ran == list(range(5))
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("asyncjobs")]


async def test_embedded_worker_runs_jobs_in_this_loop(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    ran: list[int] = []

    @app.job
    async def work(n: int) -> None:
        ran.append(n)

    async with app.run_worker(concurrency=2) as worker:
        await work.defer_many([(i,) for i in range(10)])
        await wait_for(lambda: len(ran) == 10)
        assert worker.statistics()["processed"] == 10
    assert sorted(ran) == list(range(10))
    assert await redis.scard("{asyncjobs}:processes") == 0


async def test_recovered_jobs_run_alone(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    """A job recovered from a dead worker (a poison-pill suspect) runs with nothing
    else in the process, so a repeat crash is attributable to it alone."""
    active = 0
    seen_alone: dict[int, bool] = {}

    @app.job
    async def work(n: int) -> None:
        nonlocal active
        active += 1
        try:
            seen_alone[n] = active == 1
            await anyio.sleep(0.02)
        finally:
            active -= 1

    await work.defer_many([(i,) for i in range(20)])
    # two jobs as the reaper leaves them after a crash: recoveries raised
    for n in (100, 101):
        payload = loads(msgspec.json.encode(work._build(work._opts, (n,), {}, time.time())))
        payload["recoveries"] = 1
        await redis.lpush("{asyncjobs}:queue:default", msgspec.json.encode(payload))
    async with running(app.worker(concurrency=10)) as w:
        await wait_for(lambda: len(seen_alone) == 22)
        await w.wait_idle()
        assert w.isolation is not None and w.isolation.isolated == 2
    assert seen_alone[100] and seen_alone[101]
    assert not all(seen_alone[i] for i in range(20)), "ordinary jobs ran side by side"


async def test_oversized_payload_is_dead_lettered_at_the_worker(
    redis_url: str, redis: aioredis.Redis
) -> None:
    big = asyncjobs.App(redis_url)  # a producer with a higher limit than the worker's
    small = asyncjobs.App(redis_url, max_payload_bytes=500)

    for a in (big, small):

        @a.job(name="blob")
        async def blob(data: str) -> None: ...

    await big.jobs["blob"].defer("x" * 2000)
    async with small.run_worker():
        await wait_for(lambda: redis.zcard("{asyncjobs}:dead"))
    [raw] = await redis.zrange("{asyncjobs}:dead", 0, -1)
    entry = loads(raw)
    assert (
        entry["error_class"] == "PayloadError" and "over the limit of 500" in entry["error_message"]
    )
    assert len(entry["meta"]["raw"]) == 1000
    await big.aclose()
    await small.aclose()


async def test_prefetched_jobs_start_as_slots_free_and_go_back_unstarted_on_stop(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    started: list[int] = []
    gate = anyio.Event()

    @app.job
    async def slow(n: int) -> None:
        started.append(n)
        await gate.wait()

    await slow.defer_many([(i,) for i in range(30)])
    worker = app.worker(concurrency=20, timeout=0.2)  # prefetch: 20 // 4 = 5
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: len(started) == 20 and len(worker.capsules[0].ready) == 5)
        assert await redis.llen("{asyncjobs}:queue:default") == 5
        worker.stop()
    queued = await redis.lrange("{asyncjobs}:queue:default", 0, -1)
    assert len(queued) == 30 and len(started) == 20  # the prefetched five never started
    assert not await redis.keys(INFLIGHT_PREFIX + "*")


async def test_acks_count_only_the_jobs_they_removed(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """Successes are acknowledged by done.lua; the processed counters add what it
    removed, so an ack written twice (a retry after a lost reply) counts once."""
    from asyncjobs._worker.acker import STATS_TTL, Acker

    store = await app.open_store()
    assert store.fast is not None
    key = INFLIGHT_PREFIX + "test"
    fields = [f"jid{i}".encode() for i in range(50)]
    await redis.hset(key, mapping=dict.fromkeys(fields, b"{}"))
    acker = Acker(store, store.fast, key)
    for f in fields[:30]:
        acker.done(f)
    await acker.flush()
    for f in fields:  # the first 30 again, and 20 new ones
        acker.done(f)
    acker.done(b"never-in-flight")
    await acker.flush()
    assert not await redis.exists(key)
    assert await redis.get("{asyncjobs}:stat:processed") == b"50"
    today = dt.datetime.now(dt.UTC).date().isoformat()
    day_key = "{asyncjobs}:stat:processed:" + today
    assert await redis.get(day_key) == b"50"
    assert STATS_TTL - 60 < await redis.ttl(day_key) <= STATS_TTL


async def test_jobs_run_in_their_own_task(app: asyncjobs.App) -> None:
    """Each job runs in a task of its own from its first line on, whether it starts
    with its fetch or later, from the prefetched ones, so that what binds to the
    current task (asyncio.timeout, anyio cancel scopes, redis-py's timeouts) works."""
    import asyncio

    ok: list[int] = []
    errors: list[str] = []

    @app.job
    async def scoped(n: int) -> None:
        try:
            first = asyncio.current_task()
            assert first is not None, "no current task at the job's first line"
            if n % 2:  # half of them never wait: they share a runner task
                # Entering a scope binds it to the current task: that is the check.
                with anyio.CancelScope():  # noqa: ASYNC100
                    pass
                ok.append(n)
                return
            async with asyncio.timeout(5):
                await asyncio.sleep(0)
            with anyio.fail_after(5):
                await anyio.sleep(0.001)
            assert asyncio.current_task() is first, "the job changed tasks"
            ok.append(n)
        except BaseException as exc:
            errors.append(f"{n}: {type(exc).__name__}: {exc}")
            raise

    await scoped.defer_many([(n,) for n in range(200)])
    async with running(app.worker(concurrency=8)) as w:  # prefetch: 2 jobs ahead
        await wait_for(lambda: len(ok) + len(errors) >= 200, timeout=20)
        await w.wait_idle()
    assert not errors, errors[:5]
    assert sorted(ok) == list(range(200))


async def test_free_slot_is_used_while_long_jobs_run(app: asyncjobs.App) -> None:
    """With some slots held by long jobs and the queue drained, a job enqueued later
    starts at once in a free slot, not when a long job ends.

    The shape that once stranded it (concurrency 4, no prefetch, so each of the two
    fetch lanes asks for 2): three long jobs wait before the worker starts; the first
    lane takes two and, while the second lane's fetch is still out, waits for room; the
    second lane comes back with one job (short), then finds the queue empty and parks.
    The first lane must see that the second lane's reservation is gone and fetch (or
    block on the queue) again, rather than wait for a long job to end.
    """
    release = anyio.Event()
    started: list[str] = []

    @app.job
    async def long(n: int) -> None:
        started.append(f"long{n}")
        await release.wait()

    @app.job
    async def quick() -> None:
        started.append("quick")

    await long.defer_many([(n,) for n in range(3)])
    async with running(app.worker(concurrency=4, prefetch=0)) as worker:
        await wait_for(lambda: len(started) == 3, timeout=5)
        await anyio.sleep(0.1)  # every lane settles into waiting
        # Settled means idle: a lane left waiting on a stale reservation would leave
        # the other lane polling an empty queue, one fetch after another.
        [fetcher] = worker.fetchers
        before = fetcher.fetches
        await anyio.sleep(0.3)
        assert fetcher.fetches - before <= 2, "an idle fetcher polls Redis"
        t0 = time.monotonic()
        await quick.defer()
        await wait_for(lambda: "quick" in started, timeout=5)
        assert time.monotonic() - t0 < 1.0
        release.set()


async def test_process_record_lists_running_jobs_with_their_start(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """The heartbeat publishes what the process runs (jid → start), for ``asyncjobs
    processes``; a finished job leaves the list."""
    gate = anyio.Event()

    @app.job
    async def hold() -> None:
        await gate.wait()

    t0 = time.time()
    jid = await hold.defer()
    assert jid is not None
    worker = app.worker(heartbeat_interval=0.05)
    async with running(worker):
        key = app.keys.process(worker.process_id)

        async def listed() -> dict[str, float]:
            info = json.loads(await redis.hget(key, "info") or b"{}")
            got: dict[str, float] = info.get("running") or {}
            return got

        await wait_for(listed)
        started = (await listed())[jid]
        assert t0 <= started <= time.time()
        gate.set()
        await worker.wait_idle()

        async def cleared() -> bool:
            return not await listed()

        await wait_for(cleared)
