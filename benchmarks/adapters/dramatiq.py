"""dramatiq with its Redis broker.

* client: ``noop.send()`` per job; a delayed job is ``send_with_options(delay=ms)``.
  dramatiq has no batch enqueue (a ``group`` sends its messages one by one).
* worker: ``dramatiq benchmarks.jobs_dramatiq -p 3 -t 8`` (3 processes × 8 threads:
  its CLI's way to use more than one core; threads default to 8), default middleware,
  ``max_retries=0`` on the actors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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

    max_concurrency = (100, "a thread per slot")
    queue_order = "a consumer per queue, each fetching in turn"

    async def put_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str] | None = None
    ) -> None:
        actor = getattr(self.jobs, job)
        broker = self.jobs.broker
        names = list(queues or [actor.queue_name])
        for i, a in enumerate(args):
            message = actor.message(*a)
            if queues:
                message = message.copy(queue_name=names[i % len(names)])
            broker.enqueue(message)

    async def schedule_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], dues: Sequence[float]
    ) -> None:
        actor = getattr(self.jobs, job)
        for a, due in zip(args, dues, strict=True):
            actor.send_with_options(args=a, delay=max(0, round((due - time.time()) * 1000)))

    def curve_worker(
        self, concurrency: int | None, queues: Sequence[str] | None = None
    ) -> WorkerSpec:
        if concurrency is None:
            procs, threads = 3, 8  # its suite setting
        else:
            procs = 1 if concurrency < 20 else 2
            threads = concurrency // procs
        argv = ["benchmarks.jobs_dramatiq", "-p", str(procs), "-t", str(threads)]
        env = {"BENCH_QUEUES": ",".join(queues)} if queues else {}
        return WorkerSpec(
            [self.python_module("dramatiq", *argv)],
            env=env,
            description="dramatiq "
            + " ".join(argv)
            + (f" ({len(queues)} queues)" if queues else ""),
        )

    def worker(self) -> WorkerSpec:
        return WorkerSpec(
            [self.python_module("dramatiq", "benchmarks.jobs_dramatiq", "-p", "3", "-t", "8")],
            description="dramatiq benchmarks.jobs_dramatiq -p 3 -t 8",
        )
