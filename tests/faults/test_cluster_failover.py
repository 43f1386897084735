"""A Redis Cluster failover under load: the master that holds the namespace's slot is
SIGKILLed, its replica takes over, and the clients and the worker carry on.

Six nodes (three masters, one replica each), ``cluster-node-timeout`` 1000 ms. A
producer defers jobs all along; every defer that returned (an accepted job) must run at
least once. Runs twice over are counted and printed (at-least-once: a job whose
acknowledgement the dead master took but had not yet passed to its replica runs again).
The worker's and one client's URL name only the node that dies (they found the others
at connect); another client's and a second worker's URL name it first among several
seeds, and they connect after it died.
"""

from __future__ import annotations

import time
from collections import Counter

import anyio
import pytest

import asyncjobs
from asyncjobs import RedisUnavailable
from tests.conftest import running, wait_for
from tests.servers import RedisCluster

pytestmark = pytest.mark.faults


def _replica_of(cluster: RedisCluster, master_port: int) -> int:
    table = cluster.nodes_table()
    master_id = next(r["id"] for r in table if int(r["port"]) == master_port)
    return next(int(r["port"]) for r in table if r["master"] == master_id)


@pytest.mark.timeout(90)
async def test_clients_and_workers_carry_on_when_the_namespace_master_dies() -> None:
    with RedisCluster(replicas=1, node_timeout=1000) as cluster:
        slot = cluster.keyslot("{asyncjobs}")
        victim = cluster.master_of_slot(slot)
        assert victim is not None
        replica = _replica_of(cluster, victim)
        others = [p for p in cluster.ports if p != victim]
        only_victim = f"redis://127.0.0.1:{victim}"
        seeds = cluster.seeds_url(victim, *others)  # the dead node first

        worker_app = asyncjobs.App(only_victim)
        producer_app = asyncjobs.App(only_victim)
        late_app = asyncjobs.App(seeds)
        late_worker_app = asyncjobs.App(only_victim, cluster_nodes=[f"127.0.0.1:{others[0]}"])
        ran: Counter[int] = Counter()
        accepted: set[int] = set()
        refused = 0
        stop_producing = anyio.Event()

        for app in (worker_app, producer_app, late_app, late_worker_app):

            @app.job(name="work")
            async def work(n: int) -> None:
                await anyio.sleep(0.01)
                ran[n] += 1

        produce = producer_app.jobs["work"]

        async def producer() -> None:
            nonlocal refused
            n = 0
            while not stop_producing.is_set():
                try:
                    await produce.defer(n)
                    accepted.add(n)
                except RedisUnavailable:
                    refused += 1  # not accepted: the caller knows, and may defer again
                    await anyio.sleep(0.05)
                n += 1
                await anyio.sleep(0.005)

        try:
            async with (
                running(worker_app.worker(concurrency=5, heartbeat_interval=0.5)),
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(producer)
                await wait_for(lambda: len(ran) >= 50, timeout=15)
                cluster.node(victim).kill()
                killed = time.monotonic()
                await wait_for(lambda: cluster.master_of_slot(slot, replica) == replica, 20)
                failover = time.monotonic() - killed

                # A client and a worker that start now, their URL naming the dead node.
                async with late_app:
                    late = late_app.jobs["work"]
                    for n in range(1_000_000, 1_000_020):
                        await late.defer(n)
                        accepted.add(n)
                async with running(late_worker_app.worker(concurrency=5)):
                    mark = len(accepted)  # the producer goes on through the new master
                    await wait_for(lambda: len(accepted) >= mark + 100, timeout=20)
                    stop_producing.set()
                    await wait_for(lambda: accepted <= set(ran), timeout=30)
            recovered = time.monotonic() - killed
        finally:
            stop_producing.set()
            for app in (worker_app, producer_app, late_app, late_worker_app):
                await app.aclose()

        twice = {n: c for n, c in ran.items() if c > 1}
        print(  # noqa: T201
            f"failover took {failover:.1f}s, all done {recovered:.1f}s after the kill; "
            f"{len(accepted)} accepted, {refused} refused during the failover, "
            f"{len(twice)} ran more than once: {sorted(twice)[:20]}"
        )
        assert accepted <= set(ran)
