"""Batches (#14): callbacks, counts, nesting, reopening, expiry, on a real Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from asyncjobs._batch import BATCH_TTL
from tests.conftest import cli, running, text, wait_for


def events_of(raw: list[bytes | str]) -> list[str]:
    return [text(r) for r in raw]


def recorder(app: asyncjobs.App, redis: aioredis.Redis) -> asyncjobs.Job[..., None]:
    @app.job(name="record")
    async def record(bid: str, event: str) -> None:
        await redis.rpush("events", f"{event}:{bid}")

    return record


@pytest.mark.timeout(30)
async def test_success_and_complete_fire_once(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    record = recorder(app, redis)

    @app.job(name="work")
    async def work(n: int) -> None:
        await redis.incr("ran")

    async with app.batch(
        description="twenty",
        on_complete=record.s(event="complete"),
        on_success=record.s(event="success"),
        on_death=record.s(event="death"),
    ) as batch:
        for i in range(15):
            await work.defer(i)
        await work.defer_many([(i,) for i in range(5)])
        assert batch.added == 20
    bid = batch.bid
    status = await app.batch_status(bid)
    assert (status.total, status.pending, status.failures, status.complete) == (20, 20, 0, False)
    assert status.description == "twenty" and not status.open
    async with running(app.worker(concurrency=5)):
        await wait_for(lambda: redis.llen("events"), 10)
        await wait_for(lambda: _n(redis, 2), 10)
        await asyncio.sleep(0.3)  # nothing more comes
    assert sorted(events_of(await redis.lrange("events", 0, -1))) == [
        f"complete:{bid}",
        f"success:{bid}",
    ]
    assert int(await redis.get("ran") or 0) == 20
    status = await app.batch_status(bid)
    assert (status.total, status.pending, status.failures) == (20, 0, 0)
    assert status.complete and status.success and not status.dead
    ttl = await redis.ttl(f"{{asyncjobs}}:batch:{bid}")
    assert BATCH_TTL - 60 < ttl <= BATCH_TTL


async def _n(redis: aioredis.Redis, n: int) -> bool:
    return bool(await redis.llen("events") >= n)


@pytest.mark.timeout(30)
async def test_failure_then_retry_success(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    """Sidekiq's rules: a failed job counts in failures and as run once (complete
    fires); its later success removes it from the failures and success fires."""
    record = recorder(app, redis)

    @app.job(name="flaky", retry_in=lambda count, exc: 1.0)
    async def flaky(n: int) -> None:
        if n == 0 and await redis.incr("tries") == 1:
            raise ValueError("first try fails")

    async with app.batch(
        on_complete=record.s(event="complete"), on_success=record.s(event="success")
    ) as batch:
        handles = [await flaky.defer(n) for n in range(3)]
    async with running(app.worker(concurrency=3, scheduler_poll=0.1)):
        await wait_for(lambda: _n(redis, 1), 10)
        status = await app.batch_status(batch.bid)
        assert events_of(await redis.lrange("events", 0, -1)) == [f"complete:{batch.bid}"]
        assert (status.pending, status.failures, status.failed_jids) == (1, 1, [handles[0]])
        assert status.complete and not status.success
        await wait_for(lambda: _n(redis, 2), 10)
    assert events_of(await redis.lrange("events", 0, -1)) == [
        f"complete:{batch.bid}",
        f"success:{batch.bid}",
    ]
    status = await app.batch_status(batch.bid)
    assert (status.pending, status.failures, status.failed_jids) == (0, 0, [])


@pytest.mark.timeout(30)
async def test_death_fires_death_and_complete_not_success(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    record = recorder(app, redis)

    @app.job(name="doomed", retry=0)
    async def doomed(fail: bool) -> None:
        if fail:
            raise RuntimeError("dies")

    async with app.batch(
        on_complete=record.s(event="complete"),
        on_success=record.s(event="success"),
        on_death=record.s(event="death"),
    ) as batch:
        dead = await doomed.defer(True)
        await doomed.defer(False)
    async with running(app.worker()):
        await wait_for(lambda: _n(redis, 2), 10)
        await asyncio.sleep(0.3)
    assert sorted(events_of(await redis.lrange("events", 0, -1))) == [
        f"complete:{batch.bid}",
        f"death:{batch.bid}",
    ]
    status = await app.batch_status(batch.bid)
    assert status.dead and status.complete and not status.success
    assert (status.total, status.pending, status.failures, status.failed_jids) == (
        2,
        1,
        1,
        [dead],
    )


@pytest.mark.timeout(30)
async def test_jobs_done_before_the_block_exits_do_not_fire_early(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    record = recorder(app, redis)

    @app.job(name="quick")
    async def quick() -> None:
        await redis.incr("ran")

    async with running(app.worker()):
        async with app.batch(on_success=record.s(event="success")) as batch:
            await quick.defer()
            await wait_for(lambda: redis.get("ran"), 5)
            await asyncio.sleep(0.2)  # its ack is written meanwhile
            assert await redis.llen("events") == 0
            assert (await app.batch_status(batch.bid)).open
            await quick.defer()
        await wait_for(lambda: _n(redis, 1), 5)
        await asyncio.sleep(0.2)
    assert events_of(await redis.lrange("events", 0, -1)) == [f"success:{batch.bid}"]
    status = await app.batch_status(batch.bid)
    assert (status.total, status.pending) == (2, 0)


@pytest.mark.timeout(30)
async def test_empty_batch_succeeds_at_exit(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    record = recorder(app, redis)
    async with app.batch(on_success=record.s(event="success")) as batch:
        pass
    assert await redis.llen("{asyncjobs}:queue:default") == 1
    assert (await app.batch_status(batch.bid)).success


@pytest.mark.timeout(30)
async def test_nested_parent_completes_after_child(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    record = recorder(app, redis)

    @app.job(name="slow")
    async def slow(delay: float) -> None:
        await asyncio.sleep(delay)

    async with app.batch(on_success=record.s(event="parent")) as parent:
        await slow.defer(0.0)
        async with app.batch(on_success=record.s(event="child")) as child:
            await slow.defer(0.5)
    assert child.parent == parent.bid
    assert (await app.batch_status(parent.bid)).children == 1
    async with running(app.worker(concurrency=4)):
        await wait_for(lambda: _n(redis, 2), 10)
    # Both callbacks are pushed by one script, the child's first; they may run in
    # either order (concurrency 4), so the order is read from the batches' times.
    assert sorted(events_of(await redis.lrange("events", 0, -1))) == [
        f"child:{child.bid}",
        f"parent:{parent.bid}",
    ]
    child_status = await app.batch_status(child.bid)
    parent_status = await app.batch_status(parent.bid)
    assert child_status.parent == parent.bid
    assert child_status.success_at and parent_status.success_at
    assert child_status.success_at <= parent_status.success_at
    assert (await app.batch_status(parent.bid)).children == 0


@pytest.mark.timeout(30)
async def test_child_made_by_a_batch_job(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    record = recorder(app, redis)

    @app.job(name="leaf")
    async def leaf() -> None:
        await asyncio.sleep(0.3)
        await redis.rpush("events", "leaf")

    @app.job(name="spawner")
    async def spawner() -> None:
        async with app.batch(on_success=record.s(event="child")):
            await leaf.defer()

    async with app.batch(on_success=record.s(event="parent")) as parent:
        await spawner.defer()
    async with running(app.worker(concurrency=4)):
        await wait_for(lambda: _n(redis, 3), 10)
    got = events_of(await redis.lrange("events", 0, -1))
    assert got[0] == "leaf"  # the child's job ran before either callback was pushed
    [child] = [e.split(":")[1] for e in got[1:] if e.startswith("child:")]
    assert sorted(got[1:]) == [f"child:{child}", f"parent:{parent.bid}"]
    child_status = await app.batch_status(child)
    assert child_status.parent == parent.bid and child_status.success_at is not None
    parent_success = (await app.batch_status(parent.bid)).success_at
    assert parent_success is not None and child_status.success_at <= parent_success


@pytest.mark.timeout(30)
async def test_a_job_reopens_its_batch(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    record = recorder(app, redis)

    @app.job(name="more")
    async def more(depth: int) -> None:
        ctx = asyncjobs.current_job()
        await redis.rpush("ran", f"{depth}:{ctx.bid}")
        if depth < 2:
            assert ctx.bid is not None
            async with app.batch(bid=ctx.bid):
                await more.defer(depth + 1)

    async with app.batch(on_success=record.s(event="success")) as batch:
        await more.defer(0)
    async with running(app.worker()):
        await wait_for(lambda: _n(redis, 1), 10)
    assert events_of(await redis.lrange("ran", 0, -1)) == [f"{d}:{batch.bid}" for d in range(3)]
    status = await app.batch_status(batch.bid)
    assert (status.total, status.pending, status.success) == (3, 0, True)


@pytest.mark.timeout(30)
async def test_reopen_and_status_errors(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    with pytest.raises(asyncjobs.BatchError, match="no batch nope"):
        await app.batch_status("nope")
    with pytest.raises(asyncjobs.BatchError, match="no batch nope"):
        async with app.batch(bid="nope"):
            pass
    async with app.batch() as batch:
        pass
    with pytest.raises(asyncjobs.BatchError, match="is complete"):
        async with app.batch(bid=batch.bid):
            pass
    with pytest.raises(asyncjobs.ConfigError, match="pass bid= alone"):
        app.batch(bid=batch.bid, description="x")

    @app.job(name="nobid")
    async def nobid() -> None:
        pass

    with pytest.raises(asyncjobs.ArgumentError, match="batch id first"):
        async with app.batch(on_success=nobid):
            pass
    with pytest.raises(asyncjobs.ConfigError, match="takes a job"):
        app.batch(on_success="nobid")  # type: ignore[arg-type]


@pytest.mark.timeout(30)
async def test_a_repeated_ack_counts_once(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    """The batch block of ack.lua counts a job only if its in-flight field was still
    there: the same ack written twice (a retried write after a lost reply, or a late
    ack of a job the reaper gave back) changes nothing the second time, so it cannot
    stand in for the other job and fire the callback early."""
    record = recorder(app, redis)

    @app.job(name="one")
    async def one(n: int) -> None:
        pass

    async with app.batch(on_success=record.s(event="success")) as batch:
        jid = await one.defer(1)
        await one.defer(2)
    assert jid is not None
    store = await app.open_store()
    inflight = "{asyncjobs}:inflight:test"
    raw = await redis.rpop("{asyncjobs}:queue:default")
    assert isinstance(raw, bytes)
    await redis.hset(inflight, jid, raw)
    for _ in range(2):
        await store.ack(
            inflight,
            [jid.encode()],
            [],
            now=dt.datetime.now(dt.UTC).timestamp(),
            ttl=60,
            conn=store.client,
            batch=[jid.encode(), batch.bid, "done"],
        )
    status = await app.batch_status(batch.bid)
    assert (status.total, status.pending, status.success) == (2, 1, False)
    assert await redis.llen("{asyncjobs}:queue:default") == 1  # job 2; no callback
    assert int(await redis.get("{asyncjobs}:stat:processed") or 0) == 1


@pytest.mark.timeout(30)
async def test_plain_jobs_touch_no_batch_code(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    """Costs nothing when off: plain jobs are acknowledged by done.lua as before (no
    HEXISTS, no batch key), and their payloads carry no bid."""

    @app.job(name="plain")
    async def plain() -> None:
        await redis.incr("ran")

    await redis.config_resetstat()
    await plain.defer_many([() for _ in range(50)])
    async with running(app.worker()):
        await wait_for(lambda: _is(redis, "ran", 50), 10)
    stats = await redis.info("commandstats")
    assert "cmdstat_hexists" not in stats and "cmdstat_hincrby" not in stats
    assert not await redis.keys("{asyncjobs}:batch:*")
    raw = await redis.lrange("{asyncjobs}:queue:default", 0, -1)
    assert raw == []


async def _is(redis: aioredis.Redis, key: str, n: int) -> bool:
    return int(await redis.get(key) or 0) >= n


@pytest.mark.timeout(60)
async def test_cli_batch(app: asyncjobs.App, redis: aioredis.Redis, redis_url: str) -> None:
    @app.job(name="cli_job", retry=0)
    async def cli_job(fail: bool) -> None:
        if fail:
            raise ValueError("no")

    async with app.batch(description="nightly import") as batch:
        dead = await cli_job.defer(True)
        await cli_job.defer(False)
    async with running(app.worker()):
        await wait_for(lambda: _complete(app, batch.bid), 10)
    out = await cli(redis_url, "batch", batch.bid)
    assert out.returncode == 0, out.stderr
    shown = out.stdout.decode()
    assert "nightly import" in shown and f"failed jids:\n{dead}" in shown
    out = await cli(redis_url, "batch", batch.bid, "--json")
    data = json.loads(out.stdout)
    assert (data["total"], data["pending"], data["failures"]) == (2, 1, 1)
    assert data["complete"] and data["dead"] and not data["success"]
    assert data["failed_jids"] == [dead]
    out = await cli(redis_url, "batch", "nope")
    assert out.returncode == 2
    assert out.stderr.decode().strip().splitlines() == [
        "asyncjobs: error: no batch nope (expired, or never made)"
    ]


async def _complete(app: asyncjobs.App, bid: str) -> bool:
    return (await app.batch_status(bid)).complete


@pytest.mark.timeout(30)
async def test_a_poison_pill_the_reaper_kills_counts_as_a_death(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """reap.lua moving a batch job to the dead set (its worker died with it too often)
    counts a death in its batch, so the batch still completes."""
    record = recorder(app, redis)

    @app.job(name="pill")
    async def pill() -> None:
        pass

    async with app.batch(
        on_complete=record.s(event="complete"), on_death=record.s(event="death")
    ) as batch:
        jid = await pill.defer()
    raw = await redis.rpop("{asyncjobs}:queue:default")
    assert isinstance(raw, bytes) and jid is not None
    ghost = "ghost-host:1:abcdef"  # another host: presumed dead once its record is gone
    await redis.hset(f"{{asyncjobs}}:inflight:{ghost}", jid, raw)
    await redis.sadd("{asyncjobs}:processes", ghost)
    async with running(app.worker(max_recoveries=1)):
        await wait_for(lambda: _n(redis, 2), 10)
    assert sorted(events_of(await redis.lrange("events", 0, -1))) == [
        f"complete:{batch.bid}",
        f"death:{batch.bid}",
    ]
    status = await app.batch_status(batch.bid)
    assert status.failed_jids == [jid] and status.dead and status.complete
    assert await redis.zcard("{asyncjobs}:dead") == 1


@pytest.mark.timeout(30)
async def test_test_modes_keep_their_batches_out_of_redis(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """Under a test mode a batch lives in the mode (asyncjobs.testing): nothing of it
    reaches Redis, even with an app bound to a live server."""
    from asyncjobs import testing

    seen: list[str] = []

    @app.job(name="tm")
    async def tm() -> None:
        pass

    @app.job(name="tm_done")
    async def tm_done(bid: str) -> None:
        seen.append(bid)

    with testing.capture(app) as captured:
        async with app.batch(on_success=tm_done) as batch:
            await tm.defer()
        await captured.drain()
        assert (await app.batch_status(batch.bid)).success
    assert seen == [batch.bid]
    assert await redis.keys("{asyncjobs}:*") == []
    with pytest.raises(asyncjobs.BatchError):
        await app.batch_status(batch.bid)  # the real store knows nothing of it


# -- the index of batches ({ns}:batches): api.batches, asyncjobs batches ------------------

INDEX = "{asyncjobs}:batches"


async def _index(redis: aioredis.Redis) -> set[str]:
    members: list[Any] = await redis.zrange(INDEX, 0, -1)
    return {text(m) for m in members}


@pytest.mark.timeout(30)
async def test_opening_a_batch_indexes_it(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    """batch.lua adds the batch to the index as it opens it, scored by its creation
    time; a child is listed in its parent; api.batches lists them newest first."""
    record = recorder(app, redis)

    @app.job(name="ix")
    async def ix(n: int) -> None:
        pass

    async with app.batch(description="outer", on_success=record.s(event="success")) as outer:
        await ix.defer(1)
        async with app.batch(description="inner") as inner:
            await ix.defer(2)
    rows: list[Any] = await redis.zrange(INDEX, 0, -1, withscores=True)
    assert [text(m) for m, _ in rows] == [outer.bid, inner.bid]
    created = await redis.hget(f"{{asyncjobs}}:batch:{outer.bid}", "created_at")
    assert created is not None and rows[0][1] == pytest.approx(float(created))
    page = await api.batches(app)
    assert [s.bid for s in page.entries] == [inner.bid, outer.bid]
    assert page.next is None
    first = page.entries[1]
    assert (first.description, first.total, first.pending) == ("outer", 1, 1)
    assert first.state == "pending"
    assert first.child_bids == [inner.bid] and first.callbacks == {"success": "record"}
    assert page.entries[0].parent == outer.bid
    async with running(app.worker()):
        await wait_for(lambda: _n(redis, 1), 10)
    done = (await api.batches(app)).entries
    assert [s.state for s in done] == ["succeeded", "succeeded"]

    # A gate of configure(after=...) is a batch too: indexed.
    @app.job(name="kept", keep_result=60)
    async def kept() -> None:
        pass

    handle = await kept.defer()
    assert handle is not None
    await ix.configure(after=[handle]).defer(3)
    assert await redis.zcard(INDEX) == 3


@pytest.mark.timeout(30)
async def test_listing_pages_and_prunes(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    bids = []
    for i in range(7):
        async with app.batch(description=f"b{i}") as b:
            pass
        bids.append(b.bid)
    newest = list(reversed(bids))
    seen: list[str] = []
    after = None
    while True:
        page = await api.batches(app, limit=3, after=after)
        seen += [s.bid for s in page.entries]
        if page.next is None:
            break
        after = page.next
    assert seen == newest
    # Same creation time: paging goes by (time, bid) and skips or repeats none.
    await redis.zadd(INDEX, dict.fromkeys(bids, 1.5e9))
    tied = [s.bid for s in (await api.batches(app, limit=2)).entries]
    p = await api.batches(app, limit=2)
    rest = []
    while p.next is not None:
        p = await api.batches(app, limit=2, after=p.next)
        rest += [s.bid for s in p.entries]
    assert sorted(tied + rest) == sorted(bids) and len(tied + rest) == 7
    # A batch whose hash is gone (expired) is skipped by the listing and removed from
    # the index; the page is still full.
    await redis.zadd(INDEX, {b: i for i, b in enumerate(bids)})
    for gone in (bids[6], bids[4]):
        await redis.delete(f"{{asyncjobs}}:batch:{gone}")
    page = await api.batches(app, limit=3)
    assert [s.bid for s in page.entries] == [bids[5], bids[3], bids[2]]
    assert await redis.zscore(INDEX, bids[6]) is None
    assert await redis.zscore(INDEX, bids[4]) is None
    assert await redis.zcard(INDEX) == 5
    with pytest.raises(api.InvalidArgument, match="no batch nope in the index"):
        await api.batches(app, after="nope")
    with pytest.raises(api.InvalidArgument):
        await api.batches(app, limit=0)


@pytest.mark.timeout(30)
async def test_opening_prunes_old_entries_whose_batch_is_gone(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """batch.lua removes up to 8 entries older than the TTL whose hash is gone; an
    old entry whose batch still lives (activity since) stays."""
    async with app.batch() as alive:
        pass
    old = dt.datetime.now(dt.UTC).timestamp() - BATCH_TTL - 100
    await redis.zadd(INDEX, {f"gone{i}": old + i for i in range(10)})
    await redis.zadd(INDEX, {alive.bid: old + 50})
    async with app.batch() as fresh:
        pass
    left = await _index(redis)
    assert left == {alive.bid, fresh.bid, "gone8", "gone9"}
    async with app.batch() as third:
        pass
    left = await _index(redis)
    assert left == {alive.bid, fresh.bid, third.bid}


@pytest.mark.timeout(60)
async def test_cli_batches(app: asyncjobs.App, redis: aioredis.Redis, redis_url: str) -> None:
    @app.job(name="cli_b", retry=0)
    async def cli_b(fail: bool) -> None:
        if fail:
            raise ValueError("no")

    async with app.batch(description="first") as first:
        await cli_b.defer(False)
    async with app.batch(description="second") as second:
        await cli_b.defer(True)
    async with running(app.worker()):
        await wait_for(lambda: _complete(app, second.bid), 10)
        await wait_for(lambda: _complete(app, first.bid), 10)
    out = await cli(redis_url, "batches")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    rows = [line for line in lines if first.bid in line or second.bid in line]
    assert second.bid in rows[0] and "dead" in rows[0] and "second" in rows[0]
    assert first.bid in rows[1] and "succeeded" in rows[1]
    assert "next page" not in out.stdout.decode()
    out = await cli(redis_url, "batches", "--limit", "1")
    assert out.stdout.decode().splitlines()[-1] == f"next page: --after {second.bid}"
    out = await cli(redis_url, "batches", "--json", "--limit", "1")
    data = json.loads(out.stdout)
    assert [b["bid"] for b in data] == [second.bid]
    assert data[0]["state"] == "dead" and data[0]["failures"] == 1
    assert data[0]["failed_jids"] and data[0]["description"] == "second"
    out = await cli(redis_url, "batches", "--json", "--after", second.bid)
    assert [b["bid"] for b in json.loads(out.stdout)] == [first.bid]
    out = await cli(redis_url, "batches", "--after", "nope")
    assert out.returncode == 2 and "no batch nope in the index" in out.stderr.decode()
