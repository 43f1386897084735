"""The outbox relay on a local 3-master Redis Cluster: outbox.lua's keys (the marks
too) carry the namespace's hash tag, so the move and the marks' UNLINK run there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import asyncjobs
from asyncjobs._store import OutboxRow
from asyncjobs.outbox import Outbox
from tests.conftest import wait_for
from tests.servers import RedisCluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as c:
        yield c


async def test_outbox_relay_on_cluster(cluster: RedisCluster, tmp_path: Path) -> None:
    app = asyncjobs.App(cluster.url, namespace="outbox")
    ran: list[int] = []

    @app.job(name="clustered")
    async def clustered(n: int) -> None:
        ran.append(n)

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.sqlite'}")
    outbox = Outbox(app)
    try:
        await outbox.create_table(engine)
        async with AsyncSession(engine) as session, session.begin():
            for n in range(20):
                await outbox.defer(session, clustered, n)
            await outbox.defer(session, clustered.configure(delay=0.3, queue="later"), 20)
        # A move whose commit never happened: the relay must skip these rows.
        t = outbox.table
        async with engine.connect() as conn:
            first = [
                OutboxRow(r.id, r.jid, r.queue, r.at, bytes(r.payload))
                for r in await conn.execute(sa.select(t).order_by(t.c.id).limit(5))
            ]
        store = await app.open_store()
        assert await store.outbox_move(first, 60) == 5
        relay = outbox.relay_in_worker(engine, poll=0.05)
        async with app.run_worker(queues=["default", "later"], scheduler_poll=0.2):
            await wait_for(lambda: len(ran) == 21, timeout=15)
        assert sorted(ran) == list(range(21))
        assert (relay.moved, relay.skipped) == (16, 5)
        assert await outbox.pending(engine) == 0
        client = await app.connect()
        assert [k async for k in client.scan_iter(match="{outbox}:outbox:*")] == []
    finally:
        await engine.dispose()
        await app.aclose()
