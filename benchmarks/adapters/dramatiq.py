"""dramatiq with its Redis broker.

* client: ``noop.send()`` per job; a delayed job is ``send_with_options(delay=ms)``.
  dramatiq has no batch enqueue (a ``group`` sends its messages one by one).
* worker: ``dramatiq benchmarks.jobs_dramatiq -p 3 -t 8`` (3 processes × 8 threads:
  its CLI's way to use more than one core; threads default to 8), default middleware,
  ``max_retries=0`` on the actors.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.adapters.base import Adapter, WorkerSpec


class DramatiqAdapter(Adapter):
    name = "dramatiq"
    label = "dramatiq (Redis broker, 3 processes × 8 threads)"
    packages = ("dramatiq",)
    modules = ("dramatiq",)

    async def open(self) -> None:
        from benchmarks import jobs_dramatiq

        self.jobs: Any = jobs_dramatiq
        self.jobs.broker.client.ping()

    async def enqueue_seq(self, n: int) -> None:
        send = self.jobs.noop.send
        for _ in range(n):
            send()

    async def enqueue_stamp(self, due: float | None) -> None:
        if due is None:
            self.jobs.stamp.send(time.time())
        else:
            delay_ms = max(0, round((due - time.time()) * 1000))
            self.jobs.stamp.send_with_options(args=(due,), delay=delay_ms)

    def worker(self) -> WorkerSpec:
        return WorkerSpec(
            [self.python_module("dramatiq", "benchmarks.jobs_dramatiq", "-p", "3", "-t", "8")],
            description="dramatiq benchmarks.jobs_dramatiq -p 3 -t 8",
        )
