"""streaq's job side: the worker and two tasks (see benchmarks.probe).

The worker runs on uvloop (anyio's ``use_uvloop``); its lifespan turns streaq's per-task
INFO log lines off (its CLI configures logging at INFO and has no switch for it).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from streaq import StreaqRetry, Worker

from benchmarks import probe


@asynccontextmanager
async def quiet() -> AsyncIterator[None]:
    logging.getLogger("streaq").setLevel(logging.WARNING)
    yield None


def make_worker(queue_name: str, concurrency: int) -> Worker[None]:
    return Worker(
        redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        concurrency=concurrency,
        queue_name=queue_name,
        lifespan=quiet,
        anyio_kwargs={"use_uvloop": True},
    )


# the queues curve runs one worker process per queue (BENCH_QUEUE) up to 10 queues
worker = make_worker(
    os.environ.get("BENCH_QUEUE", "bench"), int(os.environ.get("BENCH_CONCURRENCY", "100"))
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


def serve_queues(queues: Sequence[str], slots: int) -> None:
    """One streaq ``Worker`` per queue (``concurrency=slots``, its own coredis pool),
    each with this module's tasks registered under the same names and options, all run
    with ``Worker.run_async()`` in one anyio task group on uvloop
    (``benchmarks.many_queues``)."""
    workers = []
    for name in queues:
        w = make_worker(name, slots)
        for fn_name, task in worker.registry.items():
            fn: Any = task.fn
            w.task(name=fn_name, max_tries=task.max_tries, ttl=task.ttl)(fn)
        workers.append(w)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for w in workers:
                tg.start_soon(w.run_async)

    anyio.run(main, backend_options={"use_uvloop": True})
