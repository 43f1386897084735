"""Unique jobs and debounce (#13): the lock taken with the enqueue, conflicts, release."""

from __future__ import annotations

import logging
import signal
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
import asyncjobs._payload
import asyncjobs._unique
from asyncjobs import Deferrer, Unique, UniqueConflict, api
from tests.conftest import cli, running, spawn_worker, text, wait_for


def fast(count: int, exc: BaseException) -> float:
    return 0.05


async def locks(redis: aioredis.Redis, app: asyncjobs.App) -> list[str]:
    return sorted(text(k) for k in await redis.keys(f"{app.keys.prefix}:unique:*"))


async def test_skip_returns_none_and_logs_why(
    app: asyncjobs.App, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    @app.job(unique=True)
    async def sync(account: int, full: bool = False) -> None: ...

    first = await sync.defer(1)
    assert first is not None
    with caplog.at_level(logging.DEBUG, logger="asyncjobs.unique"):
        assert await sync.defer(account=1) is None  # same call, keyword form
    assert f"its unique lock is held by jid={first}" in caplog.text
    assert await sync.defer(2) is not None  # other arguments: another lock
    assert await sync.defer(1, full=True) is not None
    assert await sync.configure(queue="other").defer(1) is not None  # another queue
    assert await redis.llen(app.keys.queue("default")) == 3
    keys = await locks(redis, app)
    assert len(keys) == 4
    holders = {text(await redis.get(k) or b"").split(" ", 1)[0] for k in keys}
    assert first in holders  # the value starts with the jid: the token
    ttl = await redis.pttl(keys[0])
    assert 3_500_000 < ttl <= 3_600_000  # the default TTL, an hour
    lock = await api.unique_lock(app, sync, account=1)
    assert lock is not None and lock.holder == first and 3500 < lock.ttl <= 3600
    assert lock.key in keys
    assert await api.unique_lock(app, sync, 99) is None
    other = await api.unique_lock(app, sync.configure(queue="other"), 1)
    assert other is not None and other.key != lock.key

    @app.job
    async def plain() -> None: ...

    with pytest.raises(asyncjobs.ConfigError, match="is not unique"):
        await api.unique_lock(app, plain)


async def test_chosen_args_make_the_key(app: asyncjobs.App) -> None:
    @app.job(unique=Unique(args=("account",)))
    async def sync(account: int, note: str = "") -> None: ...

    assert await sync.defer(1, "a") is not None
    assert await sync.defer(1, "b") is None
    assert await sync.defer(2, "a") is not None


async def test_raise_says_who_holds_it(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job(unique=Unique(on_conflict="raise"))
    async def report(day: str) -> None: ...

    jid = await report.defer("2026-01-01")
    with pytest.raises(UniqueConflict, match=f"held by jid={jid}") as info:
        await report.defer("2026-01-01")
    assert info.value.holder == jid
    assert await redis.llen(app.keys.queue("default")) == 1


async def test_replace_drops_the_waiting_job_debounce(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    ran: list[int] = []

    @app.job(unique=Unique(on_conflict="replace"))
    async def reindex(record: int, edit: int = 0) -> None:
        ran.append(edit)

    # A burst of edits, each deferred 0.3 s out: only the last one runs.
    d = reindex.configure(delay=0.3, unique=Unique(on_conflict="replace", args=("record",)))
    jids = [await d.defer(7, edit=i) for i in range(5)]
    assert len(set(jids)) == 5
    assert await redis.zcard(app.keys.schedule) == 1
    # Queued now (not scheduled): replace drops it from the queue.
    now = reindex.configure(unique=Unique(on_conflict="replace", args=("record",)))
    await now.defer(8)
    await now.defer(8, edit=1)
    assert await redis.llen(app.keys.queue("default")) == 1
    async with running(app.worker()):
        await wait_for(lambda: sorted(ran) == [1, 4])
    await wait_for(lambda: _no_locks(redis, app))


async def _no_locks(redis: aioredis.Redis, app: asyncjobs.App) -> bool:
    return not await locks(redis, app)


async def test_lock_released_on_success_held_through_retries(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    runs: list[int] = []
    seen: list[bool] = []
    gate = anyio.Event()

    @app.job(unique=True, retry_in=fast)
    async def flaky() -> None:
        runs.append(asyncjobs.current_job().retry_count)
        seen.append(await flaky.defer() is None)  # held while it runs and retries
        if len(runs) < 3:
            raise RuntimeError("not yet")
        await gate.wait()

    await flaky.defer()
    async with running(app.worker()):
        await wait_for(lambda: len(runs) == 3)
        assert seen == [True, True, True]
        assert len(await locks(redis, app)) == 1
        gate.set()
        await wait_for(lambda: _no_locks(redis, app))
    assert await flaky.defer() is not None


@pytest.mark.parametrize("outcome", ["dead", "discard"])
async def test_lock_released_on_death_and_discard(
    app: asyncjobs.App, redis: aioredis.Redis, outcome: str
) -> None:
    @app.job(unique=True, retry=0, dead=outcome == "dead")
    async def doomed() -> None:
        raise RuntimeError("no")

    await doomed.defer()
    async with running(app.worker()):
        await wait_for(lambda: redis.get(app.keys.stat_failed))
        await wait_for(lambda: _no_locks(redis, app))
    assert await redis.zcard(app.keys.dead) == (1 if outcome == "dead" else 0)
    assert await doomed.defer() is not None


async def test_until_start_frees_the_lock_when_it_starts(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    started = anyio.Event()
    gate = anyio.Event()

    @app.job(unique=Unique(until="start"))
    async def slow() -> None:
        started.set()
        await gate.wait()

    await slow.defer()
    assert await slow.defer() is None
    async with running(app.worker()):
        with anyio.fail_after(5):
            await started.wait()
        await wait_for(lambda: _no_locks(redis, app))
        assert await slow.defer() is not None  # may wait while the first runs
        gate.set()


async def test_ttl_frees_a_lock_and_the_token_protects_the_new_holder(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    gate = anyio.Event()
    ran: list[int] = []

    @app.job(unique=Unique(ttl=0.3, args=()))
    async def job(n: int) -> None:
        ran.append(n)
        if n == 2:
            await gate.wait()

    first = await job.defer(1)
    assert await job.defer(1) is None
    await anyio.sleep(0.4)  # the TTL ran out: the lock is gone, never stuck
    assert await locks(redis, app) == []
    second = await job.configure(unique=Unique(ttl=60, args=())).defer(2)
    assert second is not None and first is not None
    [key] = await locks(redis, app)

    async def processed() -> bool:
        return await redis.get(app.keys.stat_processed) == b"1"

    async with running(app.worker()):
        await wait_for(lambda: sorted(ran) == [1, 2])
        await wait_for(processed)
        await anyio.sleep(0.2)  # the first one's release had time to land: it did not
        assert text(await redis.get(key) or b"").startswith(second + " ")
        gate.set()
        await wait_for(lambda: _no_locks(redis, app))
    third = await job.defer(3)
    assert third is not None
    store = app.store
    assert store is not None
    name = key.split(":unique:", 1)[1]
    assert await store.unlock(name, first) is False
    assert await store.unlock(name, third) is True
    assert await redis.exists(key) == 0


async def test_defer_many_and_scheduled_take_locks(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    import datetime as dt

    ran: list[int] = []

    @app.job(unique=True)
    async def job(n: int) -> None:
        ran.append(n)

    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.2)
    jids = await job.defer_many([(1,), (2,), (1,), (3,)], at=[None, soon, None, soon])
    assert jids[2] is None and None not in (jids[0], jids[1], jids[3])
    assert await redis.llen(app.keys.queue("default")) == 1
    assert await redis.zcard(app.keys.schedule) == 2
    assert await job.configure(delay=10).defer(2) is None  # the scheduled one holds it
    assert len(await locks(redis, app)) == 3
    async with running(app.worker()):
        await wait_for(lambda: sorted(ran) == [1, 2, 3])
        await wait_for(lambda: _no_locks(redis, app))


async def test_defer_many_raise_mode(app: asyncjobs.App) -> None:
    @app.job(unique=Unique(on_conflict="raise"))
    async def job(n: int) -> None: ...

    with pytest.raises(UniqueConflict):
        await job.defer_many([(1,), (1,)])


async def test_while_executing_never_two_at_once(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    running_now = 0
    most = 0
    done: list[int] = []

    @app.job(unique=Unique(until="executing", ttl=30))
    async def exclusive(n: int) -> None:
        nonlocal running_now, most
        running_now += 1
        most = max(most, running_now)
        await anyio.sleep(0.1)
        running_now -= 1
        done.append(n)

    # No lock at enqueue: all four are queued ...
    for _ in range(4):
        assert await exclusive.defer(1) is not None
    async with running(app.worker(concurrency=4)):
        await wait_for(lambda: len(done) == 4)
    assert most == 1  # ... and they ran one at a time
    await wait_for(lambda: _no_locks(redis, app))


async def test_bad_options_say_what_to_do(app: asyncjobs.App) -> None:
    with pytest.raises(asyncjobs.ConfigError, match="unique= takes True"):

        @app.job(unique="yes")  # type: ignore[call-overload, untyped-decorator]
        async def a() -> None: ...

    with pytest.raises(asyncjobs.ConfigError, match="ttl"):

        @app.job(unique=Unique(ttl=0))
        async def b() -> None: ...

    with pytest.raises(asyncjobs.ConfigError, match="until"):
        asyncjobs._unique.resolve(Unique(until="never"), "x")  # type: ignore[arg-type]


async def test_lock_held_through_a_worker_kill_and_released_by_the_recovered_run(
    redis_url: str, redis: aioredis.Redis
) -> None:
    """A worker SIGKILLed mid-job: the job is recovered with its jid, so its lock (taken
    at enqueue) stays held, no duplicate can be deferred meanwhile, and the recovered
    run's success releases it."""
    from tests.apps import recorder

    recorder.app.redis_url = redis_url
    unique = recorder.record.configure(unique=Unique(args=("n",)))
    try:
        jid = await unique.defer(1, sleep=30)
        assert jid is not None
        victim = spawn_worker(redis_url)
        try:
            await wait_for(lambda: redis.llen("test:started"), timeout=15)
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
        assert await unique.defer(1) is None  # still held by the killed run
        [key] = await redis.keys("{asyncjobs}:unique:*")
        assert text(await redis.get(key) or b"").startswith(jid + " ")
        # A worker on this host reaps the dead pid at once and reruns the job; a server
        # middleware stands in for its 30 s body (returning is a success).
        recovered: list[tuple[str, int]] = []

        async def quick(ctx: asyncjobs.JobContext, call_next: Any) -> None:
            recovered.append((ctx.jid, current_payload_recoveries()))

        recorder.app.server_middleware.add(quick)
        try:
            async with recorder.app.run_worker():
                await wait_for(lambda: recovered, timeout=10)
                await wait_for(lambda: _no_locks_named(redis), timeout=5)
        finally:
            recorder.app.server_middleware.remove(quick)
        assert recovered == [(jid, 1)]
        assert await unique.defer(1) is not None
    finally:
        await recorder.app.aclose()


def current_payload_recoveries() -> int:
    from asyncjobs._job import current_payload

    p = current_payload()
    return p.recoveries if p is not None else -1


async def _no_locks_named(redis: aioredis.Redis) -> bool:
    return not await redis.keys("{asyncjobs}:unique:*")


async def test_a_scheduled_jobs_lock_lives_its_ttl_from_its_due_time(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    @app.job(unique=Unique(ttl=60))
    async def later() -> None: ...

    await later.configure(delay=7200).defer()
    [key] = await locks(redis, app)
    assert 7250_000 < await redis.pttl(key) <= 7260_000


async def test_replace_skips_an_earlier_job_promoted_before_it_could_be_removed(
    app: asyncjobs.App, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler moved the earlier job to its queue (rewriting its payload) just
    before the replacing defer: the script cannot find it to drop it, so the worker
    skips it, seeing its lock held by the later job."""
    import time

    ran: list[int] = []

    @app.job(unique=Unique(on_conflict="replace", args=("record",)))
    async def reindex(record: int, version: int) -> None:
        ran.append(version)

    first = await reindex.configure(delay=0.05).defer(7, 1)
    await anyio.sleep(0.1)
    store = app.store
    assert store is not None
    members = [m for m in await redis.zrange(app.keys.schedule, 0, -1) if isinstance(m, bytes)]
    assert await store.promote(app.keys.schedule, members, time.time()) == 1
    await reindex.defer(7, 2)
    assert await redis.llen(app.keys.queue("default")) == 2  # not found: both queued
    caplog.set_level(logging.INFO, logger="asyncjobs.job")
    async with running(app.worker()):
        await wait_for(lambda: ran == [2])
        await wait_for(lambda: _no_locks(redis, app))
        await anyio.sleep(0.1)
    assert ran == [2]
    assert f"replaced {reindex.name} jid={first} by jid=" in caplog.text


# -- a unique job removed by hand releases its lock (sidekiq-unique-jobs' API patches) --

# Every way the API removes a waiting job: where it waits, and what removes it.
REMOVALS = [
    "queue.delete",
    "queue.clear",
    "scheduled.delete",
    "scheduled.clear",
    "scheduled.kill",
    "scheduled.kill_all",
    "retry.delete",
    "retry.clear",
    "retry.kill",
    "retry.kill_all",
    "queue.cancel",
    "scheduled.cancel",
    "retry.cancel",
]


def _hour(count: int, exc: BaseException) -> float:
    return 3600.0


def _failing_unique(app: asyncjobs.App, **unique: Any) -> asyncjobs.Job[Any, Any]:
    @app.job(name="sync", unique=Unique(**unique), retry_in=_hour)
    async def sync(account: int) -> None:
        raise RuntimeError("fails, to wait in the retry set")

    return sync


async def _place(
    app: asyncjobs.App, redis: aioredis.Redis, job: asyncjobs.Job[Any, Any], where: str, *ns: int
) -> list[str]:
    """Defer ``job(n)`` for each n to wait in a queue, the schedule or the retry set
    (a worker runs them once: they fail, due again in an hour); their jids."""
    d = job.configure(delay=3600) if where == "scheduled" else job
    jids = [await d.defer(n) for n in ns]
    assert None not in jids
    if where == "retry":

        async def all_retrying() -> bool:
            return await redis.zcard(app.keys.retry) == len(ns)

        async with running(app.worker()):
            await wait_for(all_retrying)
    return [str(j) for j in jids]


async def _remove(app: asyncjobs.App, path: str, jid: str) -> None:
    """Remove a waiting job through the API path ``path`` (the clears and kill-alls
    take everything where it waits)."""
    where, op = path.split(".")
    if op == "cancel":
        assert await app.cancel(jid) == "removed"
        return
    if where == "queue":
        if op == "delete":
            await api.delete_queued(app, "default", jid)
        else:
            assert await api.clear_queue(app, "default") >= 1
        return
    jobs = api.ScheduledSet(app) if where == "scheduled" else api.RetrySet(app)
    if op in ("delete", "kill"):
        await getattr(jobs, op)(jid)
    elif op == "clear":
        assert await jobs.clear() >= 1
    else:
        assert await jobs.kill_all() >= 1


async def _holder(
    app: asyncjobs.App, job: asyncjobs.Job[Any, Any] | Deferrer[Any, Any], n: int
) -> str | None:
    lock = await api.unique_lock(app, job, n)
    return None if lock is None else lock.holder


@pytest.mark.parametrize("path", REMOVALS)
async def test_a_unique_job_removed_by_hand_can_be_deferred_again_at_once(
    app: asyncjobs.App, redis: aioredis.Redis, path: str
) -> None:
    sync = _failing_unique(app)
    where, op = path.split(".")
    first, other = await _place(app, redis, sync, where, 1, 2)
    assert await sync.defer(1) is None  # held while it waits
    await _remove(app, path, first)
    again = await sync.defer(1)  # at once, with the same arguments
    assert again is not None and again != first
    assert await _holder(app, sync, 1) == again
    if op in ("delete", "kill", "cancel"):
        assert await _holder(app, sync, 2) == other  # the job left waiting keeps its own
    else:
        assert await _holder(app, sync, 2) is None
    if op.startswith("kill"):
        # The dead set's operations touch no lock (a dead job holds none): the lock the
        # new job took stays.
        dead = api.DeadSet(app)
        assert (await dead.find(first)).jid == first
        await dead.delete(first)
        await dead.clear()
        assert await _holder(app, sync, 1) == again


@pytest.mark.parametrize("path", REMOVALS)
async def test_removing_a_job_leaves_the_lock_a_later_job_took_over(
    app: asyncjobs.App, redis: aioredis.Redis, path: str
) -> None:
    """The older job's lock ran out (its TTL) and a later job with the same arguments
    took it: removing the older one leaves the later one's lock; removing the later
    one releases it."""
    sync = _failing_unique(app)
    where, _ = path.split(".")
    [first] = await _place(app, redis, sync, where, 1)
    [key] = await locks(redis, app)
    await redis.delete(key)  # the TTL ran out
    # The later job waits elsewhere (a clear or kill-all of the older one's place
    # would take it too).
    later = await (sync if where != "queue" else sync.configure(delay=3600)).defer(1)
    assert later is not None
    assert await _holder(app, sync, 1) == later
    await _remove(app, path, first)
    assert text(await redis.get(key) or b"").startswith(later + " ")
    if where == "queue":
        await api.ScheduledSet(app).delete(later)
    else:
        await api.delete_queued(app, "default", later)
    assert await locks(redis, app) == []


async def test_a_clear_releases_exactly_the_locks_of_its_unique_jobs(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """A queue of plain jobs (several chunks of the drain) and unique ones: the clear
    releases the locks of the unique jobs it deleted, and no other: not a lock held
    until its TTL (a throttle), not one a later job took over, not one of another
    queue."""

    @app.job
    async def plain(n: int) -> None: ...

    @app.job(unique=True)
    async def success(n: int) -> None: ...

    @app.job(unique=Unique(until="start"))
    async def start(n: int) -> None: ...

    @app.job(unique=Unique(until="ttl"))
    async def throttled(n: int) -> None: ...

    for chunk in range(5):
        await plain.defer_many([(n,) for n in range(chunk * 500, chunk * 500 + 500)])
        assert await success.defer(chunk) is not None
        assert await start.defer(chunk) is not None
    assert await throttled.defer(0) is not None
    taken = await success.defer(99)  # its lock ran out, and a later job took it
    assert taken is not None
    await redis.delete((await api.unique_lock(app, success, 99) or _no()).key)
    later = await success.configure(delay=3600).defer(99)
    assert later is not None
    elsewhere = await success.configure(queue="other").defer(0)
    assert elsewhere is not None
    before = set(await locks(redis, app))
    assert len(before) == 13
    assert await api.clear_queue(app, "default") == 2500 + 10 + 2
    assert await redis.llen(app.keys.queue("default")) == 0
    after = set(await locks(redis, app))
    assert len(after) == 3
    assert await _holder(app, throttled, 0) is not None  # only its TTL ends it
    assert await _holder(app, success, 99) == later
    assert await _holder(app, success.configure(queue="other"), 0) == elsewhere
    for n in range(5):
        assert await success.defer(n) is not None
        assert await start.defer(n) is not None
    assert not await redis.keys(f"{app.keys.prefix}:clearing:*")  # nothing left behind


def _no() -> Any:
    raise AssertionError("no lock")


@pytest.mark.parametrize("kind", ["queue", "scheduled"])
async def test_a_clear_leaves_the_jobs_pushed_while_it_drains(
    app: asyncjobs.App, redis: aioredis.Redis, kind: str
) -> None:
    """Driven step by step through the store: the first script moves the queue (or
    set) aside, and jobs deferred between the chunks of the drain are not deleted; each
    chunk hands back only the payloads of unique jobs."""

    @app.job
    async def plain(n: int) -> None: ...

    @app.job(unique=True)
    async def uniq(n: int) -> None: ...

    d_plain = plain.configure(delay=3600) if kind == "scheduled" else plain
    d_uniq = uniq.configure(delay=3600) if kind == "scheduled" else uniq
    await d_plain.defer_many([(n,) for n in range(2500)])
    held = [await d_uniq.defer(n) for n in range(3)]
    store = app.store
    assert store is not None
    key = app.keys.queue("default") if kind == "queue" else app.keys.schedule
    temp, size = await store.clear_begin(key, "default" if kind == "queue" else None)
    assert size == 2503
    assert temp.startswith(app.keys.prefix + ":clearing:")  # the same hash tag
    assert not await redis.exists(key) and 3500 < await redis.ttl(temp) <= 3600
    if kind == "queue":
        assert not await redis.sismember(app.keys.queues, "default")
    pushed = [await d_plain.defer(-1), await d_uniq.defer(100)]
    assert await d_uniq.defer(0) is None  # not drained yet: its lock is still held
    found: list[bytes] = []
    left = size
    while left:
        left, payloads = await store.clear_drain(temp, queue=kind == "queue")
        found += payloads
        pushed.append(await d_plain.defer(-2 - len(pushed)))  # between two chunks
    assert not await redis.exists(temp)
    assert sorted(asyncjobs._payload.DECODER.decode(p).jid for p in found) == sorted(
        str(j) for j in held
    )
    raws: list[Any] = await (
        redis.lrange(key, 0, -1) if kind == "queue" else redis.zrange(key, 0, -1)
    )
    assert sorted(asyncjobs._payload.DECODER.decode(r).jid for r in raws) == sorted(
        str(j) for j in pushed
    )
    assert await store.release_locks(found) == 3
    assert [await d_uniq.defer(n) is not None for n in range(3)] == [True, True, True]


async def test_a_poison_pill_the_reaper_kills_releases_its_lock(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    """reap.lua sends a job recovered once too often to the dead set: its lock is
    released (as a death in a worker), unless a later job took it over or it is held
    until its TTL; a job given back to its queue keeps its lock."""
    import msgspec

    from asyncjobs._payload import DECODER, ENCODER
    from asyncjobs._worker.reaper import Reaper

    @app.job(unique=True)
    async def pill(n: int) -> None: ...

    @app.job(unique=Unique(until="ttl"))
    async def throttled(n: int) -> None: ...

    jids = [await pill.defer(n) for n in range(4)] + [await throttled.defer(0)]
    raws = await redis.lrange(app.keys.queue("default"), 0, -1)
    await redis.delete(app.keys.queue("default"))
    ghost = "ghost-host:1:abcdef"  # another host: presumed dead, its record gone
    for raw in raws:
        assert isinstance(raw, bytes)
        p = DECODER.decode(raw)
        # Jobs 0, 2, 3 and the throttled one were recovered once already: poison pills
        # now (max_recoveries=2); job 1 goes back to its queue.
        again = p.job == throttled.name or msgspec.json.decode(p.args)["n"] != 1
        data = ENCODER.encode(msgspec.structs.replace(p, recoveries=1 if again else 0))
        await redis.hset(app.keys.inflight(ghost), p.jid, data)
    await redis.sadd(app.keys.processes, ghost)
    key3 = (await api.unique_lock(app, pill, 3) or _no()).key
    await redis.delete(key3)  # job 3's lock ran out, and a later job took it
    later = await pill.configure(delay=3600).defer(3)
    assert later is not None
    store = app.store
    assert store is not None
    reaper = Reaper(store, "me:1:000000", interval=1.0, max_recoveries=2)
    assert await reaper.reap_once() == 5
    assert await redis.zcard(app.keys.dead) == 4
    assert await redis.llen(app.keys.queue("default")) == 1
    assert await _holder(app, pill, 0) is None
    assert await _holder(app, pill, 2) is None
    assert await _holder(app, pill, 1) == jids[1]  # back in its queue: still held
    assert await _holder(app, pill, 3) == later
    assert await _holder(app, throttled, 0) == jids[4]
    assert await pill.defer(0) is not None


async def test_the_cli_delete_releases_the_lock(
    app: asyncjobs.App, redis: aioredis.Redis, redis_url: str
) -> None:
    """The CLI removes jobs through the API: its removals release locks too (with no
    --app: the payload says which lock it holds)."""
    sync = _failing_unique(app)
    [scheduled] = await _place(app, redis, sync, "scheduled", 1)
    [queued] = await _place(app, redis, sync, "queue", 2)
    out = await cli(redis_url, "delete", scheduled)
    assert out.returncode == 0, text(out.stderr)
    out = await cli(redis_url, "queues", "default", "--delete", queued)
    assert out.returncode == 0, text(out.stderr)
    assert await locks(redis, app) == []
