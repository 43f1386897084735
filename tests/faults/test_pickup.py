"""Jobs an idle worker picks up run once, counted once.

An idle worker waits for work (in a blocking Redis call) and takes a job the moment it
is deferred. That path must be as exact as the batch fetch: the job runs once, its
acknowledgement removes it from the worker's in-flight record and counts it, and
nothing is left in flight. The first jobs of a fresh worker are the edge: the
connection its acknowledgements use is not open yet.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tests.apps import faulty
from tests.conftest import wait_for
from tests.devserver import RedisProcess
from tests.faults._support import Fleet, client, counts, held, report, runs, write_config

pytestmark = pytest.mark.faults

JOBS = 20


@pytest.mark.timeout(60)
@pytest.mark.parametrize("gap", [None, 0.005])
async def test_jobs_picked_up_by_an_idle_worker_run_once(
    gap: float | None, tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    """``gap`` None: each job deferred once the last one is done; else deferred every
    ``gap`` seconds, as a steady producer does."""
    with RedisProcess() as server:
        r = client(server.url)
        faulty.app.redis_url = server.url
        try:
            worker = fleets(server.url, write_config(tmp_path)).start()
            await wait_for(lambda: worker.registered(r), timeout=20)
            pid = worker.process_id
            assert pid is not None
            for n in range(JOBS):
                await faulty.record.defer(n, 0.005)
                if gap is None:

                    async def done(n: int = n) -> bool:
                        return n in counts(await runs(r)) and not await held(r, pid)

                    await wait_for(done, timeout=10)
                else:
                    await anyio.sleep(gap)

            async def all_done() -> bool:
                return set(range(JOBS)) <= set(counts(await runs(r))) and not await held(r, pid)

            await wait_for(all_done, timeout=10)
            ran = counts(await runs(r))
            processed = int(await r.get("{asyncjobs}:stat:processed") or 0)
            worker.signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(worker.popen.wait, 15)
            report(
                f"idle_pickup_gap_{gap}",
                runs={n: ran[n] for n in range(JOBS)},
                processed_counter=processed,
                worker_exit=code,
            )
            assert all(ran[n] == 1 for n in range(JOBS)), f"runs per job: {dict(ran)}"
            assert processed == JOBS, f"processed counter {processed} for {JOBS} jobs"
            assert code == 0
        finally:
            await faulty.app.aclose()
            await r.aclose()
