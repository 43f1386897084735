"""Scenario 4 of issue 5: a poison pill ends in the dead set; its bystanders do not.

``poison`` kills its worker with ``os._exit(1)`` every time it runs. It is enqueued in
the middle of slower healthy jobs, so each crash catches healthy jobs in flight beside
it. The test restarts the worker whenever it dies (as systemd or Kubernetes would).

Asserted: the poison pill goes to the dead set after ``max_recoveries`` = 3 recoveries
(3 crashes), with a reason; healthy jobs caught in the crashes are not dead-lettered
(0 innocent deaths) and all run; the worker then stays up and keeps running jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tests.apps import faulty
from tests.conftest import loads, wait_for
from tests.devserver import RedisProcess
from tests.faults._support import (
    DEAD,
    RETRY,
    Fleet,
    client,
    counts,
    report,
    runs,
    write_config,
)

pytestmark = pytest.mark.faults

MAX_RECOVERIES = 3
BEFORE, AFTER = 5, 25  # healthy jobs enqueued before and after the poison pill
HEALTHY_SLEEP = 0.3


@pytest.mark.timeout(120)
async def test_poison_pill_is_dead_lettered_and_bystanders_are_not(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    t_start = time.monotonic()
    with RedisProcess() as server:
        r = client(server.url)
        faulty.app.redis_url = server.url
        try:
            # Fetched first to last: BEFORE healthy jobs, the pill, AFTER healthy jobs.
            await faulty.record.defer_many([(n, HEALTHY_SLEEP) for n in range(BEFORE)])
            await faulty.poison.defer("pill")
            await faulty.record.defer_many(
                [(n, HEALTHY_SLEEP) for n in range(BEFORE, BEFORE + AFTER)]
            )
            fleet = fleets(
                server.url, write_config(tmp_path, concurrency=10, max_recoveries=MAX_RECOVERIES)
            )
            worker = fleet.start()
            crashed_pids: list[int] = []
            exit_codes: list[int | None] = []

            async def poison_dead() -> bool:
                nonlocal worker
                if not worker.alive():  # the supervisor: restart a dead worker
                    exit_codes.append(worker.popen.returncode)
                    crashed_pids.append(worker.pid)
                    worker = fleet.start()
                return any(
                    loads(m).get("class") == faulty.poison.name for m in await r.zrange(DEAD, 0, -1)
                )

            await wait_for(poison_dead, timeout=60, interval=0.05)

            healthy = set(range(BEFORE + AFTER))

            async def healthy_done() -> bool:
                await poison_dead()  # keep supervising
                dead = {
                    loads(m)["args"].get("n")
                    for m in await r.zrange(DEAD, 0, -1)
                    if loads(m).get("class") == faulty.record.name
                }
                return healthy <= set(counts(await runs(r))) | dead

            try:
                await wait_for(healthy_done, timeout=30, interval=0.05)
            except TimeoutError:
                pass  # the assertions below say what is missing

            # The worker stays up and keeps working.
            await faulty.record.defer_many([(n, 0.0) for n in range(1000, 1010)])

            async def new_jobs_ran() -> bool:
                return set(range(1000, 1010)) <= set(counts(await runs(r)))

            try:
                await wait_for(new_jobs_ran, timeout=15)
            except TimeoutError:
                pass
            await anyio.sleep(0.5)  # time for one more crash, if the worker were to die again
            alive_after = worker.alive()

            dead = [loads(m) for m in await r.zrange(DEAD, 0, -1)]
            pills = [d for d in dead if d.get("class") == faulty.poison.name]
            innocent = [d for d in dead if d.get("class") != faulty.poison.name]
            started, ran = await runs(r, "test:started"), await runs(r)
            ran_n = counts(ran)
            # Healthy runs a crash interrupted: started by a worker that died, not ended by it.
            caught = [
                e.n
                for e in started
                if e.pid in crashed_pids
                and e.n in healthy
                and not any(x.n == e.n and x.pid == e.pid for x in ran)
            ]
            attempts = int(await r.hlen("test:poison"))
            report(
                "scenario4_poison_pill",
                crashes=len(crashed_pids),
                exit_codes=exit_codes,
                poison_runs=attempts,
                poison_dead=len(pills),
                poison_recoveries=[p.get("recoveries") for p in pills],
                healthy_runs_interrupted=len(caught),
                innocent_deaths=len(innocent),
                healthy_not_run=len(healthy - set(ran_n)),
                healthy_run_twice=sum(1 for n in healthy if ran_n[n] > 1),
                retries=await r.zcard(RETRY),
                runtime_s=round(time.monotonic() - t_start, 1),
            )
            assert len(pills) == 1, "the poison pill is in the dead set, once"
            [pill] = pills
            assert pill["recoveries"] == MAX_RECOVERIES
            assert pill.get("error_class") and pill.get("error_message"), "a reason"
            assert len(crashed_pids) == attempts == MAX_RECOVERIES, (crashed_pids, attempts)
            assert exit_codes == [1] * MAX_RECOVERIES
            assert caught, "the crashes should have caught healthy jobs in flight"
            assert not innocent, (
                f"{len(innocent)} healthy jobs dead-lettered: "
                f"{[(d['args'], d.get('recoveries'), d.get('error_class')) for d in innocent]}"
            )
            assert healthy <= set(ran_n), f"healthy jobs never ran: {healthy - set(ran_n)}"
            assert set(range(1000, 1010)) <= set(ran_n), "the worker stopped running jobs"
            assert alive_after
            assert await r.zcard(RETRY) == 0
        finally:
            await faulty.app.aclose()
            await r.aclose()
