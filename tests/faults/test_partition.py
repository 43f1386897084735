"""Scenario 3 of issue 5: a silent partition between a worker and Redis, then
connection resets.

The worker subprocess (and the jobs it runs) reach Redis only through a TCP proxy
(tests/proxy.py); the producer and the test talk to Redis directly. Under a steady flow
of jobs the proxy goes silent for ``PARTITION`` seconds (connections stay open, no byte
moves: what a dead switch or a dropped VPN looks like), then heals, then resets every
connection a few times.

Asserted: the worker process survives; it uses little CPU while cut off; it starts jobs
again within 5 s of the heal; every accepted job runs; nothing is left in its in-flight
hash once it is idle; it exits 0 on SIGTERM.
"""

from __future__ import annotations

import gc
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tests.apps import faulty
from tests.conftest import wait_for
from tests.devserver import RedisProcess
from tests.faults._support import (
    Fleet,
    Producer,
    client,
    counts,
    held,
    report,
    runs,
    where_are,
    write_config,
)
from tests.proxy import ThreadedTcpProxy

pytestmark = pytest.mark.faults

PARTITION = 30.0  # seconds the proxy stays silent (the figure)
RESUME_BOUND = 5.0
CPU_BOUND = 0.10  # fraction of one core the worker may use while cut off
RESETS = 5


@pytest.mark.timeout(150)
@pytest.mark.filterwarnings("ignore:unclosed Connection:ResourceWarning")
async def test_silent_partition_then_resets(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    t_start = time.monotonic()
    with RedisProcess() as server, ThreadedTcpProxy("127.0.0.1", server.port) as proxy:
        r = client(server.url)
        faulty.app.redis_url = server.url
        try:
            fleet = fleets(server.url, write_config(tmp_path))
            worker = fleet.start(url=proxy.url)
            await wait_for(lambda: worker.registered(r), timeout=20)
            assert worker.process_id is not None
            producer = Producer(job_sleep=0.02, pause=0.01)  # ~80 jobs/s
            async with anyio.create_task_group() as tg:
                tg.start_soon(producer.run)
                await wait_for(lambda: len(producer.accepted) >= 200, timeout=30)

                cpu0, t0 = worker.cpu(), time.monotonic()
                proxy.cut()
                await anyio.sleep(PARTITION)
                cpu1, t1 = worker.cpu(), time.monotonic()
                alive_while_cut = worker.alive()
                proxy.heal()
                healed = time.time()

                async def started_since_heal() -> bool:
                    return any(e.ts >= healed for e in await runs(r, "test:started"))

                try:
                    await wait_for(started_since_heal, timeout=30, interval=0.02)
                except TimeoutError:
                    resume = float("inf")
                else:
                    started = await runs(r, "test:started")
                    resume = min(e.ts for e in started if e.ts >= healed) - healed

                reset = 0
                for _ in range(RESETS):
                    await anyio.sleep(0.5)
                    reset += proxy.reset()
                await anyio.sleep(1.0)
                producer.stop = True

            accepted = set(producer.accepted)

            async def all_ran() -> bool:
                return accepted <= set(counts(await runs(r))) or not worker.alive()

            async def idle() -> bool:
                return not await held(r, str(worker.process_id))

            try:
                await wait_for(all_ran, timeout=30, interval=0.1)
                await wait_for(idle, timeout=5)
            except TimeoutError:
                pass  # the assertions below say what is missing
            ran = counts(await runs(r))
            lost = accepted - set(ran)
            lost_where = await where_are(r, lost) if lost else {}
            stuck = await held(r, worker.process_id)
            alive = worker.alive()
            worker.signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(worker.popen.wait, 15)
            report(
                "scenario3_partition",
                partition_s=round(t1 - t0, 1),
                cpu_s_while_cut=round(cpu1 - cpu0, 3),
                cpu_share_while_cut=round((cpu1 - cpu0) / (t1 - t0), 4),
                resume_s=round(resume, 3),
                connections_reset=reset,
                accepted=len(accepted),
                not_run=len(lost),
                not_run_where=lost_where,
                stuck_in_flight=stuck,
                duplicated=sum(1 for c in ran.values() if c > 1),
                worker_exit=code,
                runtime_s=round(time.monotonic() - t_start, 1),
            )
            assert alive_while_cut and alive, f"worker died:\n{worker.output()[-3000:]}"
            assert (cpu1 - cpu0) / (t1 - t0) <= CPU_BOUND, "busy while cut off"
            assert resume <= RESUME_BOUND, f"resumed {resume:.2f}s after the heal"
            assert not lost, f"{len(lost)} accepted jobs never ran, at {lost_where}"
            assert stuck == 0, f"{stuck} jobs stuck in the idle worker's in-flight hash"
            assert code == 0
        finally:
            await faulty.app.aclose()
            await r.aclose()
            gc.collect()
