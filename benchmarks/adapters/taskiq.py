"""taskiq with taskiq-redis, two brokers: the stream broker and the list broker.

* client: ``await broker.startup()`` once, then ``await noop.kiq()`` per job. taskiq
  has no batch enqueue, and its Redis brokers have no delayed jobs (scheduling needs a
  separate ``taskiq scheduler`` process polling a schedule source, at one-second-or-more
  resolution), so ``bulk`` and ``scheduled`` are n/a.
* worker: ``taskiq worker benchmarks.jobs_taskiq:broker --workers 2
  --max-async-tasks 100 --log-level WARNING`` (2 worker processes is taskiq's default;
  uvloop is used automatically when installed).
* The stream broker's consumer group starts at ``$``, so the client re-declares it
  after every flush (``reset``), before jobs are enqueued.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.adapters.base import (
    Adapter,
    NotSupported,
    WorkerSpec,
    grouped_queues,
    one_queue_order,
)


class TaskiqStreamAdapter(Adapter):
    name = "taskiq-stream"
    label = "taskiq (taskiq-redis RedisStreamBroker)"
    packages = ("taskiq", "taskiq-redis")
    modules = ("taskiq", "taskiq_redis")
    unsupported = {"scheduled": "n/a: no delayed jobs"}
    broker_kind = "stream"

    async def open(self) -> None:
        os.environ["BENCH_TASKIQ_BROKER"] = self.broker_kind
        import importlib
        import sys

        # the module picks its broker at import: import it afresh for this kind
        sys.modules.pop("benchmarks.jobs_taskiq", None)
        self.jobs: Any = importlib.import_module("benchmarks.jobs_taskiq")
        await self.jobs.broker.startup()

    async def close(self) -> None:
        await self.jobs.broker.shutdown()

    async def reset(self) -> None:
        declare = getattr(self.jobs.broker, "_declare_consumer_group", None)
        if declare is not None:
            await declare()

    async def enqueue_seq(self, n: int) -> None:
        kiq = self.jobs.noop.kiq
        for _ in range(n):
            await kiq()

    async def enqueue_stamp(self, due: float | None) -> None:
        await self.jobs.stamp.kiq(time.time())

    one_queue_worker = True
    queue_order = one_queue_order("a taskiq receiver takes one broker, a broker one queue")

    async def put_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str] | None = None
    ) -> None:
        if job == "flaky":
            raise NotSupported("n/a: no delayed retries with the taskiq-redis brokers")
        if queues and len(queues) > 1:
            await self._put_per_queue(job, args, queues)
            return
        kiq = getattr(self.jobs, job).kiq
        for a in args:
            await kiq(*a)

    async def _put_per_queue(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str]
    ) -> None:
        from taskiq.kicker import AsyncKicker
        from taskiq_redis import ListQueueBroker, RedisStreamBroker

        kind = ListQueueBroker if self.broker_kind == "list" else RedisStreamBroker
        for qi, name in enumerate(queues):
            broker = kind(self.ctx.redis_url, queue_name=name)
            await broker.startup()
            try:
                kicker: Any = AsyncKicker(job, broker, {})
                for a in args[qi :: len(queues)]:
                    await kicker.kiq(*a)
            finally:
                await broker.shutdown()

    def curve_worker(
        self, concurrency: int | None, queues: Sequence[str] | None = None
    ) -> WorkerSpec:
        # two worker processes (taskiq's default), the slots split between them
        spec = self.worker()
        argv = spec.commands[0]
        i = argv.index("--max-async-tasks")
        c = self.ctx.concurrency if concurrency is None else concurrency
        if queues and len(queues) > 1:  # one single-process worker per queue
            argv[argv.index("--workers") + 1] = "1"
            argv[i + 1] = str(max(1, c // len(queues)))
            spec.description = "taskiq " + " ".join(argv[3:])
            return grouped_queues(spec, queues, c, self.ctx.python, "benchmarks.jobs_taskiq")
        if concurrency is not None:
            argv[i + 1] = str(max(1, concurrency // 2))
        spec.description = "taskiq " + " ".join(argv[3:])
        return spec

    def worker(self) -> WorkerSpec:
        argv = [
            "worker",
            "benchmarks.jobs_taskiq:broker",
            "--workers",
            "2",
            "--max-async-tasks",
            str(self.ctx.concurrency),
            "--log-level",
            "WARNING",
        ]
        return WorkerSpec(
            [self.python_module("taskiq", *argv)],
            env={"BENCH_TASKIQ_BROKER": self.broker_kind},
            description="taskiq " + " ".join(argv),
        )


class TaskiqListAdapter(TaskiqStreamAdapter):
    name = "taskiq-list"
    label = "taskiq (taskiq-redis ListQueueBroker, no acks)"
    broker_kind = "list"
