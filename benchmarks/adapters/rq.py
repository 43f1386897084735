"""rq (Redis Queue).

* client: ``queue.enqueue(noop)`` per job; ``queue.enqueue_many([...prepare_data...])``
  for bulk (one pipeline); a delayed job is ``queue.enqueue_at(datetime, stamp, due)``.
* worker: 4 × ``rq worker -u URL --quiet --with-scheduler bench``: rq's default worker
  (a fork per job, its isolation model), four of them as its docs suggest for
  throughput, per-job log lines off; one of them takes the scheduler lock and moves due
  jobs (it checks every second). The forked children report straight to the control
  Redis (``BENCH_PROBE_MODE=direct``).
* ``rq-simple`` (not in the default set): the same with ``-w rq.worker.SimpleWorker``,
  which runs jobs in the worker process; rq's docs call it faster but advise the
  forking worker for production.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.adapters.base import Adapter, WorkerSpec
from benchmarks.probe import FLAKY_BACKOFF

WORKERS = 4


class RqAdapter(Adapter):
    name = "rq"
    label = f"rq ({WORKERS} workers, fork per job)"
    packages = ("rq",)
    modules = ("rq",)

    async def open(self) -> None:
        from redis import Redis
        from rq import Queue

        from benchmarks import jobs_rq

        self.jobs: Any = jobs_rq
        self.redis = Redis.from_url(self.ctx.redis_url)
        self.queue: Any = Queue("bench", connection=self.redis)
        self.Queue: Any = Queue

    async def close(self) -> None:
        self.redis.close()

    async def enqueue_seq(self, n: int) -> None:
        enqueue, noop = self.queue.enqueue, self.jobs.noop
        for _ in range(n):
            enqueue(noop)

    async def enqueue_bulk(self, n: int) -> None:
        prepare, noop = self.Queue.prepare_data, self.jobs.noop
        self.queue.enqueue_many([prepare(noop) for _ in range(n)])

    async def enqueue_stamp(self, due: float | None) -> None:
        if due is None:
            self.queue.enqueue(self.jobs.stamp, time.time())
        else:
            at = dt.datetime.fromtimestamp(due, tz=dt.UTC)
            self.queue.enqueue_at(at, self.jobs.stamp, due)

    max_concurrency = (10, "a worker process per slot")
    queue_order = "strict order (rq takes queues in the order given)"

    def _retry(self, job: str) -> Any:
        if job != "flaky":
            return None
        from rq import Retry

        return Retry(max=2, interval=int(FLAKY_BACKOFF))

    async def put_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str] | None = None
    ) -> None:
        fn, retry = getattr(self.jobs, job), self._retry(job)
        names = list(queues or ["bench"])
        for qi, name in enumerate(names):
            queue = self.Queue(name, connection=self.redis)
            mine = args[qi :: len(names)]
            for i in range(0, len(mine), 5_000):
                queue.enqueue_many(
                    [self.Queue.prepare_data(fn, a, retry=retry) for a in mine[i : i + 5_000]]
                )

    async def schedule_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], dues: Sequence[float]
    ) -> None:
        fn = getattr(self.jobs, job)
        for a, due in zip(args, dues, strict=True):
            self.queue.enqueue_at(dt.datetime.fromtimestamp(due, tz=dt.UTC), fn, *a)

    def curve_worker(
        self, concurrency: int | None, queues: Sequence[str] | None = None
    ) -> WorkerSpec:
        argv = ["worker", "-u", self.ctx.redis_url, "--quiet", "--with-scheduler"]
        if self.worker_class:
            argv += ["-w", self.worker_class]
        names = list(queues or ["bench"])
        argv += names
        shown = " ".join(argv[3 : -len(names)]) + (
            f" q0 … q{len(names) - 1}" if len(names) > 2 else " " + " ".join(names)
        )
        procs = WORKERS if concurrency is None else concurrency
        return WorkerSpec(
            [self.python_module("rq.cli", *argv) for _ in range(procs)],
            env={"BENCH_PROBE_MODE": "direct"},
            description=f"{procs} × rq worker {shown}",
        )

    worker_class: str | None = None

    def worker(self) -> WorkerSpec:
        argv = ["worker", "-u", self.ctx.redis_url, "--quiet", "--with-scheduler"]
        if self.worker_class:
            argv += ["-w", self.worker_class]
        argv.append("bench")
        shown = " ".join(a for a in argv[3:])
        return WorkerSpec(
            [self.python_module("rq.cli", *argv) for _ in range(WORKERS)],
            env={"BENCH_PROBE_MODE": "direct"},
            description=f"{WORKERS} × rq worker {shown}",
        )


class RqSimpleAdapter(RqAdapter):
    name = "rq-simple"
    label = f"rq ({WORKERS} SimpleWorkers, no fork)"
    worker_class = "rq.worker.SimpleWorker"
