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
from collections.abc import Sequence
from typing import Any

from benchmarks.adapters.base import Adapter, WorkerSpec, one_queue_order


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

    one_queue_worker = True
    queue_order = one_queue_order("streaq's Worker takes one queue")

    async def put_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str] | None = None
    ) -> None:
        if queues and len(queues) > 1:
            await self._put_per_queue(job, args, queues)
            return
        enqueue = getattr(self.jobs, job).enqueue
        for i in range(0, len(args), 5_000):
            await self.jobs.worker.enqueue_many([enqueue(*a) for a in args[i : i + 5_000]])

    async def _put_per_queue(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str]
    ) -> None:
        from streaq import Worker

        fn_name = getattr(self.jobs, job).fn_name
        for qi, name in enumerate(queues):
            client = Worker(redis_url=self.ctx.redis_url, queue_name=name)
            async with client:
                mine = args[qi :: len(queues)]
                for i in range(0, len(mine), 5_000):
                    await client.enqueue_many(
                        [client.enqueue_unsafe(fn_name, *a) for a in mine[i : i + 5_000]]
                    )

    async def schedule_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], dues: Sequence[float]
    ) -> None:
        enqueue = getattr(self.jobs, job).enqueue
        for i in range(0, len(args), 5_000):
            await self.jobs.worker.enqueue_many(
                [
                    enqueue(*a).start(schedule=dt.datetime.fromtimestamp(due, tz=dt.UTC))
                    for a, due in zip(args[i : i + 5_000], dues[i : i + 5_000], strict=True)
                ]
            )

    def curve_worker(
        self, concurrency: int | None, queues: Sequence[str] | None = None
    ) -> WorkerSpec:
        return self.one_queue_curve_worker(
            concurrency,
            queues if queues and len(queues) > 1 else None,
            slots_option="concurrency",
            job_module="benchmarks.jobs_streaq",
        )

    def worker(self) -> WorkerSpec:
        return WorkerSpec(
            [self.python_module("streaq", "run", "benchmarks.jobs_streaq:worker")],
            description=f"streaq run benchmarks.jobs_streaq:worker (concurrency="
            f"{self.ctx.concurrency})",
        )
