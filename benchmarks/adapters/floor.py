"""The framework-free floors: of the drain, and of latency under load.

Drain (the scenarios): jobs are msgspec-encoded payloads put in a list with one
pipelined ``LPUSH`` batch. The worker (``python -m benchmarks.jobs_floor drain``) takes
up to 100 at a time with ``RPOP key count`` (never more than its free slots at the given
concurrency), decodes each with msgspec and runs each in its own asyncio task: no
in-flight record, no acks, no timeouts, no middleware. What a job runner on Redis can
reach at best in one process.

Latency under load (the ``latency-load`` curve): the producer sends each job as one
``LPUSH`` on one pipelined connection (:class:`benchmarks.jobs_floor.Pipe`), so any
number of tasks can send at once; the worker (``python -m benchmarks.jobs_floor
blmpop``) is one ``BLMPOP ... COUNT 100`` loop that decodes each job and runs it inline.
What Redis and the machine allow, without a framework; the curve shows it as a
reference row, not as a peer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from benchmarks.adapters.base import NotSupported, WorkerSpec
from benchmarks.adapters.redis_py import RedisPyAdapter

#: values per ``LPUSH`` when ``put_jobs`` fills the queue
CHUNK = 1_000


class FloorAdapter(RedisPyAdapter):
    name = "floor"
    label = (
        "framework-free floor (batched RPOP, msgspec, task per job; in the latency-load"
        " curve a BLMPOP loop, each job inline)"
    )
    packages: ClassVar[tuple[str, ...]] = ("redis", "hiredis", "msgspec", "uvloop")
    modules: ClassVar[tuple[str, ...]] = ("redis", "hiredis", "msgspec")
    unsupported = {
        "enqueue": "n/a: see bare redis-py",
        "bulk": "n/a: see bare redis-py",
        "latency": "n/a: see bare redis-py",
        "scheduled": "n/a: no delayed jobs",
    }
    max_queues = 1
    max_concurrency = (1, "its latency worker runs each job inline")

    async def open(self) -> None:
        await super().open()
        self._pipe: Any = await self._floor.Pipe.connect(self.ctx.redis_url)

    async def close(self) -> None:
        try:
            await self._pipe.close()
        finally:
            await super().close()

    async def enqueue_stamp(self, due: float | None) -> None:
        if due is not None:
            raise NotSupported("n/a: no delayed jobs")
        ts = time.time()
        await self._pipe.call("LPUSH", self._floor.QUEUE, self._floor.encode("stamp", [ts]))

    async def put_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str] | None = None
    ) -> None:
        if job not in ("noop", "stamp", "payload"):
            raise NotSupported(f"n/a: its worker runs no {job} jobs")
        if queues and len(queues) > 1:
            raise NotSupported("n/a: its worker takes one queue")
        encode, queue = self._floor.encode, self._floor.QUEUE
        for i in range(0, len(args), CHUNK):
            values = [encode(job, list(a)) for a in args[i : i + CHUNK]]
            await self._pipe.call("LPUSH", queue, *values)

    def curve_worker(
        self, concurrency: int | None, queues: Sequence[str] | None = None
    ) -> WorkerSpec:
        if queues and len(queues) > 1:
            raise NotSupported("n/a: its worker takes one queue")
        return WorkerSpec(
            [self.python_module("benchmarks.jobs_floor", "blmpop")],
            description="BLMPOP 1 1 QUEUE RIGHT COUNT 100 loop, msgspec decode, each job"
            " inline (uvloop)",
        )

    def worker(self) -> WorkerSpec:
        return WorkerSpec(
            [self.python_module("benchmarks.jobs_floor", "drain")],
            description="RPOP count<=100, msgspec decode, one task per job (uvloop)",
        )
