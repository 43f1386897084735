"""celery with its Redis broker (kombu), no result backend.

* client: ``noop.delay()`` per job; a delayed job is
  ``stamp.apply_async((due,), eta=datetime)`` (the worker holds it until its ETA).
  celery has no batch publish (a ``group`` publishes its tasks one by one).
* worker: ``celery -A benchmarks.jobs_celery worker -P prefork -c 2 -l WARNING
  --without-gossip --without-mingle --without-heartbeat``: the prefork pool with one
  child per core (its default concurrency here), no per-task log lines, and the cluster
  event chatter off as its optimisation guide suggests; default prefetch (4 per child).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.adapters.base import Adapter, WorkerSpec


class CeleryAdapter(Adapter):
    name = "celery"
    label = "celery (Redis broker, prefork × 2)"
    packages = ("celery", "kombu", "billiard")
    modules = ("celery", "kombu")

    async def open(self) -> None:
        from benchmarks import jobs_celery

        self.jobs: Any = jobs_celery
        with self.jobs.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=3)

    async def enqueue_seq(self, n: int) -> None:
        delay = self.jobs.noop.delay
        for _ in range(n):
            delay()

    async def enqueue_stamp(self, due: float | None) -> None:
        if due is None:
            self.jobs.stamp.delay(time.time())
        else:
            at = dt.datetime.fromtimestamp(due, tz=dt.UTC)
            self.jobs.stamp.apply_async((due,), eta=at)

    max_concurrency = (10, "a prefork child process per slot")
    queue_order = "kombu's round robin over the queues (-Q)"

    async def put_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str] | None = None
    ) -> None:
        task = getattr(self.jobs, job)
        if not queues:
            for a in args:
                task.apply_async(a)
            return
        for i, a in enumerate(args):
            task.apply_async(a, queue=queues[i % len(queues)])

    async def schedule_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], dues: Sequence[float]
    ) -> None:
        task = getattr(self.jobs, job)
        for a, due in zip(args, dues, strict=True):
            task.apply_async(a, eta=dt.datetime.fromtimestamp(due, tz=dt.UTC))

    def curve_worker(
        self, concurrency: int | None, queues: Sequence[str] | None = None
    ) -> WorkerSpec:
        spec = self.worker()
        argv = spec.commands[0]
        if concurrency is not None:
            argv[argv.index("-c") + 1] = str(concurrency)
        if queues:
            argv += ["-Q", ",".join(queues)]
        spec.description = "celery " + " ".join(argv[3:])
        if queues and len(queues) > 2:
            spec.description = spec.description.replace(
                ",".join(queues), f"q0,…,q{len(queues) - 1}"
            )
        return spec

    def worker(self) -> WorkerSpec:
        argv = [
            "-A",
            "benchmarks.jobs_celery",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        return WorkerSpec(
            [self.python_module("celery", *argv)], description="celery " + " ".join(argv)
        )
