"""Scenario 1 of issue 5: workers SIGKILLed at random moments lose nothing.

10,000 jobs run on three worker subprocesses. At 21 random points of the run (drawn in
"jobs finished so far", so every fault lands mid-run whatever the machine's speed) one
live worker, chosen at random, is SIGKILLed and replaced, 20 times, and once stopped
gracefully with SIGTERM and replaced. A fault waits until at least two workers are up,
so that one is always there to recover the victim's jobs.

Before each SIGKILL the victim is frozen (SIGSTOP) and its in-flight hash read: the exact
set of jobs the kill orphans. Evidence of every run (start and end, with the pid) is in
Redis, written by the jobs themselves (tests.apps.faulty).

Asserted: no job lost; a job that started more than once was in flight at a kill (at
most one extra start per kill it was caught in); every job a victim started and did not
finish was in its in-flight hash; orphans leave the dead process's in-flight hash (back
to a queue) within heartbeat TTL + one interval (+1 s of slack) of the kill; the worker
stopped with SIGTERM exits 0, leaves nothing in flight, and no job it ran runs twice.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from tests.conftest import wait_for
from tests.devserver import RedisProcess
from tests.faults._support import (
    DEAD,
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TTL,
    PROCESSES,
    Fleet,
    Run,
    WorkerProc,
    anything_in_flight,
    client,
    counts,
    enqueue,
    held,
    inflight,
    report,
    runs,
    where_are,
    write_config,
)

pytestmark = pytest.mark.faults

N_JOBS = 10_000
JOB_SLEEP = 0.005
KILLS = 20
WORKERS = 3
CONCURRENCY = 10
# A job caught in many kills must not be dead-lettered here (scenario 4 covers that).
MAX_RECOVERIES = 1000
RECOVERY_BOUND = HEARTBEAT_TTL + HEARTBEAT_INTERVAL + 1.0


@dataclass
class Kill:
    pid: int
    process_id: str
    orphans: list[int]  # job numbers in the victim's in-flight hash when it died
    recovery: float | None  # seconds from SIGKILL until its in-flight hash was empty


@pytest.mark.timeout(240)
async def test_sigkill_20_times_loses_nothing(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    seed = int(os.environ.get("FAULTS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    t_start = time.monotonic()
    with RedisProcess() as server:
        r = client(server.url)
        try:
            await _run(r, server.url, tmp_path, fleets, rng, seed, t_start)
        finally:
            await r.aclose()


async def _run(
    r: aioredis.Redis,
    url: str,
    tmp_path: Path,
    fleets: Callable[[str, Path], Fleet],
    rng: random.Random,
    seed: int,
    t_start: float,
) -> None:
    await enqueue(url, [(n, JOB_SLEEP) for n in range(N_JOBS)])
    config = write_config(tmp_path, concurrency=CONCURRENCY, max_recoveries=MAX_RECOVERIES)
    fleet = fleets(url, config)
    workers = [fleet.start() for _ in range(WORKERS)]

    faults = KILLS + 1
    graceful_at = rng.randrange(faults // 3, 2 * faults // 3)
    thresholds = sorted(rng.sample(range(N_JOBS * 3 // 100, N_JOBS * 95 // 100), faults))
    kills: list[Kill] = []
    graceful: WorkerProc | None = None
    graceful_orphans: list[int] = []
    faults_at: dict[int, str] = {}  # pid -> what happened to it, and when (for messages)

    async def finished_at_least(n: int) -> bool:
        return int(await r.hlen("test:ran")) >= n

    async def registered() -> list[WorkerProc]:
        for w in workers:
            if w.alive():
                await w.registered(r)
        return [w for w in workers if w.process_id and w.alive()]

    async def two_registered() -> bool:
        # A victim, and at least one other live worker to recover its jobs: recovery
        # time is then the reaper's, not the time a replacement takes to start.
        return len(await registered()) >= 2

    async def all_registered() -> bool:
        return len(await registered()) == len(workers)

    for i, threshold in enumerate(thresholds):
        await wait_for(lambda: finished_at_least(threshold), timeout=60)  # noqa: B023
        await wait_for(two_registered, timeout=20)
        # A random live worker, among those running jobs right now if any are.
        up = await registered()
        busy = [w for w in up if await held(r, str(w.process_id))]
        victim = rng.choice(busy or up)
        assert victim.process_id is not None
        workers.remove(victim)
        if i == graceful_at:
            graceful = victim
            graceful_orphans = [
                p["args"]["n"] for p in (await inflight(r, victim.process_id)).values()
            ]
            faults_at[victim.pid] = f"SIGTERM at {time.time():.3f}"
            victim.signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(victim.popen.wait, 15)
            assert code == 0, f"SIGTERM: exit code {code}\n{victim.output()[-3000:]}"
            assert not await held(r, victim.process_id), "SIGTERM left jobs in flight"
            assert not await r.sismember(PROCESSES, victim.process_id)
            workers.append(fleet.start())
            continue
        # Freeze the victim, let Redis run what it sent before it stopped, then read
        # exactly what the kill will orphan.
        victim.signal(signal.SIGSTOP)
        await anyio.sleep(0.05)
        snapshot = await inflight(r, victim.process_id)
        t_kill = time.monotonic()
        faults_at[victim.pid] = f"SIGKILL at {time.time():.3f}"
        victim.kill()
        workers.append(fleet.start())
        recovery = None
        if snapshot:
            dead_id = victim.process_id

            async def recovered(dead_id: str = dead_id) -> bool:
                return not await held(r, dead_id)

            await wait_for(recovered, timeout=30, interval=0.005)
            recovery = time.monotonic() - t_kill
        kills.append(
            Kill(
                victim.pid,
                victim.process_id,
                [p["args"]["n"] for p in snapshot.values()],
                recovery,
            )
        )

    async def all_finished() -> bool:
        if int(await r.hlen("test:ran")) < N_JOBS:
            return False
        return len(counts(await runs(r))) >= N_JOBS

    try:
        await wait_for(all_finished, timeout=60, interval=0.1)
    except TimeoutError:
        pass  # the assertions below say what is missing and where it is

    await wait_for(all_registered, timeout=20)  # a worker still booting dies of SIGTERM
    for w in workers:
        w.signal(signal.SIGTERM)
    for w in workers:
        assert await anyio.to_thread.run_sync(w.popen.wait, 15) == 0

    started, ran = await runs(r, "test:started"), await runs(r)
    started_n, ran_n = counts(started), counts(ran)
    lost = set(range(N_JOBS)) - set(ran_n)
    in_flight_at_kill = Counter(n for k in kills for n in k.orphans)
    # Every extra start of a job is explained by a kill that caught it in flight.
    unexplained = sorted(n for n, c in started_n.items() if c > 1 + in_flight_at_kill[n])
    ran_twice = sorted(n for n, c in ran_n.items() if c > 1)
    # What each victim started and never finished was in its in-flight hash (invariant 1).
    not_recorded = []
    for k in kills:
        begun = {e.n for e in started if e.pid == k.pid}
        ended = {e.n for e in ran if e.pid == k.pid}
        not_recorded += sorted(begun - ended - set(k.orphans))
    # Across the graceful restart: whatever the stopped worker started, it finished, and
    # nothing it ran ran again (unless a SIGKILL caught that job too).
    assert graceful is not None
    g_begun = {e.n for e in started if e.pid == graceful.pid}
    g_ended = {e.n for e in ran if e.pid == graceful.pid}
    g_twice = sorted(n for n in g_begun if started_n[n] > 1 + in_flight_at_kill[n])
    recoveries = [k.recovery for k in kills if k.recovery is not None]
    dead = await r.zcard(DEAD)

    report(
        "scenario1_sigkill",
        seed=seed,
        jobs=N_JOBS,
        sigkills=len(kills),
        kills_with_orphans=len(recoveries),
        orphaned=sum(len(k.orphans) for k in kills),
        lost=len(lost),
        ran_twice=len(ran_twice),
        started_twice=sum(1 for c in started_n.values() if c > 1),
        unexplained_duplicates=len(unexplained),
        started_not_in_flight=len(not_recorded),
        recovery_s_max=round(max(recoveries, default=0.0), 3),
        recovery_s_mean=round(sum(recoveries) / max(1, len(recoveries)), 3),
        graceful_in_flight_at_sigterm=len(graceful_orphans),
        graceful_jobs_run=len(g_ended),
        graceful_run_twice=len(g_twice),
        dead=dead,
        runtime_s=round(time.monotonic() - t_start, 1),
    )
    problems = []
    if lost:
        problems.append(f"{len(lost)} jobs lost, now at {await where_are(r, lost)}")
    if unexplained:
        problems.append(
            f"jobs started again without being in flight at a SIGKILL: {unexplained[:20]}; "
            f"their runs: {_story(unexplained[:5], started, ran, faults_at)}"
        )
    if not_recorded:
        problems.append(
            f"jobs a victim was running but not in its in-flight hash: {not_recorded[:20]}; "
            f"their runs: {_story(not_recorded[:5], started, ran, faults_at)}"
        )
    if len(recoveries) < KILLS // 2:
        problems.append(f"only {len(recoveries)} of {KILLS} kills caught jobs in flight")
    if max(recoveries, default=0.0) > RECOVERY_BOUND:
        problems.append(f"recovery took {max(recoveries):.2f}s > {RECOVERY_BOUND}s")
    if g_begun != g_ended:
        problems.append(f"SIGTERM left jobs unfinished: {sorted(g_begun - g_ended)[:20]}")
    if g_twice:
        problems.append(
            f"jobs run twice across the graceful restart: {g_twice[:20]}; "
            f"their runs: {_story(g_twice[:5], started, ran, faults_at)}"
        )
    if dead:
        problems.append(f"{dead} jobs in the dead set")
    if await anything_in_flight(r):
        problems.append("jobs left in flight at the end")
    assert not problems, f"seed {seed}:\n" + "\n".join(problems)


def _story(ns: list[int], started: list[Run], ran: list[Run], faults_at: dict[int, str]) -> str:
    """Each run of jobs ``ns``: which worker started and ended it, when, and that
    worker's fate."""
    lines = []
    for n in ns:
        for e in sorted((e for e in started if e.n == n), key=lambda e: e.ts):
            end = next((x.ts for x in ran if x.n == n and x.pid == e.pid), None)
            fate = faults_at.get(e.pid, "still running")
            lines.append(f"job {n}: pid {e.pid} started {e.ts:.3f}, ended {end}, worker {fate}")
    return "; ".join(lines)
