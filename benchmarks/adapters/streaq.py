"""streaq (Redis streams and Lua functions, anyio, coredis).

* client: ``async with worker:`` once, then ``await noop.enqueue()`` per job;
  ``await worker.enqueue_many([noop.enqueue() for ...])`` for bulk (one pipeline); a
  delayed job is ``await stamp.enqueue(due).start(schedule=datetime)``.
* worker: ``streaq run benchmarks.jobs_streaq:worker`` with ``concurrency=100`` (prefetch
  defaults to the concurrency), one process (streaq's default), uvloop, per-task log
  lines off. Delayed tasks are promoted by a loop that runs every 0.5 s.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from benchmarks.adapters.base import Adapter, WorkerSpec


class StreaqAdapter(Adapter):
    name = "streaq"
    label = "streaq (1 process)"
    packages = ("streaq", "coredis")
    modules = ("streaq",)

    async def open(self) -> None:
        from benchmarks import jobs_streaq

        self.jobs: Any = jobs_streaq
        await self.jobs.worker.__aenter__()

    async def close(self) -> None:
        await self.jobs.worker.__aexit__(None, None, None)

    async def enqueue_seq(self, n: int) -> None:
        enqueue = self.jobs.noop.enqueue
        for _ in range(n):
            await enqueue()

    async def enqueue_bulk(self, n: int) -> None:
        enqueue = self.jobs.noop.enqueue
        await self.jobs.worker.enqueue_many([enqueue() for _ in range(n)])

    async def enqueue_stamp(self, due: float | None) -> None:
        if due is None:
            await self.jobs.stamp.enqueue(time.time())
        else:
            at = dt.datetime.fromtimestamp(due, tz=dt.UTC)
            await self.jobs.stamp.enqueue(due).start(schedule=at)

    def worker(self) -> WorkerSpec:
        return WorkerSpec(
            [self.python_module("streaq", "run", "benchmarks.jobs_streaq:worker")],
            description=f"streaq run benchmarks.jobs_streaq:worker (concurrency="
            f"{self.ctx.concurrency})",
        )
