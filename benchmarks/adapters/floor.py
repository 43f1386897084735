"""The framework-free drain floor.

Jobs are msgspec-encoded payloads put in a list with one pipelined ``LPUSH`` batch. The
worker (``python -m benchmarks.jobs_floor drain``) takes up to 100 at a time with
``RPOP key count`` (never more than its free slots at the given concurrency), decodes
each with msgspec and runs each in its own asyncio task: no in-flight record, no acks,
no timeouts, no middleware. What a job runner on Redis can reach at best in one process.
"""

from __future__ import annotations

from benchmarks.adapters.base import WorkerSpec
from benchmarks.adapters.redis_py import RedisPyAdapter


class FloorAdapter(RedisPyAdapter):
    name = "floor"
    label = "framework-free floor (batched RPOP, msgspec, task per job)"
    unsupported = {
        "enqueue": "n/a: see bare redis-py",
        "bulk": "n/a: see bare redis-py",
        "latency": "n/a: see bare redis-py",
        "scheduled": "n/a: no delayed jobs",
    }

    def worker(self) -> WorkerSpec:
        return WorkerSpec(
            [self.python_module("benchmarks.jobs_floor", "drain")],
            description="RPOP count<=100, msgspec decode, one task per job (uvloop)",
        )
