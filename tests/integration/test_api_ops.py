"""The introspection API at scale and under change: stats in a fixed number of round
trips, history bounds, counter resets, cursor paging, finding and filtering (#11)."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api


async def _reads_and_commands(redis: aioredis.Redis) -> tuple[int, int]:
    info = await redis.info("stats")
    return int(info["total_reads_processed"]), int(info["total_commands_processed"])


@pytest.mark.parametrize("n_queues", [1, 30])
async def test_stats_in_fixed_round_trips(
    app: asyncjobs.App, redis: aioredis.Redis, n_queues: int
) -> None:
    """Stats.fetch costs the same round trips with 1 queue as with 30 (Sidekiq reads
    its stats in one pipeline); the server counts one read event per round trip."""
    jobs = [app.job(name=f"j{i}", queue=f"q{i}")(_noop) for i in range(n_queues)]
    for j in jobs:
        await j.defer()
    await api.Stats.fetch(app)  # connects and loads what it needs
    reads0, commands0 = await _reads_and_commands(redis)
    stats = await api.Stats.fetch(app, days=30)
    reads1, commands1 = await _reads_and_commands(redis)
    assert stats.enqueued == n_queues
    # One read event for the second INFO, the rest is Stats.fetch.
    assert reads1 - reads0 - 1 == 2
    # Fixed reads (8 commands, the 30 days of history in one MGET), plus one LLEN a queue.
    assert commands1 - commands0 - 1 == 8 + n_queues


async def _noop() -> None:
    pass


async def test_default_queue_latency_is_zero_on_empty_redis(app: asyncjobs.App) -> None:
    stats = await api.Stats.fetch(app)
    assert stats.default_queue_latency == 0.0
    assert stats.enqueued == 0 and stats.processes == 0


async def test_default_queue_latency_of_waiting_job(app: asyncjobs.App) -> None:
    j = app.job(name="wait")(_noop)
    await j.defer()
    with anyio.fail_after(5):
        while (await api.Stats.fetch(app)).default_queue_latency <= 0.0:
            await anyio.sleep(0.01)
