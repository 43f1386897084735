"""The store's methods against a real Redis: the hot path sends what it always sent, and
the worker's methods (not yet wired) do what the worker's own calls do."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs._conn import FastRedis
from asyncjobs._keys import Keys
from asyncjobs._store import Store

K = Keys()


def payload(jid: str, queue: str = "default", **extra: Any) -> bytes:
    p = {"jid": jid, "class": "j", "queue": queue, "args": [], "created_at": 1.0, "retry": 1}
    p.update(extra)
    return json.dumps(p, separators=(",", ":")).encode()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    s = await Store.open(redis_url, K)
    yield s
    await s.aclose()


async def _commands(redis: aioredis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


async def test_defer_sends_one_script_call_per_job_and_per_queue(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    @app.job(name="j")
    async def j(n: int) -> None:
        pass

    await j.defer(0)  # connects and loads the scripts
    await j.configure(delay=5).defer(0)
    await redis.config_resetstat()
    await j.defer(1)
    await j.configure(delay=5).defer(2)
    await j.defer_many([(3,), (4,)])
    await j.configure(queue="other").defer_many([(5,)])
    await j.configure(delay=5).defer_many([(6,), (7,)])
    commands = await _commands(redis)
    # push, schedule, push many (one queue), push many (another), schedule many; the
    # other counts are the scripts' own calls.
    assert commands["evalsha"] == 5, commands
    assert "eval" not in commands and "script|load" not in commands, commands


async def test_fetch_land_done_ack(store: Store, redis: aioredis.Redis) -> None:
    inflight, landing = K.inflight("p1"), K.landing("p1")
    for i in range(4):
        await store.push("default", payload(f"j{i}"))
    conn = store.connection()
    assert isinstance(conn, FastRedis)
    try:
        keys = [inflight, K.queue("default"), K.wake("default")]
        pairs = await store.fetch(keys, [2], conn=conn)
        assert pairs[0::2] == [b"j0", b"j1"]
        assert await redis.hlen(inflight) == 2
        # BLMOVE takes the next job into the landing list; land_nowait lands it.
        raw = await store.blmove(K.queue("default"), landing, 1.0, conn=conn)
        assert raw == payload("j2")
        fut = store.land_nowait(landing, inflight, b"j2", raw, conn=conn)
        assert fut is not None
        assert await fut == 1
        # A job left in the landing list is landed by land().
        await redis.lmove(K.queue("default"), landing, "RIGHT", "LEFT")
        assert await store.land(landing, inflight) == 1
        assert set(await store.read_inflight(inflight)) == {b"j0", b"j1", b"j2", b"j3"}
        # Hints: each push left one on the wake list.
        assert await store.wait_wake([K.wake("default")], 0.1, conn=conn) is not None
    finally:
        await conn.aclose()
    now = time.time()
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    await store.done(inflight, [b"j0"], day=today, ttl=60, conn=store.fast or store.client)
    retry = payload("j1", retry_count=1)
    await store.ack(
        inflight,
        [b"j2"],
        [b"j1", "retry", repr(now + 30), retry],
        now=now,
        ttl=60,
        conn=store.fast or store.client,
    )
    assert await store.read_inflight(inflight) == {b"j3": payload("j3")}
    assert await redis.zrange(K.retry, 0, -1) == [retry]
    # Sidekiq's counting: a failure is processed too.
    assert int(await redis.get(K.stat_processed) or 0) == 3
    assert int(await redis.get(K.stat_failed) or 0) == 1
    assert int(await redis.get(K.stat_processed_day(today)) or 0) == 3


async def test_requeue_puts_jobs_back_at_the_head(store: Store, redis: aioredis.Redis) -> None:
    inflight = K.inflight("p1")
    await redis.hset(inflight, mapping={b"a": payload("a"), b"b": payload("b", queue="q2")})
    await store.push("default", payload("later"))
    n = await store.requeue(inflight, await store.read_inflight(inflight))
    assert n == 2
    assert await redis.lindex(K.queue("default"), -1) == payload("a")  # next to run
    assert await redis.lrange(K.queue("q2"), 0, -1) == [payload("b", queue="q2")]
    assert await store.requeue(inflight, {}) == 0


async def test_heartbeat_control_and_clear(store: Store, redis: aioredis.Redis) -> None:
    record: dict[str | bytes, Any] = {"info": "{}", "busy": 1, "beat": time.time(), "quiet": 0}
    assert await store.heartbeat("p1", record, 5.0) == ([], 1, len(record), frozenset())
    await store.send_control("quiet", ["p1"])
    assert await store.heartbeat("p1", record, 5.0) == (["quiet"], 1, 0, frozenset())
    assert 0 < await redis.pttl(K.process("p1")) <= 5000
    assert await store.process_ids() == ["p1"]
    assert await store.processes_alive(["p1", "p2"]) == [True, False]
    [(pid, rec)] = await store.process_records()
    assert pid == "p1" and rec[b"busy"] == b"1"
    await store.clear_process("p1")
    assert await store.process_ids() == []
    assert not await redis.exists(K.process("p1"))


async def test_reap_gives_back_a_dead_process_jobs(store: Store, redis: aioredis.Redis) -> None:
    await redis.sadd(K.processes, "dead:1:x")
    await redis.hset(K.process("dead:1:x"), "beat", 1)
    await store.delete_process_record("dead:1:x")
    assert await store.processes_alive(["dead:1:x"]) == [False]
    await redis.hset(K.inflight("dead:1:x"), mapping={b"a": payload("a"), b"b": payload("b")})
    moves = [(b"a", "default", payload("a", recoveries=1), "queue")]
    moves.append((b"b", "default", payload("b", recoveries=3), "dead"))
    now = time.time()
    assert await store.reap("dead:1:x", moves, now) == (2, [])
    assert await redis.lrange(K.queue("default"), 0, -1) == [payload("a", recoveries=1)]
    assert await redis.zrange(K.dead, 0, -1) == [payload("b", recoveries=3)]
    assert await store.process_ids() == []
    await store.trim_dead(now)


async def test_scheduler_reads_promotes_and_hears_hints(
    store: Store, redis: aioredis.Redis
) -> None:
    now = time.time()
    await store.schedule("default", now - 1, payload("s1"))
    with anyio.fail_after(5):
        assert await store.wait_scheduler_hint(1.0)
    await redis.zadd(K.retry, {payload("r1"): now - 2})
    first_s, first_r = await store.upcoming(100)
    assert [m for m, _ in first_s] == [payload("s1")]
    assert [m for m, _ in first_r] == [payload("r1")]
    assert await store.promote(K.schedule, [payload("s1")], now) == 1
    assert await store.promote(K.schedule, [payload("s1")], now) == 0  # moved already
    [raw] = await redis.lrange(K.queue("default"), 0, -1)
    assert json.loads(raw)["enqueued_at"] == now
    assert await store.kill(K.retry, payload("r1"), payload("r1", error_class="Killed"), now)
    assert not await store.kill(K.retry, payload("r1"), payload("r1"), now)
    assert await store.zset_size(K.dead) == 1


async def test_server_checks(store: Store) -> None:
    await store.ping()
    assert "redis_version" in await store.server_info()
    await store.load_scripts()
