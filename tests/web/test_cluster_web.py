"""Every page of the dashboard on a local 3-master Redis Cluster."""

from __future__ import annotations

import httpx
import pytest

import asyncjobs
from asyncjobs import api
from asyncjobs.web import create_app
from tests.servers import RedisCluster

pytestmark = pytest.mark.cluster


async def test_every_page_on_cluster() -> None:
    with RedisCluster() as cluster:
        app = asyncjobs.App(cluster.url)

        @app.job
        async def later(n: int) -> None: ...

        async with app:
            jid = await later.defer(1)
            dead = await later.configure(delay=3600).defer(2)
            assert jid and dead
            await api.ScheduledSet(app).kill(dead, notify=False)
            async with app.batch(description="on a cluster") as batch:
                await later.defer(3)
            web = create_app(app, auth=None)
            transport = httpx.ASGITransport(app=web)
            async with httpx.AsyncClient(transport=transport, base_url="http://d") as c:
                for path in (
                    "/",
                    "/stats.json",
                    "/busy",
                    "/queues",
                    "/queues/default",
                    "/scheduled",
                    "/retries",
                    "/dead",
                    "/periodic",
                    f"/job/{jid}",
                    f"/job/{dead}",
                    "/batches",
                    f"/batches/{batch.bid}",
                ):
                    r = await c.get(path)
                    assert r.status_code == 200, (path, r.text)
                assert batch.bid in (await c.get("/batches")).text
                assert "Version" in (await c.get("/")).text
