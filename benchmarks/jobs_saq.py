"""saq's job side: the queue, the worker settings and two jobs (see benchmarks.probe).

uvloop's policy is installed at import, so the loop saq's CLI creates is uvloop's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from saq import Queue, Worker

from benchmarks import _uvloop, probe

_uvloop.install()

# the queues curve runs one worker process per queue
_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# the queues curve runs one worker process per queue (BENCH_QUEUE) up to 10 queues
queue = Queue.from_url(_url, name=os.environ.get("BENCH_QUEUE", "bench"))


async def noop(ctx: dict[str, Any]) -> None:
    probe.hit()


async def stamp(ctx: dict[str, Any], *, ts: float) -> None:
    probe.stamp(ts)


async def io(ctx: dict[str, Any], *, ms: int) -> None:
    probe.io_begin()
    await asyncio.sleep(ms / 1000)
    probe.io_end()
    probe.hit()


async def payload(ctx: dict[str, Any], *, data: str) -> None:
    probe.hit()


async def flaky(ctx: dict[str, Any], *, i: int) -> None:
    probe.flaky(i)  # retries=3, retry_delay=FLAKY_BACKOFF are set at enqueue


settings: dict[str, Any] = {
    "queue": queue,
    "functions": [noop, stamp, io, payload, flaky],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "100")),
}


def serve_queues(queues: Sequence[str], slots: int) -> None:
    """One saq ``Worker`` per queue (its own ``Queue.from_url``, ``concurrency=slots``,
    default timers), connected and started as saq's CLI does, all in one loop
    (``benchmarks.many_queues``)."""

    async def one(name: str) -> None:
        q = Queue.from_url(_url, name=name)
        worker = Worker(q, settings["functions"], concurrency=slots)
        await q.connect()
        await worker.start()

    async def main() -> None:
        await asyncio.gather(*(one(name) for name in queues))

    asyncio.run(main())
