"""Batches under worker SIGKILLs (#14): every callback runs exactly once.

Two batches of 5,000 jobs (10,000 in all; one job in 97 fails once and is retried), run
by three worker subprocesses; at 10 random points of the run (drawn in "batch jobs
acknowledged so far") one live worker, busy if any is, is SIGKILLed and replaced (8
times) or frozen with SIGSTOP until it is presumed dead and its jobs are given back,
then resumed, so that it acknowledges runs that were given back meanwhile (2 times).
Every job a victim held is run again by another worker (the reaper gives it back), and
its earlier run may even have been acknowledged just before the kill: the batch counts
a job only in the script that removes it from an in-flight hash, so neither can count
it twice.

The callbacks (complete, success, death) run on their own queue, on a fourth worker
that is never killed, and count their runs in Redis. Asserted: each batch's complete
and success callbacks ran exactly once, death never; the batches' counts are exact
(total 5,000, pending 0, no failures left); nothing is left in any queue or in flight.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from tests.apps import batchy
from tests.conftest import text, wait_for
from tests.devserver import RedisProcess
from tests.faults._support import (
    HEARTBEAT_TTL,
    Fleet,
    anything_in_flight,
    client,
    held,
    write_config,
)

pytestmark = pytest.mark.faults

BATCHES = 2
PER_BATCH = 5_000
KILLS = 8
FREEZES = 2  # workers stopped (SIGSTOP) until presumed dead and reaped, then resumed
WORKERS = 3
JOB_SLEEP = 0.05  # 3 workers x 10 slots: about 20 s of work, for the faults to land in
APP = "tests.apps.batchy:app"
PROCESSED = "{asyncjobs}:stat:processed"


@pytest.mark.timeout(120)
async def test_batch_callbacks_exactly_once_under_sigkill(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    seed = int(os.environ.get("FAULTS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    with RedisProcess() as server:
        r = client(server.url)
        try:
            await _run(r, server.url, tmp_path, fleets, rng, seed)
        finally:
            await r.aclose()


async def _run(
    r: aioredis.Redis,
    url: str,
    tmp_path: Path,
    fleets: Callable[[str, Path], Fleet],
    rng: random.Random,
    seed: int,
) -> None:
    batchy.app.redis_url = url
    bids: list[str] = []
    try:
        for b in range(BATCHES):
            async with batchy.app.batch(
                description=f"batch {b}",
                on_complete=batchy.callback.s(event="complete"),
                on_success=batchy.callback.s(event="success"),
                on_death=batchy.callback.s(event="death"),
            ) as batch:
                for i in range(0, PER_BATCH, 2500):
                    await batchy.work.defer_many(
                        [(b * PER_BATCH + n, JOB_SLEEP) for n in range(i, i + 2500)]
                    )
            bids.append(batch.bid)
    finally:
        await batchy.app.aclose()

    config = write_config(tmp_path, concurrency=10, max_recoveries=1000, scheduler_poll=0.2)
    fleet = fleets(url, config)
    workers = [fleet.start("-q", "default", app=APP) for _ in range(WORKERS)]
    callbacks = fleet.start("-q", "callbacks", app=APP)
    total = BATCHES * PER_BATCH
    thresholds = sorted(rng.sample(range(total * 5 // 100, total * 85 // 100), KILLS + FREEZES))
    freezes = set(rng.sample(range(KILLS + FREEZES), FREEZES))

    async def acked_at_least(n: int) -> bool:
        return int(await r.get(PROCESSED) or 0) >= n

    async def two_registered() -> bool:
        up = [w for w in workers if w.alive() and await w.registered(r)]
        return len(up) >= 2

    killed = frozen = busy_hits = 0
    for i, threshold in enumerate(thresholds):
        await wait_for(lambda: acked_at_least(threshold), timeout=60)  # noqa: B023
        await wait_for(two_registered, timeout=20)
        up = [w for w in workers if w.alive() and w.process_id]
        busy = [w for w in up if await held(r, str(w.process_id))]
        busy_hits += bool(busy)
        victim = rng.choice(busy or up)
        if i in freezes:
            # Presumed dead: its jobs are given back and run elsewhere, then it wakes
            # and acknowledges the runs it had finished: those must not count again.
            victim.signal(signal.SIGSTOP)
            dead_id = str(victim.process_id)

            async def reaped(dead_id: str = dead_id) -> bool:
                return not await held(r, dead_id)

            await anyio.sleep(HEARTBEAT_TTL)
            await wait_for(reaped, timeout=20)
            victim.signal(signal.SIGCONT)
            frozen += 1
            continue
        workers.remove(victim)
        victim.kill()  # SIGKILL: whatever it held or was acknowledging is cut short
        killed += 1
        workers.append(fleet.start("-q", "default", app=APP))

    async def done() -> bool:
        got = await r.hgetall("test:callbacks")
        return len(got) >= 2 * BATCHES

    try:
        await wait_for(done, timeout=60, interval=0.1)
    except TimeoutError:
        pass  # the assertions below say what is missing
    await anyio.sleep(1.0)  # a duplicate callback, had one been pushed, would run now
    for w in [*workers, callbacks]:
        if w.alive():
            w.signal(signal.SIGTERM)
    for w in [*workers, callbacks]:
        await anyio.to_thread.run_sync(w.popen.wait, 15)

    ran = {text(k): int(v) for k, v in (await r.hgetall("test:callbacks")).items()}
    statuses = {}
    for bid in bids:
        fields = await r.hgetall(f"{{asyncjobs}}:batch:{bid}")
        statuses[bid] = {
            text(k): text(v) for k, v in fields.items() if not text(k).startswith("cb")
        }
    expected = {f"{e}:{bid}": 1 for bid in bids for e in ("complete", "success")}
    context = f"seed={seed} kills={killed} callbacks={ran} batches={statuses}"
    assert ran == expected, context
    for bid in bids:
        s = statuses[bid]
        assert (s["total"], s["pending"], s["holds"], s["kids"]) == (
            str(PER_BATCH),
            "0",
            "0",
            "0",
        ), context
        assert await r.scard(f"{{asyncjobs}}:batch:{bid}:failed") == 0, context
        assert "death_at" not in s, context
    assert (killed, frozen) == (KILLS, FREEZES)
    assert busy_hits >= (KILLS + FREEZES) // 2, f"faults mostly hit idle workers: {context}"
    assert await anything_in_flight(r) == 0, context
    assert await r.llen("{asyncjobs}:queue:default") == 0, context
    assert await r.llen("{asyncjobs}:queue:callbacks") == 0, context
