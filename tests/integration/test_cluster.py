"""The enqueue-and-run scenario on a local 3-master Redis Cluster: every script stays on
the namespace's hash slot."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from redis.asyncio.cluster import RedisCluster as AsyncCluster

import asyncjobs
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
