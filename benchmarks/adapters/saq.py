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
from typing import Any

from benchmarks.adapters.base import Adapter, WorkerSpec


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

    def worker(self) -> WorkerSpec:
        argv = ["benchmarks.jobs_saq.settings", "--quiet"]
        return WorkerSpec(
            [self.python_module("saq", *argv)],
            description=f"saq {' '.join(argv)} (concurrency={self.ctx.concurrency})",
        )
