"""arq.

* client: ``pool = await create_pool(RedisSettings)``, then
  ``await pool.enqueue_job("noop")`` per job (a ``WATCH``/``MULTI`` transaction each);
  a delayed job is ``enqueue_job("stamp", due, _defer_until=datetime)``. arq has no
  batch enqueue.
* worker: ``arq benchmarks.jobs_arq.WorkerSettings --custom-log-dict
  benchmarks.jobs_arq.LOG_CONFIG`` with ``max_jobs=100`` (the concurrency),
  ``poll_delay=0.01`` (arq polls its queue; 0.5 s by default) and per-job log lines off;
  results kept as by default (``keep_result`` 3600 s). One process (arq has no
  multi-process mode).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.adapters.base import Adapter, WorkerSpec, one_queue_order


class ArqAdapter(Adapter):
    name = "arq"
    label = "arq (poll 10 ms)"
    packages = ("arq",)
    modules = ("arq",)

    async def open(self) -> None:
        from arq import create_pool

        from benchmarks import jobs_arq

        self.pool: Any = await create_pool(jobs_arq.REDIS)

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue_seq(self, n: int) -> None:
        enqueue = self.pool.enqueue_job
        for _ in range(n):
            await enqueue("noop")

    async def enqueue_stamp(self, due: float | None) -> None:
        if due is None:
            await self.pool.enqueue_job("stamp", time.time())
        else:
            at = dt.datetime.fromtimestamp(due, tz=dt.UTC)
            await self.pool.enqueue_job("stamp", due, _defer_until=at)

    one_queue_worker = True
    queue_order = one_queue_order("arq's Worker takes one queue")

    async def put_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str] | None = None
    ) -> None:
        enqueue = self.pool.enqueue_job
        if not queues:
            for a in args:
                await enqueue(job, *a)
            return
        for i, a in enumerate(args):
            await enqueue(job, *a, _queue_name=queues[i % len(queues)])

    async def schedule_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], dues: Sequence[float]
    ) -> None:
        enqueue = self.pool.enqueue_job
        for a, due in zip(args, dues, strict=True):
            await enqueue(job, *a, _defer_until=dt.datetime.fromtimestamp(due, tz=dt.UTC))

    def curve_worker(
        self, concurrency: int | None, queues: Sequence[str] | None = None
    ) -> WorkerSpec:
        return self.one_queue_curve_worker(
            concurrency, queues, slots_option="max_jobs", job_module="benchmarks.jobs_arq"
        )

    def worker(self) -> WorkerSpec:
        argv = [
            "benchmarks.jobs_arq.WorkerSettings",
            "--custom-log-dict",
            "benchmarks.jobs_arq.LOG_CONFIG",
        ]
        return WorkerSpec(
            [self.python_module("arq", *argv)],
            description=f"arq {argv[0]} (max_jobs={self.ctx.concurrency}, poll_delay=0.01)",
        )
