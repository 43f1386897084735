"""A graceful stop (SIGTERM) runs nothing twice.

On SIGTERM a worker stops fetching, lets its running jobs finish (up to ``timeout``),
writes their outcomes and only then puts back what is still in its in-flight hash.
A job that finished during that wait must be acknowledged, not put back: put back, it
would run a second time although nothing went wrong (issue 5, scenario 1: "a graceful
restart: 0 lost and 0 run twice").

Two edges are pinned down here: SIGTERM arrives while a worker's first jobs run, so
their acknowledgements are the first thing its acker sends, when they finish, during the
shutdown wait; and SIGTERM arrives while a job recovered from a dead worker (a poison
pill suspect, run alone) waits for the running jobs to finish: it must not be started
once the worker is stopping, only put back.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from tests.apps import faulty
from tests.conftest import wait_for
from tests.devserver import RedisProcess
from tests.faults._support import (
    QUEUE,
    Fleet,
    anything_in_flight,
    client,
    counts,
    report,
    runs,
    write_config,
)

pytestmark = pytest.mark.faults

JOBS = 10
SLEEP = 0.5


@pytest.mark.timeout(60)
@pytest.mark.parametrize("when", ["first jobs", "later jobs"])
async def test_sigterm_acknowledges_jobs_that_finish_during_the_drain(
    when: str, tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    t_start = time.monotonic()
    with RedisProcess() as server:
        r = client(server.url)
        faulty.app.redis_url = server.url
        try:
            fleet = fleets(server.url, write_config(tmp_path, concurrency=JOBS, timeout=10.0))
            worker = fleet.start()
            await wait_for(lambda: worker.registered(r), timeout=20)
            if when == "later jobs":  # the acker has written before: its connection is up
                await faulty.record.defer(-1, 0.0)
                await wait_for(lambda: _ran(r, {-1}), timeout=10)
            await faulty.record.defer_many([(n, SLEEP) for n in range(JOBS)])

            async def all_started() -> bool:
                return len(set(counts(await runs(r, "test:started"))) - {-1}) >= JOBS

            await wait_for(all_started, timeout=10)
            worker.signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(worker.popen.wait, 15)
            ran = counts(await runs(r))
            requeued = int(await r.llen(QUEUE))
            processed = int(await r.get("{asyncjobs}:stat:processed") or 0)
            left = await anything_in_flight(r)
            report(
                f"graceful_{when.replace(' ', '_')}",
                finished=sum(1 for n in range(JOBS) if ran[n]),
                put_back_after_finishing=requeued,
                processed_counter=processed,
                worker_exit=code,
                runtime_s=round(time.monotonic() - t_start, 1),
            )
            assert code == 0, worker.output()[-3000:]
            assert all(ran[n] == 1 for n in range(JOBS)), "each job finished, once"
            assert requeued == 0, (
                f"{requeued} jobs that finished during the shutdown wait were put back in "
                f"the queue, to run again: {worker.output()[-1500:]}"
            )
            assert processed == JOBS + (when == "later jobs")
            assert not left
        finally:
            await faulty.app.aclose()
            await r.aclose()


async def _ran(r: aioredis.Redis, ns: set[int]) -> bool:
    return ns <= set(counts(await runs(r)))


@pytest.mark.timeout(60)
async def test_sigterm_starts_no_held_suspect(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    with RedisProcess() as server:
        r = client(server.url)
        faulty.app.redis_url = server.url
        try:
            # Three ordinary jobs, then one recovered from a dead worker (recoveries: 1),
            # all fetched in one batch: the suspect waits until the others are done.
            await faulty.record.defer_many([(n, SLEEP) for n in range(3)])
            suspect = {
                "jid": "suspect-1",
                "class": faulty.record.name,
                "queue": "default",
                "args": {"n": 100, "sleep": 0.05},
                "created_at": time.time(),
                "retry": 0,
                "recoveries": 1,
            }
            await r.lpush(QUEUE, json.dumps(suspect, separators=(",", ":")))
            worker = fleets(server.url, write_config(tmp_path, timeout=10.0)).start()

            async def ordinary_started() -> bool:
                return {0, 1, 2} <= set(counts(await runs(r, "test:started")))

            await wait_for(ordinary_started, timeout=20)
            stopped_at = time.time()
            worker.signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(worker.popen.wait, 15)
            started = await runs(r, "test:started")
            late = sorted(e.n for e in started if e.ts > stopped_at)
            unfinished = set(counts(started)) - set(counts(await runs(r)))
            queued = [json.loads(x)["jid"] for x in await r.lrange(QUEUE, 0, -1)]
            report(
                "graceful_held_suspect",
                started_after_sigterm=late,
                started_not_finished=sorted(unfinished),
                back_in_queue=queued,
                worker_exit=code,
            )
            assert code == 0, worker.output()[-3000:]
            assert not late, f"jobs started after SIGTERM: {late}"
            assert not unfinished, f"jobs started and then cancelled by the stop: {unfinished}"
            assert queued == ["suspect-1"], "the suspect is put back, unstarted"
        finally:
            await faulty.app.aclose()
            await r.aclose()
