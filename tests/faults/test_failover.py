"""A failover: the worker's Redis master is demoted to a replica, then made master again.

A demoted master answers writes with ``READONLY`` (and unblocks blocked clients with
``UNBLOCKED``). The worker must take that as a passing condition of the server at its
URL: reset its connections, back off and carry on, and finish the jobs once a master
answers there again.
"""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from tests.conftest import running, wait_for
from tests.devserver import RedisProcess

pytestmark = pytest.mark.faults

JOBS = 40


async def _link_up(replica: aioredis.Redis) -> bool:
    info = await replica.info("replication")
    return info.get("master_link_status") == "up"


@pytest.mark.timeout(60)
async def test_worker_rides_out_its_master_demoted_to_replica_and_back() -> None:
    with RedisProcess() as m, RedisProcess() as s:
        rm = aioredis.Redis.from_url(m.url)
        rs = aioredis.Redis.from_url(s.url)
        app = asyncjobs.App(m.url)
        ran: list[int] = []

        @app.job
        async def work(n: int) -> None:
            await anyio.sleep(0.05)
            ran.append(n)

        try:
            await rs.replicaof("127.0.0.1", m.port)
            await wait_for(lambda: _link_up(rs), timeout=10)
            await work.defer_many([(n,) for n in range(JOBS)])
            async with running(app.worker(concurrency=2, heartbeat_interval=0.2)) as w:
                await wait_for(lambda: len(ran) >= 4)
                # The failover: the replica is promoted, the old master follows it.
                await rs.replicaof("NO", "ONE")
                await rm.replicaof("127.0.0.1", s.port)
                await wait_for(lambda: _link_up(rm), timeout=10)
                demoted = len(ran)
                await anyio.sleep(1.5)  # every loop meets READONLY meanwhile
                await rm.replicaof("NO", "ONE")  # a master answers at the URL again
                await wait_for(lambda: set(ran) == set(range(JOBS)), timeout=20)
                await w.wait_idle()
                assert not await rm.hlen(app.keys.inflight(w.process_id))
                assert not await rm.llen(app.keys.queue("default"))
                assert len(ran) - demoted > 0
        finally:
            await app.aclose()
            await rm.aclose()
            await rs.aclose()
