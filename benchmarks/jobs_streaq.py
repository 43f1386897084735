"""streaq's job side: the worker and two tasks (see benchmarks.probe).

The worker runs on uvloop (anyio's ``use_uvloop``); its lifespan turns streaq's per-task
INFO log lines off (its CLI configures logging at INFO and has no switch for it).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from streaq import StreaqRetry, Worker

from benchmarks import probe


@asynccontextmanager
async def quiet() -> AsyncIterator[None]:
    logging.getLogger("streaq").setLevel(logging.WARNING)
    yield None


worker = Worker(
    redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    concurrency=int(os.environ.get("BENCH_CONCURRENCY", "100")),
    # the queues curve runs one worker process per queue
    queue_name=os.environ.get("BENCH_QUEUE", "bench"),
    lifespan=quiet,
    anyio_kwargs={"use_uvloop": True},
)


@worker.task
async def noop() -> None:
    probe.hit()


@worker.task
async def stamp(ts: float) -> None:
    probe.stamp(ts)


@worker.task
async def io(ms: int) -> None:
    probe.io_begin()
    await asyncio.sleep(ms / 1000)
    probe.io_end()
    probe.hit()


@worker.task
async def payload(data: str) -> None:
    probe.hit()


@worker.task(max_tries=3)
async def flaky(i: int) -> None:
    try:
        probe.flaky(i)
    except probe.FlakyError as exc:
        raise StreaqRetry(delay=int(probe.FLAKY_BACKOFF)) from exc
