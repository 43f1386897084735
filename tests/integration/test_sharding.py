"""Sharding (``App(shards=N)``) on a local 3-master Redis Cluster: the shards land on
different masters, and jobs deferred, scheduled, retried and reaped on every shard run;
the API adds the shards up."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator

import anyio
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncCluster

import asyncjobs
from asyncjobs import api
from asyncjobs._keys import Keys, keyslot, shard_of, shard_tags
from asyncjobs._payload import new_jid
from tests.conftest import cli, running, spawn_worker, text, wait_for
from tests.servers import RedisCluster

pytestmark = pytest.mark.cluster

SHARDS = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as c:
        yield c


async def _client(cluster: RedisCluster) -> AsyncCluster:
    client = AsyncCluster.from_url(cluster.url)
    await client.initialize()
    return client


@pytest.mark.timeout(30)
async def test_shards_land_on_different_masters(cluster: RedisCluster) -> None:
    app = asyncjobs.App(cluster.url, shards=SHARDS, namespace="spread")
    async with app:
        stores = await app.open_stores()
        assert [s.keys.prefix for s in stores] == [f"{{{t}}}" for t in shard_tags("spread", SHARDS)]
        assert stores[0].keys.queue("default") == Keys("spread").queue("default")
        masters = set()
        for s in stores:
            key = s.keys.queue("default")
            slot = cluster.keyslot(key)  # CLUSTER KEYSLOT, against our own CRC16
            assert slot == keyslot(key)
            masters.add(cluster.master_of_slot(slot))  # CLUSTER NODES
        assert len(masters) == SHARDS
        # What has one copy lives on shard 0, from any shard's keys.
        assert stores[2].keys.status("j") == stores[0].keys.status("j")
        assert stores[2].keys.paused == stores[0].keys.paused


@pytest.mark.timeout(60)
async def test_deferred_jobs_run_exactly_once_across_shards(cluster: RedisCluster) -> None:
    app = asyncjobs.App(cluster.url, shards=SHARDS, namespace="once")
    ran: Counter[int] = Counter()

    @app.job
    async def work(n: int) -> None:
        ran[n] += 1

    async with app:
        client = await _client(cluster)
        try:
            for n in range(50):
                await work.defer(n)
            await work.defer_many([(n,) for n in range(50, 400)])
            stores = await app.open_stores()
            sizes = [await client.llen(s.keys.queue("default")) for s in stores]
            assert sum(sizes) == 400 and all(size > 60 for size in sizes), sizes
            assert sum(q.size for q in await api.queues(app)) == 400
            async with running(app.worker(concurrency=12)) as w:
                await wait_for(lambda: len(ran) == 400, timeout=20)
                await w.wait_idle()
            assert set(ran.values()) == {1}
            stats = await api.Stats.fetch(app)
            assert stats.processed == 400 and stats.enqueued == 0
            per_shard = [int(await client.get(s.keys.stat_processed) or 0) for s in stores]
            assert per_shard == sizes  # each shard's jobs ran from it, counted there
        finally:
            await client.aclose()


@pytest.mark.timeout(60)
async def test_scheduled_and_retried_jobs_run_on_every_shard(cluster: RedisCluster) -> None:
    app = asyncjobs.App(cluster.url, shards=SHARDS, namespace="later")
    ran: Counter[int] = Counter()
    failed: set[int] = set()

    @app.job(retry=2, retry_in=lambda count, exc: 0.2)
    async def flaky(n: int) -> None:
        if n not in failed:
            failed.add(n)
            raise RuntimeError("first try fails")
        ran[n] += 1

    @app.job
    async def later(n: int) -> None:
        ran[n] += 1

    async with app:
        stores = await app.open_stores()
        await later.configure(delay=0.5).defer_many([(n,) for n in range(100, 160)])
        sched = api.ScheduledSet(app)
        assert await sched.size() == 60
        first = await sched.page(limit=25)
        second = await sched.page(after=first.next, limit=50)
        assert first.next is not None and second.next is None
        assert len({r.jid for r in first.entries + second.entries}) == 60
        await flaky.defer_many([(n,) for n in range(30)])
        async with running(app.worker(concurrency=6, scheduler_poll=0.2)):
            await wait_for(lambda: len(ran) == 90, timeout=30)
        assert set(ran.values()) == {1}
        stats = await api.Stats.fetch(app)
        assert (stats.processed, stats.failed, stats.retries, stats.scheduled) == (120, 30, 0, 0)
        client = await _client(cluster)
        try:
            # Every shard retried some jobs, and promoted some scheduled ones.
            for s in stores:
                assert int(await client.get(s.keys.stat_failed) or 0) > 0
        finally:
            await client.aclose()


@pytest.mark.timeout(60)
async def test_a_dead_process_jobs_are_reaped_on_every_shard(cluster: RedisCluster) -> None:
    """A process on another host that died holding jobs in every shard: the reapers
    (one per shard in the live worker) give each shard's jobs back to its queue."""
    app = asyncjobs.App(cluster.url, shards=SHARDS, namespace="reap")
    ran: Counter[int] = Counter()

    @app.job
    async def work(n: int) -> None:
        ran[n] += 1

    async with app:
        stores = await app.open_stores()
        client = await _client(cluster)
        dead = "elsewhere:4242:abcdef"  # another host: reaped once its record is gone
        try:
            for i, s in enumerate(stores):
                jobs = {}
                for n in range(i * 10, i * 10 + 10):
                    jid = new_jid()
                    jobs[jid] = json.dumps(
                        {"jid": jid, "class": work.name, "queue": "default", "args": {"n": n},
                         "created_at": time.time(), "retry": 3}
                    )  # fmt: skip
                await client.sadd(s.keys.processes, dead)
                await client.hset(s.keys.inflight(dead), mapping=jobs)  # type: ignore[arg-type]
            work_items = await api.ProcessSet(app).inflight(dead)
            assert len(work_items) == 30
            async with running(app.worker(concurrency=6, heartbeat_interval=0.2)):
                await wait_for(lambda: len(ran) == 30, timeout=20)
            assert set(ran.values()) == {1}
            for s in stores:
                assert not await client.exists(s.keys.inflight(dead))
                assert not await client.sismember(s.keys.processes, dead)
        finally:
            await client.aclose()


@pytest.mark.timeout(60)
async def test_api_adds_up_the_shards(cluster: RedisCluster) -> None:
    app = asyncjobs.App(cluster.url, shards=SHARDS, namespace="totals")
    started = anyio.Event()
    release = anyio.Event()

    @app.job(retry=0)
    async def dies() -> None:
        raise RuntimeError("no")

    @app.job
    async def slow(n: int) -> None:
        started.set()
        await release.wait()

    async with app:
        await slow.configure(queue="q2").defer_many([(n,) for n in range(4)])
        jids = await dies.defer_many([() for _ in range(12)])
        later = await slow.configure(delay=3600).defer_many([(n,) for n in range(9)])
        assert {q.name: q.size for q in await api.queues(app)} == {"default": 12, "q2": 4}
        assert len(await api.queue_entries(app, "q2", limit=100)) == 4
        async with running(app.worker(["default", "q2"], concurrency=30)) as w:
            await wait_for(lambda: _dead_is(app, 12), timeout=10)
            with anyio.fail_after(10):
                await started.wait()
            processes = await api.ProcessSet(app).list()
            assert [p.id for p in processes] == [w.process_id]
            assert processes[0].concurrency == 30 and processes[0].busy >= 1
            stats = await api.Stats.fetch(app)
            assert (stats.dead, stats.scheduled, stats.processes) == (12, 9, 1)
            assert stats.failed == 12
            # Found, and acted on, in whichever shard holds them.
            job = await api.find_job(app, jids[5] or "")
            assert job[0].kind == "dead"
            assert (await api.locate_job(app, later[4] or "")).state == "scheduled"
            await api.DeadSet(app).delete(jids[5] or "")
            assert await api.DeadSet(app).size() == 11
            assert await app.cancel(later[0] or "") == "removed"
            assert await api.ScheduledSet(app).clear() == 8
            release.set()
            w.stop()
        dead = await api.DeadSet(app).entries(limit=100)
        assert len(dead) == 11


async def _dead_is(app: asyncjobs.App, n: int) -> bool:
    return await api.DeadSet(app).size() == n


@pytest.mark.timeout(60)
async def test_cli_worker_and_admin_commands_with_asyncjobs_shards(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ASYNCJOBS_SHARDS`` reaches the App the worker loads and the one the admin
    commands build; the sharded worker process handles SIGTERM for every shard (on one
    server here: the shards are hash tags, whatever the deployment)."""
    app = asyncjobs.App(redis_url, shards=SHARDS)

    @app.job(name="tests.apps.recorder.record")
    async def record(n: int, sleep: float = 0.0) -> None:
        raise AssertionError("runs in the worker subprocess")

    monkeypatch.setenv("ASYNCJOBS_SHARDS", str(SHARDS))  # the subprocesses' environment
    r = aioredis.Redis.from_url(redis_url)
    proc = spawn_worker(redis_url, "-c", "6")
    try:
        async with app:
            await record.defer_many([(n,) for n in range(30)])
            stores = await app.open_stores()
            assert all([await r.llen(s.keys.queue("default")) for s in stores])
            await wait_for(lambda: _llen(r, "test:ran", 30), timeout=20)
            out = await cli(redis_url, "stats", "--json")
            assert json.loads(out.stdout)["processed"] == 30, text(out.stderr)
            proc.send_signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await r.aclose()


async def _llen(r: aioredis.Redis, key: str, n: int) -> bool:
    return int(await r.llen(key)) >= n


@pytest.mark.timeout(60)
async def test_results_cancel_unique_and_pause_across_shards(cluster: RedisCluster) -> None:
    """What has one copy (status, results, the paused set) is on shard 0 whichever
    shard runs the job; a unique job's lock is in its job's shard; a cancel finds the
    shard whose worker runs the job."""
    app = asyncjobs.App(cluster.url, shards=SHARDS, namespace="flowshards")
    hanging = anyio.Event()
    ran: list[int] = []

    @app.job(keep_result=60)
    async def add(a: int, b: int) -> int:
        return a + b

    @app.job(keep_result=60)
    async def hang() -> None:
        hanging.set()
        await anyio.sleep(3600)

    @app.job(unique=asyncjobs.Unique(args=("key",)), queue="paused")
    async def once(key: int, n: int) -> None:
        ran.append(n)

    async with app:
        stores = await app.open_stores()
        # Jids are random: defer until every shard has a job (12 jobs missed one about
        # once in 40 runs), at most 200.
        handles: list[asyncjobs.JobHandle[int] | None] = []
        while len(handles) < 200 and {shard_of(h or "", SHARDS) for h in handles} != {0, 1, 2}:
            handles.append(await add.defer(len(handles), 1))
        assert {shard_of(h or "", SHARDS) for h in handles} == {0, 1, 2}
        await api.pause_queue(app, "paused")
        lock_shards: set[int] = set()
        for key in range(6):
            assert await once.defer(key, key) is not None
            assert await once.defer(key, 100 + key) is None  # its lock is held
            lock = await api.unique_lock(app, once, key, 0)
            assert lock is not None
            shard = shard_of(lock.key.split(":unique:", 1)[1], SHARDS)
            assert lock.key.startswith(stores[shard].keys.prefix + ":")
            lock_shards.add(shard)
        assert len(lock_shards) > 1
        async with running(app.worker(["default", "paused"], concurrency=6)):
            with anyio.fail_after(15):
                assert [await h.result(timeout=10) for h in handles if h] == [
                    n + 1 for n in range(len(handles))
                ]
                stuck = await hang.defer()
                assert stuck is not None
                await hanging.wait()
                assert (await app.status(stuck)).state == "running"
                assert await app.cancel(stuck) == "cancelling"
                with pytest.raises(asyncjobs.JobCancelled):
                    await stuck.result(timeout=5)
            assert not ran  # paused in every shard
            await api.resume_queue(app, "paused")
            await wait_for(lambda: sorted(ran) == list(range(6)), timeout=15)


@pytest.mark.timeout(60)
async def test_hooks_and_periodic_entries_run_once_per_process(redis_url: str) -> None:
    """A sharded worker runs one worker per shard, but the lifecycle hooks and the
    periodic entries once (shard 0's), and a remote quiet reaches every shard."""
    app = asyncjobs.App(redis_url, shards=SHARDS, namespace="hooks")
    calls: Counter[str] = Counter()
    ticks: list[int] = []

    for kind in ("startup", "shutdown", "quiet", "heartbeat", "exit"):

        async def hook(kind: str = kind) -> None:
            calls[kind] += 1

        getattr(app, f"on_{kind}").append(hook)

    @app.periodic("* * * * * *")
    async def every_second() -> None:
        ticks.append(1)

    async with app:
        async with running(app.worker(concurrency=3, heartbeat_interval=0.1)) as w:
            await wait_for(lambda: calls["heartbeat"] >= 1 and len(ticks) >= 2, timeout=10)
            await api.ProcessSet(app).send("quiet", [w.process_id])
            await wait_for(lambda: all(x.quiet for x in [w, *w.others]), timeout=5)  # type: ignore[attr-defined]
        stores = await app.open_stores()
        assert await api.periodic_entries(app)  # declared once, on shard 0
        client = aioredis.Redis.from_url(redis_url)
        try:
            for s in stores[1:]:
                assert not await client.exists(s.keys.queue("default"))  # ticks: shard 0
        finally:
            await client.aclose()
    assert calls == {"startup": 1, "shutdown": 1, "quiet": 1, "heartbeat": 1, "exit": 1}


@pytest.mark.timeout(60)
async def test_metrics_add_up_every_shard(cluster: RedisCluster) -> None:
    app = asyncjobs.App(cluster.url, shards=SHARDS, namespace="measured", metrics=True)
    ran = [0]

    @app.job(name="tick")
    async def tick(n: int) -> None:
        ran[0] += 1

    async with app:
        await tick.defer_many([(n,) for n in range(300)])
        async with running(app.worker(concurrency=12)):
            await wait_for(lambda: ran >= [300], timeout=30)
        # Each shard's workers wrote the metrics of its jobs in its own slot.
        stores = await app.open_stores()
        client = await _client(cluster)
        try:
            written = [await client.exists(s.keys.metrics_total) for s in stores]
        finally:
            await client.aclose()
        assert written == [1] * SHARDS
        metrics = await api.job_metrics(app, hours=1)
        totals = await api.metrics_totals(app)
    assert sum(m.runs for m in metrics.jobs if m.job == "tick") == 300
    assert sum(c.runs for c in totals.counts if c.job == "tick") == 300


@pytest.mark.timeout(60)
async def test_a_batch_on_a_sharded_app_completes_once(cluster: RedisCluster) -> None:
    app = asyncjobs.App(cluster.url, shards=SHARDS, namespace="batched")
    ran = [0]
    callbacks: list[str] = []

    @app.job(name="part")
    async def part(n: int) -> None:
        ran[0] += 1

    @app.job(name="finished")
    async def finished(bid: str) -> None:
        callbacks.append(bid)

    async with app:
        async with app.batch(on_success=finished) as batch:
            await part.defer_many([(n,) for n in range(60)])
            for n in range(60, 90):
                await part.defer(n)
        async with running(app.worker(concurrency=12)):
            await wait_for(lambda: callbacks, timeout=30)
        status = await app.batch_status(batch.bid)
    assert ran == [90]
    assert callbacks == [batch.bid]
    assert (status.total, status.pending, status.failures) == (90, 0, 0)


@pytest.mark.timeout(60)
async def test_removals_by_hand_release_unique_locks_in_every_shard(cluster: RedisCluster) -> None:
    """A clear, a kill-all, a delete and a kill find each unique job in its shard and
    release its lock there (its lock lives in its job's shard)."""
    app = asyncjobs.App(cluster.url, shards=SHARDS, namespace="removeshards")

    @app.job(unique=True)
    async def once(n: int) -> None: ...

    async with app:
        for n in range(12):
            assert await once.defer(n) is not None
            assert await once.configure(delay=3600).defer(100 + n) is not None
        lock_shards = set()
        for n in range(12):
            lock = await api.unique_lock(app, once, n)
            assert lock is not None
            lock_shards.add(shard_of(lock.key.split(":unique:", 1)[1], SHARDS))
        assert len(lock_shards) > 1
        assert await api.clear_queue(app, "default") == 12
        assert await api.ScheduledSet(app).kill_all() == 12
        for n in [*range(12), *range(100, 112)]:
            assert await api.unique_lock(app, once, n) is None
        queued = await once.defer(0)
        killed = await once.configure(delay=3600).defer(1)
        assert queued and killed
        await api.delete_queued(app, "default", queued)
        await api.ScheduledSet(app).kill(killed)
        assert await api.unique_lock(app, once, 0) is None
        assert await api.unique_lock(app, once, 1) is None
        assert await api.DeadSet(app).clear() == 13


async def test_the_index_of_batches_on_a_sharded_app(cluster: RedisCluster) -> None:
    """The index lives with the batches, on shard 0 (its hash tag); api.batches reads
    every shard's index and merges the pages."""
    app = asyncjobs.App(cluster.url, shards=SHARDS, namespace="indexed")

    @app.job(name="piece")
    async def piece(n: int) -> None:
        pass

    client = await _client(cluster)
    try:
        async with app:
            bids = []
            for i in range(5):
                async with app.batch(description=f"s{i}") as batch:
                    await piece.defer(i)
                bids.append(batch.bid)
            tags = shard_tags("indexed", SHARDS)
            assert await client.zcard(f"{{{tags[0]}}}:batches") == 5
            for tag in tags[1:]:
                assert await client.exists(f"{{{tag}}}:batches") == 0
            first = await api.batches(app, limit=3)
            rest = await api.batches(app, limit=3, after=first.next)
            assert [s.bid for s in first.entries + rest.entries] == bids[::-1]
            assert rest.next is None and first.entries[0].total == 1
    finally:
        await client.aclose()
