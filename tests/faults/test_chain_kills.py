"""A chain's step job SIGKILLed after it deferred the next step, before its
acknowledgement: the reaper gives it back, another worker runs it again, and that run
defers nothing. Every job of the chain runs once; the chain does not fork.

The steps' jobs run on the queue ``work``, on a worker that is never killed; the step
jobs (``asyncjobs.chain``) on ``default``, on a worker of concurrency 1 that the first
step job stalls once it has deferred step 2 (``tests/apps/chained.py``). That worker is
SIGKILLed, and a second one takes ``default`` over.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.apps import chained
from tests.conftest import text, wait_for
from tests.devserver import RedisProcess
from tests.faults._support import INFLIGHT, LANDING, Fleet, client, write_config

pytestmark = pytest.mark.faults

APP = "tests.apps.chained:app"


@pytest.mark.timeout(60)
async def test_a_step_job_killed_before_its_ack_defers_the_next_step_once(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    with RedisProcess() as server:
        r = client(server.url)
        try:
            await _run(r, server.url, tmp_path, fleets)
        finally:
            await r.aclose()


async def _run(
    r: aioredis.Redis, url: str, tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    chained.app.redis_url = url
    mark = chained.mark
    try:
        await chained.app.chain(mark.s("a"), [mark.s("b1"), mark.s("b2")], mark.s("c"))
    finally:
        await chained.app.aclose()

    config = write_config(tmp_path, concurrency=1, timeout=60.0, max_recoveries=100)
    fleet = fleets(url, config)
    fleet.start("-q", "work", "--concurrency", "4", app=APP)
    victim = fleet.start("-q", "default", app=APP)
    await wait_for(lambda: r.get("test:stalled"), timeout=20)
    stalled = text(await r.get("test:stalled") or b"")
    victim.kill()  # the step job deferred step 2, and is not acknowledged
    fleet.start("-q", "default", app=APP)

    async def ran_again() -> bool:
        return int(await r.hget("test:steps", stalled) or 0) >= 2

    await wait_for(ran_again, timeout=30)  # the reaper gave it back; it ran again
    await wait_for(lambda: _settled(r), timeout=30)

    ran = {text(k): int(v) for k, v in (await r.hgetall("test:ran")).items()}
    steps = {text(k): int(v) for k, v in (await r.hgetall("test:steps")).items()}
    descs: dict[str, int] = {}
    for key in await r.keys("{asyncjobs}:batch:*"):
        if not text(key).endswith(":failed"):
            desc = text(await r.hget(key, "desc") or b"")
            descs[desc] = descs.get(desc, 0) + 1
    context = f"ran={ran} steps={steps} batches={descs}"
    assert ran == {"a": 1, "b1": 1, "b2": 1, "c": 1}, context
    assert steps[stalled] == 2 and len(steps) == 2, context
    assert descs == {"chain: step 1": 1, "chain: step 2": 1, "chain: step 3": 1}, context


async def _settled(r: aioredis.Redis) -> bool:
    """Nothing queued, scheduled, retried or held by any process, at one instant (one
    MULTI): a job that ends pushes what it deferred, and the callbacks it fires, before
    its acknowledgement takes it out of the in-flight hash."""
    async with r.pipeline(transaction=True) as pipe:
        pipe.llen("{asyncjobs}:queue:work")
        pipe.llen("{asyncjobs}:queue:default")
        pipe.zcard("{asyncjobs}:schedule")
        pipe.zcard("{asyncjobs}:retry")
        pipe.keys(INFLIGHT + "*")
        pipe.keys(LANDING + "*")
        found = await pipe.execute()
    return not any(found)
