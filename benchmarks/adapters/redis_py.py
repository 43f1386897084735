"""Bare redis-py, the floor of enqueue and of idle pickup.

* enqueue: a loop of ``await client.lpush(queue, payload)`` with the asyncio client
  (hiredis parser when installed), building and msgspec-encoding a Sidekiq-shaped
  payload per job, as a job runner would.
* bulk: the same payloads as ``LPUSH`` commands in one non-transactional pipeline.
* pickup: a worker process doing ``BRPOP`` one job at a time
  (``python -m benchmarks.jobs_floor brpop``).
* no drain (the framework-free floor measures that) and no delayed jobs.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from benchmarks.adapters.base import Adapter, WorkerSpec


class RedisPyAdapter(Adapter):
    name = "redis-py"
    label = "bare redis-py (LPUSH loop; BRPOP)"
    packages: ClassVar[tuple[str, ...]] = ("redis", "hiredis", "msgspec")
    modules: ClassVar[tuple[str, ...]] = ("redis", "msgspec")
    unsupported = {
        "drain": "n/a: see the framework-free floor",
        "scheduled": "n/a: no delayed jobs",
    }

    async def open(self) -> None:
        import redis.asyncio as aioredis

        from benchmarks import jobs_floor

        self._floor = jobs_floor
        self._client: Any = aioredis.Redis.from_url(self.ctx.redis_url)
        await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()

    async def enqueue_seq(self, n: int) -> None:
        client, encode, queue = self._client, self._floor.encode, self._floor.QUEUE
        for _ in range(n):
            await client.lpush(queue, encode("noop", []))

    async def enqueue_bulk(self, n: int) -> None:
        encode, queue = self._floor.encode, self._floor.QUEUE
        async with self._client.pipeline(transaction=False) as pipe:
            for _ in range(n):
                pipe.lpush(queue, encode("noop", []))
            await pipe.execute()

    async def enqueue_stamp(self, due: float | None) -> None:
        ts = time.time()
        await self._client.lpush(self._floor.QUEUE, self._floor.encode("stamp", [ts]))

    def worker(self) -> WorkerSpec:
        return WorkerSpec(
            [self.python_module("benchmarks.jobs_floor", "brpop")],
            description="one BRPOP loop (asyncio, uvloop)",
        )
