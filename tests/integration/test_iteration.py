"""Iterable jobs (#14), on a real Redis, in process: sources, saving the cursor every N
items, quiet and stop (put back with the cursor, no retry counted, resumed), failures
(the retry resumes), cancellation (state deleted), and what one costs in commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import ConfigError, Iteration
from asyncjobs.iteration import from_ids, from_range
from tests.conftest import running, text, wait_for

STATE = "{asyncjobs}:iter:"
QUEUE = "{asyncjobs}:queue:default"


async def items(r: aioredis.Redis) -> list[int]:
    return [int(x) for x in await r.lrange("test:items", 0, -1)]


async def state(r: aioredis.Redis, jid: str) -> dict[str, str]:
    raw: dict[Any, Any] = await r.hgetall(STATE + jid)
    return {text(k): text(v) for k, v in raw.items()}


@pytest.mark.timeout(30)
async def test_range_runs_every_item_then_deletes_its_state(
    redis_url: str, redis: aioredis.Redis
) -> None:
    app = asyncjobs.App(redis_url)

    @app.iterable_job(name="count", save_every=10)
    async def count(it: Iteration[int], stop: int) -> AsyncIterator[int]:
        async for n, cursor in from_range(0, stop, cursor=it.cursor):
            await redis.rpush("test:items", n)
            yield cursor

    try:
        jid = await count.defer(55)
        assert jid is not None
        async with running(app.worker()):
            await wait_for(lambda: redis.get("{asyncjobs}:stat:processed"), timeout=10)
        assert await items(redis) == list(range(55))
        assert not await redis.exists(STATE + jid)  # completed: state deleted
        assert await redis.zcard("{asyncjobs}:retry") == 0
    finally:
        await app.aclose()


@pytest.mark.timeout(30)
async def test_ids_source_and_the_iteration_seen_by_the_job(
    redis_url: str, redis: aioredis.Redis
) -> None:
    app = asyncjobs.App(redis_url)
    seen: list[Iteration[int]] = []

    @app.iterable_job(name="mail", save_interval=60, save_every=None)
    async def mail(it: Iteration[int], ids: list[str]) -> AsyncIterator[int]:
        seen.append(it)
        async for user, cursor in from_ids(ids, cursor=it.cursor):
            await redis.rpush("test:users", user)
            yield cursor

    try:
        jid = await mail.defer(["ann", "bob", "cy"])
        assert jid is not None
        async with running(app.worker()):
            await wait_for(lambda: redis.get("{asyncjobs}:stat:processed"), timeout=10)
        assert [text(u) for u in await redis.lrange("test:users", 0, -1)] == ["ann", "bob", "cy"]
        (it,) = seen
        assert it.jid == jid and it.runs == 1 and not it.resumed
        assert it.items == 3 and it.cursor == 2
        # Done before its first save (none after 60 s or ever by count): no state written.
        assert not await redis.exists(STATE + jid)
    finally:
        await app.aclose()


@pytest.mark.timeout(30)
async def test_cursor_is_saved_every_n_items(redis_url: str, redis: aioredis.Redis) -> None:
    app = asyncjobs.App(redis_url)
    gate = asyncio.Event()

    @app.iterable_job(name="slow", save_every=10, save_interval=None)
    async def slow(it: Iteration[int]) -> AsyncIterator[int]:
        async for n, cursor in from_range(0, 40, cursor=it.cursor):
            if n == 25:
                await gate.wait()
            yield cursor

    try:
        jid = await slow.defer()
        assert jid is not None
        async with running(app.worker()):
            await wait_for(lambda: redis.exists(STATE + jid))
            await wait_for(lambda: _items_at(redis, jid, 20))
            st = await state(redis, jid)
            # Items 0..24 are done; saves came after items 9 and 19, not 24.
            assert json.loads(st["cursor"]) == 19 and st["items"] == "20" and st["runs"] == "1"
            ttl = await redis.ttl(STATE + jid)
            assert 30 * 86400 - 60 < ttl <= 30 * 86400
            gate.set()
            await wait_for(lambda: redis.get("{asyncjobs}:stat:processed"), timeout=10)
        assert not await redis.exists(STATE + jid)
    finally:
        await app.aclose()


async def _items_at(r: aioredis.Redis, jid: str, n: int) -> bool:
    return (await state(r, jid)).get("items") == str(n)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["quiet", "stop"])
async def test_quiet_or_stop_puts_it_back_with_its_cursor_and_it_resumes(
    redis_url: str, redis: aioredis.Redis, how: str
) -> None:
    """The worker quiets (or stops) mid-iteration: the job ends at the next item, saves
    its cursor (though save_every is far off), goes back to the head of its queue as it
    was (no retry counted, no failure); a second worker resumes after the cursor and
    every item runs exactly once."""
    app = asyncjobs.App(redis_url)
    gate = asyncio.Event()
    reached = asyncio.Event()

    @app.iterable_job(name="walk", save_every=1000, save_interval=None)
    async def walk(it: Iteration[int], stop: int) -> AsyncIterator[int]:
        async for n, cursor in from_range(0, stop, cursor=it.cursor):
            if n == 30 and not it.resumed:
                reached.set()
                await gate.wait()
            await redis.rpush("test:items", n)
            yield cursor

    try:
        jid = await walk.defer(100)
        assert jid is not None
        worker = app.worker()
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(5):
                await reached.wait()
            if how == "quiet":
                worker.quiet_down()
            else:
                worker.stop()
            gate.set()
            # Back at the head of its queue, with its cursor after item 30.
            await wait_for(lambda: redis.llen(QUEUE), timeout=10)
            st = await state(redis, jid)
            assert json.loads(st["cursor"]) == 30 and st["items"] == "31"
            (raw,) = await redis.lrange(QUEUE, 0, -1)
            payload = json.loads(raw)
            assert payload["jid"] == jid
            assert "retry_count" not in payload and "error_class" not in payload
            assert await redis.zcard("{asyncjobs}:retry") == 0
            assert await redis.get("{asyncjobs}:stat:failed") is None
            worker.stop()
        assert await items(redis) == list(range(31))
        async with running(app.worker()):
            await wait_for(lambda: redis.get("{asyncjobs}:stat:processed"), timeout=10)
        assert await items(redis) == list(range(100))  # resumed at 31: none twice
        assert not await redis.exists(STATE + jid)
        assert await redis.get("{asyncjobs}:stat:failed") is None
    finally:
        await app.aclose()


@pytest.mark.timeout(30)
async def test_a_failure_saves_the_cursor_and_the_retry_resumes(
    redis_url: str, redis: aioredis.Redis
) -> None:
    app = asyncjobs.App(redis_url)
    runs: list[tuple[int, Any]] = []

    @app.iterable_job(name="flaky", save_every=100, retry_in=lambda count, exc: 0.05)
    async def flaky(it: Iteration[int]) -> AsyncIterator[int]:
        runs.append((it.runs, it.cursor))
        async for n, cursor in from_range(0, 20, cursor=it.cursor):
            if n == 7 and it.runs == 1:
                raise RuntimeError("item 7 failed")
            await redis.rpush("test:items", n)
            yield cursor

    try:
        jid = await flaky.defer()
        assert jid is not None
        async with running(app.worker(scheduler_poll=0.1)):
            await wait_for(lambda: redis.get("{asyncjobs}:stat:processed"), timeout=10)
            await wait_for(lambda: len(runs) == 2 and redis.llen("test:items"))
            await wait_for(lambda: _no_state(redis, jid))
        # The retry started after the last item done (6), not from the start.
        assert runs == [(1, None), (2, 6)]
        assert await items(redis) == list(range(20))
    finally:
        await app.aclose()


async def _no_state(r: aioredis.Redis, jid: str) -> bool:
    return not await r.exists(STATE + jid)


@pytest.mark.timeout(30)
async def test_cancel_stops_it_and_deletes_its_state(redis_url: str, redis: aioredis.Redis) -> None:
    app = asyncjobs.App(redis_url)
    reached = asyncio.Event()

    @app.iterable_job(name="forever", save_every=5, save_interval=None)
    async def forever(it: Iteration[int]) -> AsyncIterator[int]:
        async for n, cursor in from_range(0, 10**9, cursor=it.cursor):
            if n == 12:
                reached.set()
                await asyncio.sleep(3600)
            yield cursor

    try:
        jid = await forever.defer()
        assert jid is not None
        async with running(app.worker()):
            with anyio.fail_after(5):
                await reached.wait()
            assert (await state(redis, jid))["cursor"] == "9"
            assert await app.cancel(jid) == "cancelling"
            await wait_for(lambda: _no_state(redis, jid))
            await wait_for(lambda: redis.get("{asyncjobs}:stat:processed"))
            assert await redis.llen(QUEUE) == 0 and await redis.zcard("{asyncjobs}:retry") == 0
        # Cancelled while it waits in its queue with a saved cursor: the state goes too.
        await redis.hset(STATE + jid, mapping={"cursor": "40", "items": "41", "runs": "1"})
        jid2 = await forever.configure(jid=jid).defer()
        assert jid2 == jid
        assert await app.cancel(jid) == "removed"
        assert not await redis.exists(STATE + jid)
    finally:
        await app.aclose()


@pytest.mark.timeout(30)
async def test_inline_call_runs_every_item_and_bad_definitions_are_refused(
    redis_url: str,
) -> None:
    app = asyncjobs.App(redis_url)
    done: list[int] = []

    @app.iterable_job(name="inline")
    async def inline(it: Iteration[int], stop: int) -> AsyncIterator[int]:
        async for n, cursor in from_range(0, stop, cursor=it.cursor):
            done.append(n)
            yield cursor

    await inline(3)  # inline: no Redis, no state
    assert done == [0, 1, 2]
    with pytest.raises(asyncjobs.ArgumentError, match="stop"):
        await inline.defer("three")  # type: ignore[arg-type]

    async def not_a_generator(it: Iteration[int]) -> None: ...

    async def no_iteration() -> AsyncIterator[int]:
        yield 1

    async def gen(it: Iteration[int]) -> AsyncIterator[int]:
        yield 1

    with pytest.raises(ConfigError, match="async generator"):
        app.iterable_job(name="a")(not_a_generator)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="first parameter"):
        app.iterable_job(name="b")(no_iteration)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="save_every"):
        app.iterable_job(name="c", save_every=0)(gen)
    with pytest.raises(ConfigError, match="save_every or save_interval"):
        app.iterable_job(name="d", save_every=None, save_interval=None)(gen)
    with pytest.raises(ConfigError, match="save_interval"):
        app.iterable_job(name="e", save_interval=-1.0)(gen)
    await app.aclose()


@pytest.mark.timeout(60)
async def test_costs_one_read_a_save_per_n_items_and_one_delete(
    redis_url: str, redis: aioredis.Redis
) -> None:
    """MONITOR the server while a 1,000-item job runs with save_every=100: the commands
    on its state are one HGETALL, ten saves (one EVALSHA each) and one DEL."""
    app = asyncjobs.App(redis_url)

    @app.iterable_job(name="costly", save_every=100, save_interval=None)
    async def costly(it: Iteration[int]) -> AsyncIterator[int]:
        async for _, cursor in from_range(0, 1000, cursor=it.cursor):
            yield cursor

    seen: list[str] = []
    ready = asyncio.Event()

    async def monitor() -> None:
        async with redis.monitor() as m:
            ready.set()
            # Read while the job runs, until cancelled (not a list built at the end).
            async for cmd in m.listen():
                if cmd.get("client_type") != "lua" and ":iter:" in cmd["command"]:
                    seen.append(cmd["command"].split()[0].upper())  # noqa: PERF401

    try:
        jid = await costly.defer()
        assert jid is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(monitor)
            with anyio.fail_after(5):
                await ready.wait()
            async with running(app.worker()):
                await wait_for(lambda: redis.get("{asyncjobs}:stat:processed"), timeout=20)
            await wait_for(lambda: "DEL" in seen)
            tg.cancel_scope.cancel()
        assert seen.count("HGETALL") == 1
        assert seen.count("EVALSHA") + seen.count("EVAL") == 10
        assert seen.count("DEL") == 1
        assert len(seen) == 12, seen
    finally:
        await app.aclose()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cut", ["timeout", "shutdown"])
async def test_a_run_cut_mid_item_saves_the_last_item_done(
    redis_url: str, redis: aioredis.Redis, cut: str
) -> None:
    """An item that never ends: the job's timeout (a failure, retried) or the shutdown
    timeout (back to its queue) cuts it; the cursor of the last item done is saved on
    the way out though save_every is far off, and the next run resumes after it."""
    app = asyncjobs.App(redis_url)
    starts: list[Any] = []

    @app.iterable_job(
        name="stuck",
        save_every=1000,
        save_interval=None,
        timeout=0.5 if cut == "timeout" else None,
        retry_in=lambda count, exc: 0.05,
    )
    async def stuck(it: Iteration[int]) -> AsyncIterator[int]:
        starts.append(it.cursor)
        async for n, cursor in from_range(0, 10, cursor=it.cursor):
            if n == 5 and not it.resumed:
                await asyncio.sleep(3600)
            await redis.rpush("test:items", n)
            yield cursor

    try:
        jid = await stuck.defer()
        assert jid is not None
        if cut == "timeout":
            async with running(app.worker(scheduler_poll=0.1)):
                await wait_for(lambda: _count(redis, 10), timeout=10)
                await wait_for(lambda: _no_state(redis, jid))
            assert await redis.get("{asyncjobs}:stat:failed") == b"1"  # the timeout
        else:
            async with running(app.worker(timeout=0.3)):
                await wait_for(lambda: _count(redis, 5))
            # Cut by the shutdown timeout: back in its queue, its cursor saved.
            assert await redis.llen(QUEUE) == 1
            assert json.loads((await state(redis, jid))["cursor"]) == 4
            async with running(app.worker()):
                await wait_for(lambda: redis.get("{asyncjobs}:stat:processed"), timeout=10)
        assert starts == [None, 4]
        assert await items(redis) == list(range(10))
        assert not await redis.exists(STATE + jid)
    finally:
        await app.aclose()


async def _count(r: aioredis.Redis, n: int) -> bool:
    return bool(await r.llen("test:items") == n)


@pytest.mark.timeout(30)
async def test_max_runtime_sends_it_to_the_back_of_its_queue_between_runs(
    redis_url: str, redis: aioredis.Redis
) -> None:
    """A run that has taken max_runtime stops at its next item, saves, and goes to the
    back of its queue (not a retry): a job deferred after it runs before it ends."""
    app = asyncjobs.App(redis_url)
    runs: list[tuple[int, Any]] = []
    order: list[str] = []

    @app.iterable_job(name="long", save_every=1000, save_interval=None, max_runtime=0.25)
    async def long(it: Iteration[int]) -> AsyncIterator[int]:
        runs.append((it.runs, it.cursor))
        async for n, cursor in from_range(0, 20, cursor=it.cursor):
            await asyncio.sleep(0.05)
            await redis.rpush("test:items", n)
            yield cursor
        order.append("long")

    @app.job(name="short")
    async def short() -> None:
        order.append("short")

    try:
        jid = await long.defer()
        assert jid is not None
        async with running(app.worker(concurrency=1, scheduler_poll=0.1)):
            await wait_for(lambda: _count(redis, 2))
            await short.defer()
            await wait_for(lambda: len(order) == 2, timeout=15)
        assert order == ["short", "long"]
        assert await items(redis) == list(range(20))
        assert len(runs) >= 3 and runs[0] == (1, None)
        assert [r for r, _ in runs] == list(range(1, len(runs) + 1))
        assert await redis.get("{asyncjobs}:stat:failed") is None
        assert await redis.zcard("{asyncjobs}:retry") == 0
        assert not await redis.exists(STATE + jid)
    finally:
        await app.aclose()


@pytest.mark.timeout(30)
async def test_the_testing_modes_run_every_item_without_redis() -> None:
    """asyncjobs.testing's inline and capture modes run an iterable job as a whole (no
    state, nothing saved), with its Iteration naming the job's jid."""
    from asyncjobs import testing

    app = asyncjobs.App("redis://127.0.0.1:1/0")  # never reached
    done: list[tuple[str, int]] = []

    @app.iterable_job(name="tested", save_every=2)
    async def tested(it: Iteration[int], stop: int) -> AsyncIterator[int]:
        async for n, cursor in from_range(0, stop, cursor=it.cursor):
            done.append((it.jid, n))
            yield cursor

    with testing.inline(app):
        jid = await tested.defer(3)
    assert done == [(jid, 0), (jid, 1), (jid, 2)]
    done.clear()
    with testing.capture(app) as captured:
        jid = await tested.defer(2)
        await captured.drain()
    assert done == [(jid, 0), (jid, 1)]
    await app.aclose()


@pytest.mark.timeout(30)
async def test_a_tracked_job_put_back_by_quiet_is_queued_again(
    redis_url: str, redis: aioredis.Redis
) -> None:
    app = asyncjobs.App(redis_url)
    reached = asyncio.Event()

    @app.iterable_job(name="tracked", save_every=10, track_status=True)
    async def tracked(it: Iteration[int]) -> AsyncIterator[int]:
        async for n, cursor in from_range(0, 100, cursor=it.cursor):
            if n == 3:
                reached.set()
                await asyncio.sleep(0.2)
            yield cursor

    try:
        handle = await tracked.defer()
        assert handle is not None
        worker = app.worker()
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(5):
                await reached.wait()
            await wait_for(lambda: _state_is(app, handle, "running"))  # written in the background
            worker.quiet_down()
            await wait_for(lambda: redis.llen(QUEUE))
            await wait_for(lambda: _state_is(app, handle, "queued"))
            worker.stop()
    finally:
        await app.aclose()


async def _state_is(app: asyncjobs.App, jid: str, want: str) -> bool:
    return (await app.status(jid)).state == want
