"""arq's job side: WorkerSettings and two jobs (see benchmarks.probe).

uvloop's policy is installed at import, so the loop arq's CLI creates is uvloop's.
"""

from __future__ import annotations

import asyncio
import logging.config
import os
from collections.abc import Sequence
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Retry, Worker, func

from benchmarks import _uvloop, probe

_uvloop.install()

REDIS = RedisSettings.from_dsn(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))

# arq logs a line per job at INFO; keep warnings only (arq --custom-log-dict)
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["console"], "level": "WARNING"}},
}


async def noop(ctx: dict[str, Any]) -> None:
    probe.hit()


async def stamp(ctx: dict[str, Any], ts: float) -> None:
    probe.stamp(ts)


async def io(ctx: dict[str, Any], ms: int) -> None:
    probe.io_begin()
    await asyncio.sleep(ms / 1000)
    probe.io_end()
    probe.hit()


async def payload(ctx: dict[str, Any], data: str) -> None:
    probe.hit()


async def flaky(ctx: dict[str, Any], i: int) -> None:
    try:
        probe.flaky(i)
    except probe.FlakyError as exc:
        raise Retry(defer=probe.FLAKY_BACKOFF) from exc


class WorkerSettings:
    functions: list[Any] = [noop, stamp, io, payload, func(flaky, max_tries=3)]
    redis_settings = REDIS
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "100"))
    poll_delay = 0.01
    max_tries = 1
    # the queues curve runs one worker process per queue up to 10 queues
    queue_name = os.environ.get("BENCH_QUEUE", "arq:queue")


def serve_queues(queues: Sequence[str], slots: int) -> None:
    """One arq ``Worker`` per queue (``WorkerSettings`` with that ``queue_name`` and
    ``max_jobs=slots``, each with its own connection pool, as arq makes it), all run
    together with ``Worker.async_run()`` in one loop (``benchmarks.many_queues``)."""
    logging.config.dictConfig(LOG_CONFIG)

    async def main() -> None:
        workers = [
            Worker(
                WorkerSettings.functions,
                queue_name=q,
                redis_settings=REDIS,
                max_jobs=slots,
                poll_delay=WorkerSettings.poll_delay,
                max_tries=WorkerSettings.max_tries,
                handle_signals=False,  # one loop, many workers: the runner SIGKILLs
            )
            for q in queues
        ]
        await asyncio.gather(*(w.async_run() for w in workers))

    asyncio.run(main())
