"""streaq's job side: the worker and two tasks (see benchmarks.probe).

The worker runs on uvloop (anyio's ``use_uvloop``); its lifespan turns streaq's per-task
INFO log lines off (its CLI configures logging at INFO and has no switch for it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from streaq import Worker

from benchmarks import probe


@asynccontextmanager
async def quiet() -> AsyncIterator[None]:
    logging.getLogger("streaq").setLevel(logging.WARNING)
    yield None


worker = Worker(
    redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    concurrency=int(os.environ.get("BENCH_CONCURRENCY", "100")),
    queue_name="bench",
    lifespan=quiet,
    anyio_kwargs={"use_uvloop": True},
)


@worker.task
async def noop() -> None:
    probe.hit()


@worker.task
async def stamp(ts: float) -> None:
    probe.stamp(ts)
