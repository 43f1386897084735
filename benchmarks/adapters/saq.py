"""saq.

* client: ``await queue.enqueue("noop")`` per job (one Lua script); a delayed job sets
  ``scheduled=`` (whole epoch seconds: the due time asked for is rounded up to the next
  second, and lateness is measured from that). saq has no batch enqueue
  (``Queue.map`` waits for the results).
* worker: ``saq benchmarks.jobs_saq.settings --quiet`` with ``concurrency=100``, one
  process (saq's default), default timers (scheduled jobs are promoted every second),
  ``--quiet`` so that no per-job log lines are written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.adapters.base import Adapter, WorkerSpec, one_queue_order
from benchmarks.probe import FLAKY_BACKOFF

#: saq passes job arguments by keyword
ARG_NAMES = {"noop": (), "stamp": ("ts",), "io": ("ms",), "payload": ("data",), "flaky": ("i",)}


class SaqAdapter(Adapter):
    name = "saq"
    label = "saq (1 process)"
    packages = ("saq",)
    modules = ("saq",)

    async def open(self) -> None:
        from benchmarks import jobs_saq

        self.queue: Any = jobs_saq.queue
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue_seq(self, n: int) -> None:
        enqueue = self.queue.enqueue
        for _ in range(n):
            await enqueue("noop")

    async def enqueue_stamp(self, due: float | None) -> None:
        if due is None:
            await self.queue.enqueue("stamp", ts=time.time())
        else:
            at = math.ceil(due)
            await self.queue.enqueue("stamp", ts=float(at), scheduled=at)

    one_queue_worker = True
    queue_order = one_queue_order("saq's Worker takes one queue")

    def _kwargs(self, job: str, a: tuple[Any, ...]) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(zip(ARG_NAMES[job], a, strict=True))
        if job == "flaky":
            kwargs.update(retries=3, retry_delay=FLAKY_BACKOFF, retry_backoff=False)
        return kwargs

    async def put_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str] | None = None
    ) -> None:
        if not queues:
            enqueue = self.queue.enqueue
            for a in args:
                await enqueue(job, **self._kwargs(job, a))
            return
        from saq import Queue

        for qi, name in enumerate(queues):
            queue = Queue.from_url(self.ctx.redis_url, name=name)
            await queue.connect()
            try:
                for a in args[qi :: len(queues)]:
                    await queue.enqueue(job, **self._kwargs(job, a))
            finally:
                await queue.disconnect()

    async def schedule_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], dues: Sequence[float]
    ) -> None:
        enqueue = self.queue.enqueue
        for a, due in zip(args, dues, strict=True):
            await enqueue(job, scheduled=math.ceil(due), **self._kwargs(job, a))

    def curve_worker(
        self, concurrency: int | None, queues: Sequence[str] | None = None
    ) -> WorkerSpec:
        return self.one_queue_curve_worker(
            concurrency, queues, slots_option="concurrency", job_module="benchmarks.jobs_saq"
        )

    def worker(self) -> WorkerSpec:
        argv = ["benchmarks.jobs_saq.settings", "--quiet"]
        return WorkerSpec(
            [self.python_module("saq", *argv)],
            description=f"saq {' '.join(argv)} (concurrency={self.ctx.concurrency})",
        )
