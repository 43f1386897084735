"""The enqueue-and-run scenario on a local 3-master Redis Cluster: every script stays on
the namespace's hash slot."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from redis.asyncio.cluster import RedisCluster as AsyncCluster

import asyncjobs
from asyncjobs import api
from tests.conftest import wait_for
from tests.servers import RedisCluster

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as c:
        yield c


async def test_enqueue_and_run_on_cluster(cluster: RedisCluster) -> None:
    app = asyncjobs.App(cluster.url)
    ran: list[int] = []

    @app.job
    async def work(n: int) -> None:
        ran.append(n)

    @app.job(retry=0)
    async def fails() -> None:
        raise RuntimeError("no")

    async with app:
        client = await app.connect()
        assert isinstance(client, AsyncCluster)
        await work.defer(0)
        await work.defer_many([(i,) for i in range(1, 300)])
        await work.configure(delay=0.2).defer(300)
        await work.configure(queue="other").defer(301)
        await fails.defer()
        worker = app.worker(queues=["default", "other"], concurrency=20)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: len(ran) == 302, timeout=10)
            await wait_for(lambda: client.zcard(app.keys.dead), timeout=5)
            await worker.wait_idle()
            worker.stop()
        assert sorted(ran) == list(range(302))
        assert await client.get(app.keys.stat_processed) == b"303"


async def test_unique_jobs_and_pause_on_cluster(cluster: RedisCluster) -> None:
    """#13: the lock key carries the namespace's hash tag, so push_unique.lua, unlock.lua
    and lock.lua run on a cluster; the paused set is read with the heartbeat there too."""
    app = asyncjobs.App(cluster.url, namespace="flow")
    ran: list[int] = []

    @app.job(unique=asyncjobs.Unique(on_conflict="replace", args=("key",)))
    async def debounced(key: int, n: int) -> None:
        ran.append(n)

    @app.job(unique=asyncjobs.Unique(until="executing"), queue="paused")
    async def exclusive(n: int) -> None:
        ran.append(n)

    async with app:
        client = await app.connect()
        await client.delete(app.keys.paused)
        for n in range(3):
            await debounced.configure(delay=0.2).defer(1, n)
        assert await debounced.defer_many([(2, 10), (2, 11)]) != [None, None]
        with pytest.raises(asyncjobs.UniqueConflict):
            await debounced.configure(
                unique=asyncjobs.Unique(on_conflict="raise", args=("key",))
            ).defer(2, 12)
        await api.pause_queue(app, "paused")
        await exclusive.defer(100)
        worker = app.worker(queues=["default", "paused"], heartbeat_interval=0.1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: sorted(ran) == [2, 11], timeout=10)
            assert await client.llen(app.keys.queue("paused")) == 1
            await api.resume_queue(app, "paused")
            await wait_for(lambda: sorted(ran) == [2, 11, 100], timeout=10)
            await wait_for(lambda: _no_keys(client, f"{app.keys.prefix}:unique:*"), timeout=5)
            worker.stop()


async def _no_keys(client: object, pattern: str) -> bool:
    assert isinstance(client, AsyncCluster)
    return not await client.keys(pattern, target_nodes=AsyncCluster.ALL_NODES)


async def test_stats_and_paging_on_cluster(cluster: RedisCluster) -> None:
    """The stats pipelines and cursor paging of the API (#11) stay on the slot."""
    from asyncjobs import api

    app = asyncjobs.App(cluster.url)

    @app.job(retry=0)
    async def later() -> None:
        pass

    async with app:
        for _ in range(3):
            await later.configure(delay=3600).defer()
        stats = await api.Stats.fetch(app, days=3)
        assert stats.scheduled == 3 and stats.default_queue_latency == 0.0
        await api.reset_stats(app)
        first = await api.ScheduledSet(app).page(limit=2)
        rest = await api.ScheduledSet(app).page(after=first.next, limit=2)
        assert len(first.entries) == 2 and len(rest.entries) == 1


async def test_the_index_of_batches_on_cluster(cluster: RedisCluster) -> None:
    """batch.lua's index and the listing's pipelines (hash, failed set) stay on the
    namespace's slot; pruning an expired entry works there too."""
    from asyncjobs import api

    app = asyncjobs.App(cluster.url, namespace="bix")

    @app.job
    async def member() -> None:
        pass

    client = AsyncCluster.from_url(cluster.url)
    try:
        async with app:
            bids = []
            for i in range(4):
                async with app.batch(description=f"c{i}") as batch:
                    await member.defer()
                bids.append(batch.bid)
            async with app.batch(bid=bids[0]):  # reopened: not indexed twice
                await member.defer()
            first = await api.batches(app, limit=2)
            rest = await api.batches(app, limit=2, after=first.next)
            assert [s.bid for s in first.entries + rest.entries] == bids[::-1]
            await client.delete(f"{{bix}}:batch:{bids[1]}")
            left = await api.batches(app)
            assert [s.bid for s in left.entries] == [bids[3], bids[2], bids[0]]
            assert left.entries[-1].total == 2
            assert await client.zcard("{bix}:batches") == 3
    finally:
        await client.aclose()


async def test_results_status_and_cancel_on_cluster(cluster: RedisCluster) -> None:
    """#14: result.lua, the status reads (a pipeline there, not MGET), the result wait
    (BLMOVE) and the cancel channel (BRPOP on the cluster client) on a cluster."""
    app = asyncjobs.App(cluster.url, namespace="status")
    started = anyio.Event()

    @app.job(keep_result=60, name="cluster.add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.job(keep_result=60, name="cluster.hang")
    async def hang() -> None:
        started.set()
        await anyio.sleep(3600)

    async with app:
        handle = await add.defer(2, 3)
        assert handle is not None
        assert (await app.status(handle)).state == "queued"
        worker = app.worker(concurrency=5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(10):
                assert await handle.result(timeout=10) == 5
                stuck = await hang.defer()
                assert stuck is not None
                await started.wait()
                assert await app.cancel(stuck) == "cancelling"
                with pytest.raises(asyncjobs.JobCancelled):
                    await stuck.result(timeout=5)
            worker.stop()
        assert (await app.status(handle)).state == "succeeded"


async def test_rate_limiters_on_cluster(cluster: RedisCluster) -> None:
    """#13: the limiters' keys carry the hash tag; each kind's script and the state read
    run on a cluster, and a job over its limit goes back to the schedule (ack.lua)."""
    app = asyncjobs.App(cluster.url, namespace="limits")
    ran: list[int] = []
    one = app.limiter("one", "concurrent", 1, reschedules=1000, max_backoff=0.2)

    @app.job(limits=[one])
    async def gated(n: int) -> None:
        await anyio.sleep(0.05)
        ran.append(n)

    async with app:
        for kind in ("concurrent", "window", "bucket", "leaky", "points"):
            lim = app.limiter(f"c-{kind}", kind, 2, per=3600)
            async with lim(key="k"):
                assert round((await api.limiter_state(app, f"c-{kind}", key="k")).used) == 1
        async with app.limiter("c-sliding", "window", 2, sliding=True):
            assert (await api.limiter_state(app, "c-sliding")).used == 1
        await gated.defer_many([(n,) for n in range(4)])
        worker = app.worker(concurrency=4, scheduler_poll=0.1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: len(ran) == 4, timeout=15)
            worker.stop()


@pytest.mark.timeout(60)
async def test_iterable_job_on_cluster(cluster: RedisCluster) -> None:
    """#14: the state key carries the namespace's hash tag (iteration.lua, HGETALL and
    DEL run on a cluster); a job quieted midway resumes after its saved cursor."""
    from collections.abc import AsyncIterator

    from asyncjobs.iteration import from_range

    app = asyncjobs.App(cluster.url, namespace="iter")
    done: list[int] = []
    reached = anyio.Event()
    go_on = anyio.Event()

    @app.iterable_job(name="walk", save_every=7)
    async def walk(it: asyncjobs.Iteration[int]) -> AsyncIterator[int]:
        async for n, cursor in from_range(0, 40, cursor=it.cursor):
            if n == 20 and not it.resumed:
                reached.set()
                await go_on.wait()
            done.append(n)
            yield cursor

    async with app:
        client = await app.connect()
        assert isinstance(client, AsyncCluster)
        jid = await walk.defer()
        assert jid is not None
        key = app.keys.iteration(jid)
        worker = app.worker()
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(10):
                await reached.wait()
            assert await client.hget(key, "cursor") == b"13"  # saved after 7 and 14 items
            worker.quiet_down()
            go_on.set()
            await wait_for(lambda: client.llen(app.keys.queue("default")), timeout=10)
            assert await client.hget(key, "cursor") == b"20"
            worker.stop()
        async with app.run_worker():
            await wait_for(lambda: len(done) == 40, timeout=10)
        assert done == list(range(40))
        await wait_for(lambda: _gone(client, key))


async def _gone(client: AsyncCluster, key: str) -> bool:
    return not await client.exists(key)


async def test_metrics_and_prometheus_on_cluster(cluster: RedisCluster) -> None:
    """#12: the metrics keys carry the namespace's hash tag, so done.lua and ack.lua
    write them on a cluster; the api and the Prometheus exposition read them there."""
    from prometheus_client.parser import text_string_to_metric_families

    from asyncjobs.prometheus import render

    app = asyncjobs.App(cluster.url, namespace="metered", metrics=True)
    ran: list[int] = []

    @app.job(name="work")
    async def work(n: int) -> None:
        ran.append(n)

    @app.job(name="fails", retry=0)
    async def fails() -> None:
        raise RuntimeError("no")

    async with app:
        await work.defer_many([(i,) for i in range(50)])
        await fails.defer()
        async with app.run_worker(concurrency=10):
            await wait_for(lambda: len(ran) == 50, timeout=10)

            async def all_counted() -> bool:
                return sum(j.runs for j in (await api.job_metrics(app, 1)).jobs) == 51

            await wait_for(all_counted, timeout=10)
        totals = await api.metrics_totals(app)
        counts = {(c.queue, c.job): (c.runs, c.dead) for c in totals.counts}
        assert counts == {("default", "work"): (50, 0), ("default", "fails"): (1, 1)}
        families = {f.name: f for f in text_string_to_metric_families((await render(app)).decode())}
        samples = {
            tuple(sorted(s.labels.items())): s.value
            for s in families["asyncjobs_jobs_processed"].samples
            if s.name.endswith("_total")
        }
        assert samples[(("job", "work"), ("queue", "default"))] == 50


async def test_batches_on_cluster(cluster: RedisCluster) -> None:
    """#14: batch.lua (declared key: the batch hash), and ack.lua's batch block, whose
    batch keys are built from the namespace prefix: one hash slot, so they run there."""
    app = asyncjobs.App(cluster.url, namespace="batches")
    events: list[str] = []

    @app.job
    async def item(n: int, fail: bool = False) -> None:
        if fail:
            raise RuntimeError("no")

    @app.job
    async def noted(bid: str, event: str) -> None:
        events.append(event)

    async with app:
        async with app.batch(
            on_complete=noted.s(event="complete"), on_death=noted.s(event="death")
        ) as batch:
            await item.defer_many([(i,) for i in range(50)])
            await item.configure(retry=0).defer(50, fail=True)
        worker = app.worker(concurrency=10)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: len(events) == 2, timeout=10)
            await worker.wait_idle()
            worker.stop()
        status = await app.batch_status(batch.bid)
        assert sorted(events) == ["complete", "death"]
        assert (status.total, status.pending, status.failures) == (51, 1, 1)


async def test_a_chain_step_run_again_on_cluster(cluster: RedisCluster) -> None:
    """A chain's step job delivered again finds the next step's batch (bid derived from
    its own batch's, under the namespace's hash tag: the same slot) closed, and defers
    nothing: every step runs once."""
    app = asyncjobs.App(cluster.url, namespace="chains")
    ran: list[str] = []

    @app.job
    async def step(name: str) -> None:
        ran.append(name)

    async with app:
        bid = await app.chain(step.s("a"), [step.s("b1"), step.s("b2")], step.s("c"))
        store = await app.open_store()
        worker = app.worker(concurrency=4)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: len(ran) == 4, timeout=10)
            await wait_for(lambda: worker.statistics()["processed"] == 6, timeout=10)
            # The step job that deferred step 2, as the script pushed it: again.
            again = await store.client.hget(store.batch_key(bid), "cb:success")
            assert isinstance(again, bytes)
            await store.push("default", again)
            await wait_for(lambda: worker.statistics()["processed"] >= 7, timeout=10)
            await worker.wait_idle()
            # It deferred nothing: no queue holds a job (pushed before its ack, if any).
            assert await store.client.llen(store.keys.queue("default")) == 0
            worker.stop()
        assert sorted(ran) == ["a", "b1", "b2", "c"]


async def test_durable_enqueue_is_refused_on_a_cluster(cluster: RedisCluster) -> None:
    app = asyncjobs.App(cluster.url, min_replicas=1)
    try:
        with pytest.raises(asyncjobs.ConfigError, match="min_replicas.*single master") as info:
            await app.connect()
        assert "\n" not in str(info.value)
    finally:
        await app.aclose()


async def test_removals_by_hand_release_unique_locks_on_cluster(cluster: RedisCluster) -> None:
    """clear.lua's RENAME and drain.lua stay on the namespace's slot, and the locks of
    removed unique jobs are released there (unlock.lua, one call each on a cluster)."""
    app = asyncjobs.App(cluster.url, namespace="removals")

    @app.job
    async def plain(n: int) -> None: ...

    @app.job(unique=True)
    async def once(n: int) -> None: ...

    async with app:
        client = await app.connect()
        await plain.defer_many([(n,) for n in range(1500)])
        for n in range(3):
            assert await once.defer(n) is not None
            assert await once.configure(delay=3600).defer(10 + n) is not None
        assert await api.clear_queue(app, "default") == 1503
        assert await api.ScheduledSet(app).clear() == 3
        for pattern in ("unique:*", "clearing:*", "queue:*", "schedule"):
            assert await _no_keys(client, "{removals}:" + pattern)
        queued = await once.defer(0)
        killed = await once.configure(delay=3600).defer(1)
        deleted = await once.configure(delay=3600).defer(2)
        assert queued and killed and deleted
        await api.delete_queued(app, "default", queued)
        await api.ScheduledSet(app).kill(killed)
        await api.ScheduledSet(app).delete(deleted)
        assert [await api.unique_lock(app, once, n) for n in range(3)] == [None] * 3
        assert await once.defer(0) is not None
