"""Workflows on batches (#14): chains, fan-in, results passed on, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from asyncjobs._batching import step_bid
from asyncjobs._payload import Payload
from tests.conftest import running, text, wait_for, wait_settled


async def _got(redis: aioredis.Redis, n: int = 1) -> list[str]:
    return [text(v) for v in await redis.lrange("got", 0, -1)][:n] if n else []


@pytest.mark.timeout(30)
async def test_chain_passes_results_on(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job(name="add", keep_result=60)
    async def add(x: int, y: int) -> int:
        return x + y

    @app.job(name="times", keep_result=60)
    async def times(prev: int, k: int) -> int:
        return prev * k

    @app.job(name="report")
    async def report(prev: int, label: str) -> None:
        await redis.rpush("got", f"{label}={prev}")

    bid = await app.chain(add.s(1, 2), times.s(k=10), report.s(label="total"), description="sums")
    first = await app.batch_status(bid)
    assert (first.total, first.description) == (1, "sums: step 1")
    async with running(app.worker()):
        await wait_for(lambda: redis.llen("got"), 10)
    assert await _got(redis) == ["total=30"]
    descriptions = set()
    for key in await redis.keys("{asyncjobs}:batch:*"):
        if not text(key).endswith(":failed"):
            descriptions.add(text(await redis.hget(key, "desc") or b""))
    assert descriptions == {"sums: step 1", "sums: step 2", "sums: step 3"}


@pytest.mark.timeout(30)
async def test_fan_in_gets_every_result(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job(name="square", keep_result=60)
    async def square(x: int) -> int:
        await asyncio.sleep(0.01 * x)
        return x * x

    @app.job(name="total")
    async def total(results: list[int]) -> None:
        await redis.rpush("got", f"{sorted(results)}")

    await app.chain([square.s(x) for x in range(1, 5)], total.s())
    async with running(app.worker(concurrency=4)):
        await wait_for(lambda: redis.llen("got"), 10)
    assert await _got(redis) == ["[1, 4, 9, 16]"]


@pytest.mark.timeout(30)
async def test_results_not_kept_pass_nothing(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job(name="first")
    async def first() -> int:
        await redis.rpush("got", "first")
        return 1

    @app.job(name="second")
    async def second(tag: str) -> None:
        await redis.rpush("got", f"second {tag}")

    await app.chain(first.s(), second.s("x"))
    async with running(app.worker()):
        await wait_for(lambda: _has(redis, 2), 10)
    assert await _got(redis, 2) == ["first", "second x"]


async def _has(redis: aioredis.Redis, n: int) -> bool:
    return bool(await redis.llen("got") >= n)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("on_failure", ["stop", "continue"])
async def test_a_death_stops_the_chain_unless_continue(
    app: asyncjobs.App, redis: aioredis.Redis, on_failure: str
) -> None:
    @app.job(name="breaks", retry=0, keep_result=60)
    async def breaks() -> int:
        await redis.rpush("got", "breaks")
        raise RuntimeError("no")

    @app.job(name="after")
    async def after(prev: int | None) -> None:
        await redis.rpush("got", f"after {prev}")

    bid = await app.chain(breaks.s(), after.s(), on_failure=on_failure)
    async with running(app.worker()):
        await wait_for(lambda: _dead(app, bid), 10)
        if on_failure == "continue":
            await wait_for(lambda: _has(redis, 2), 10)
        await asyncio.sleep(0.5)  # a next step, had one been deferred, would run now
    expected = ["breaks"] if on_failure == "stop" else ["breaks", "after None"]
    assert await _got(redis, 5) == expected


async def _dead(app: asyncjobs.App, bid: str) -> bool:
    return (await app.batch_status(bid)).dead


@pytest.mark.timeout(30)
async def test_chain_refuses_bad_steps(app: asyncjobs.App) -> None:
    @app.job(name="a")
    async def a() -> None:
        pass

    other = asyncjobs.App(app.redis_url)

    @other.job(name="b")
    async def b() -> None:
        pass

    with pytest.raises(asyncjobs.ConfigError, match="at least one step"):
        await app.chain()
    with pytest.raises(asyncjobs.ConfigError, match="a step is job.s"):
        await app.chain(a.s(), "nope")
    with pytest.raises(asyncjobs.ConfigError, match="not registered on this app"):
        await app.chain(a.s(), b.s())
    with pytest.raises(asyncjobs.ConfigError, match="'stop' or 'continue'"):
        await app.chain(a.s(), on_failure="maybe")
    with pytest.raises(asyncjobs.ArgumentError, match="cannot be encoded"):
        await app.chain(a.s(), a.s(object()))


@pytest.mark.timeout(30)
async def test_after_waits_for_every_job(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    """configure(after=[...]): the job is enqueued once all of them succeeded, even
    those that had ended before it was deferred."""

    @app.job(name="fetch", track_status=True)
    async def fetch(source: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await redis.rpush("got", f"fetched {source}")

    @app.job(name="merge")
    async def merge(label: str) -> None:
        await redis.rpush("got", f"merge {label}")

    async with running(app.worker(concurrency=4)):
        early = await fetch.defer("early", 0.0)
        assert early is not None
        await wait_for(lambda: _has(redis, 1), 5)  # ended before merge is deferred
        slow = await fetch.defer("slow", 0.3)
        quick = await fetch.defer("quick", 0.0)
        assert slow is not None and quick is not None
        handle = await merge.configure(after=[early, slow, quick]).defer("all")
        assert handle is not None and len(handle) == 24
        await wait_for(lambda: _has(redis, 4), 10)
        await asyncio.sleep(0.3)
    assert await _got(redis, 5) == [
        "fetched early",
        "fetched quick",
        "fetched slow",
        "merge all",
    ]


@pytest.mark.timeout(30)
async def test_after_a_death_never_runs(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job(name="shaky", keep_result=60, retry=0)
    async def shaky() -> None:
        raise RuntimeError("no")

    @app.job(name="never")
    async def never() -> None:
        await redis.rpush("got", "never")

    bad = await shaky.defer()
    assert bad is not None
    await never.configure(after=[bad]).defer()
    async with running(app.worker()):
        await wait_for(lambda: _state(app, bad, "dead"), 10)
        await asyncio.sleep(0.5)
    assert await redis.llen("got") == 0
    assert await redis.llen("{asyncjobs}:queue:default") == 0
    [gate] = [text(k) for k in await redis.keys("{asyncjobs}:batch:*") if b":failed" not in k]
    status = await app.batch_status(gate.rsplit(":", 1)[1])
    assert status.dead and status.failed_jids == [bad] and not status.success


async def _state(app: asyncjobs.App, jid: str, state: str) -> bool:
    return (await app.status(jid)).state == state


@pytest.mark.timeout(30)
async def test_after_refuses_what_it_cannot_wait_for(app: asyncjobs.App) -> None:
    @app.job(name="untracked")
    async def untracked() -> None:
        pass

    @app.job(name="tracked", track_status=True)
    async def tracked() -> None:
        pass

    handle = await untracked.defer()
    assert handle is not None
    with pytest.raises(asyncjobs.ConfigError, match="keeps no status"):
        untracked.configure(after=[handle])
    with pytest.raises(asyncjobs.ConfigError, match="has no status or outcome"):
        await tracked.configure(after=[str(handle)]).defer()
    with pytest.raises(asyncjobs.ConfigError, match="non-empty list"):
        tracked.configure(after=[])
    with pytest.raises(asyncjobs.ConfigError, match="delay"):
        tracked.configure(after=["abc"], delay=5)
    with pytest.raises(asyncjobs.EnqueueError, match="defer each job"):
        await tracked.configure(after=["abc"]).defer_many([()])


@pytest.mark.timeout(30)
async def test_after_counts_a_repeated_outcome_once(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """result.lua deletes the set of gates as it counts a job in them: the outcome of a
    job stored twice (a rerun after its worker died before the ack) counts once, and
    cannot stand in for the other job waited for."""

    @app.job(name="part", track_status=True)
    async def part(n: int) -> None:
        pass

    @app.job(name="whole")
    async def whole() -> None:
        pass

    a, b = await part.defer(1), await part.defer(2)
    assert a is not None and b is not None
    await redis.delete("{asyncjobs}:queue:default")  # they will not run: outcomes by hand
    await whole.configure(after=[a, b]).defer()
    store = await app.open_store()
    out = b'{"state":"succeeded","at":1.0,"job":"part"}'
    for _ in range(2):
        await store.save_result(a, out, 60)
    assert await redis.llen("{asyncjobs}:queue:default") == 0  # still waits for b
    await store.save_result(b, out, 60)
    assert await redis.llen("{asyncjobs}:queue:default") == 1


@pytest.mark.timeout(30)
async def test_per_call_options_travel_with_signatures(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """``job.configure(queue=...).s(...)``: a chain's later step and a batch callback
    are deferred with the options they were given."""

    @app.job(name="first_step", keep_result=60)
    async def first_step() -> int:
        return 7

    @app.job(name="second_step")
    async def second_step(prev: int, tag: str) -> None:
        await redis.rpush("got", f"{asyncjobs.current_job().queue} {prev} {tag}")

    @app.job(name="on_done")
    async def on_done(bid: str) -> None:
        await redis.rpush("got", f"callback on {asyncjobs.current_job().queue}")

    await app.chain(
        first_step.s(),
        second_step.configure(queue="slow", retry=1, unique=asyncjobs.Unique()).s(tag="t"),
    )
    async with app.batch(on_success=on_done.configure(queue="callbacks").s()):
        pass
    async with running(app.worker(queues=["default", "slow", "callbacks"])):
        await wait_for(lambda: _has(redis, 2), 10)
    assert sorted(await _got(redis, 5)) == ["callback on callbacks", "slow 7 t"]
    with pytest.raises(asyncjobs.ConfigError, match="takes no after="):
        async with app.batch(on_success=on_done.configure(delay=5).s()):
            pass


async def _step_batches(redis: aioredis.Redis) -> dict[str, list[str]]:
    """The batches by description (``chain: step N``), each a list of bids."""
    out: dict[str, list[str]] = {}
    for key in await redis.keys("{asyncjobs}:batch:*"):
        name = text(key)
        if not name.endswith(":failed"):
            desc = text(await redis.hget(key, "desc") or b"")
            out.setdefault(desc, []).append(name.rsplit(":", 1)[1])
    return out


def _chain_jobs(
    app: asyncjobs.App, redis: aioredis.Redis
) -> tuple[asyncjobs.Job[[], None], asyncjobs.Job[[int], None], asyncjobs.Job[[], None]]:
    """Three jobs, ``one``, ``two(n)`` and ``three``, that record each run in ``got``."""

    @app.job(name="one")
    async def one() -> None:
        await redis.rpush("got", "one")

    @app.job(name="two")
    async def two(n: int) -> None:
        await redis.rpush("got", f"two {n}")

    @app.job(name="three")
    async def three() -> None:
        await redis.rpush("got", "three")

    return one, two, three


@pytest.mark.timeout(30)
async def test_a_step_that_runs_again_defers_nothing(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """Delivery is at-least-once: the step job (``asyncjobs.chain``) may run again after
    it deferred the next step (its worker killed before the ack, the reaper gives it
    back). The very same payload, delivered again, defers nothing: each job of the
    next step runs once, and the rest of the chain does not fork."""

    one, two, three = _chain_jobs(app, redis)
    bid = await app.chain(one.s(), [two.s(1), two.s(2)], three.s())
    async with running(app.worker()) as worker:
        await wait_settled(app, worker, ["default"])
        assert sorted(await _got(redis, 10)) == ["one", "three", "two 1", "two 2"]
        # The step job that deferred step 2, as the script pushed it: again.
        step = await redis.hget(f"{{asyncjobs}}:batch:{bid}", "cb:success")
        assert isinstance(step, bytes) and b'"asyncjobs.chain"' in step
        store = await app.open_store()
        await store.push("default", step)
        await wait_for(lambda: worker.statistics()["processed"] >= 7, 10)  # it ran
        await wait_settled(app, worker, ["default"])
    got = sorted(await _got(redis, 10))
    assert got == ["one", "three", "two 1", "two 2"], f"ran: {got}"
    batches = await _step_batches(redis)
    assert sorted(batches) == ["chain: step 1", "chain: step 2", "chain: step 3"]
    assert all(len(bids) == 1 for bids in batches.values()), batches


@pytest.mark.timeout(30)
async def test_a_step_cut_short_is_deferred_again_in_a_new_batch(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """The step job raised after it deferred some of the next step's jobs (as if its
    worker died there): that batch is left held open, so it never fires; the retry
    defers the whole step in a batch of its own. The jobs deferred before the failure
    run twice; the chain goes on once."""

    one, two, three = _chain_jobs(app, redis)
    cut: list[str] = []

    async def cut_once(
        payload: Payload, call_next: Callable[[Payload], Awaitable[str | None]]
    ) -> str | None:
        if payload.job == "two" and b"2" in bytes(payload.args) and not cut:
            cut.append(payload.jid)
            raise ConnectionError("cut short")
        return await call_next(payload)

    app.client_middleware.append(cut_once)
    bid = await app.chain(one.s(), [two.s(1), two.s(2)], three.s())
    async with running(app.worker()) as worker:
        await wait_settled(app, worker, ["default"])
        [retry] = await api.RetrySet(app).entries()
        assert retry.job == "asyncjobs.chain"
        await api.RetrySet(app).retry(retry.jid)  # its retry, due now
        await wait_for(lambda: _has(redis, 5), 10)
        await wait_settled(app, worker, ["default"])
    got = sorted(await _got(redis, 10))
    assert got == ["one", "three", "two 1", "two 1", "two 2"], f"ran: {got}"
    batches = await _step_batches(redis)
    assert [len(batches[f"chain: step {n}"]) for n in (1, 2, 3)] == [1, 2, 1], batches
    # Both derived from the batch of step 1: the first id, then the next one.
    assert sorted(batches["chain: step 2"]) == sorted([step_bid(bid, 0), step_bid(bid, 1)])
    step2 = [await app.batch_status(b) for b in batches["chain: step 2"]]
    held, done = sorted(step2, key=lambda s: s.total)
    # The batch cut short: still held (its job counted in no total), never fired.
    assert held.open and held.total == 0 and not held.complete
    assert done.success and done.total == 2 and not done.open
