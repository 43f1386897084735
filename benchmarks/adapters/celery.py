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
