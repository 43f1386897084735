"""asyncjobs' job side: the app and two jobs (see benchmarks.probe)."""

from __future__ import annotations

import asyncio
import os

import asyncjobs
from benchmarks import _uvloop, probe

app = asyncjobs.App(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


@app.job(retry=0)
async def noop() -> None:
    probe.hit()


@app.job(retry=0)
async def stamp(ts: float) -> None:
    probe.stamp(ts)


# -- the curves' jobs (benchmarks/curves.py) ---------------------------------------


@app.job(retry=0)
async def io(ms: int) -> None:
    probe.io_begin()
    await asyncio.sleep(ms / 1000)
    probe.io_end()
    probe.hit()


@app.job(retry=0)
async def payload(data: str) -> None:
    probe.hit()


def _flaky_backoff(count: int, exc: BaseException) -> float:
    return probe.FLAKY_BACKOFF


@app.job(retry=2, retry_in=_flaky_backoff, dead=False, backtrace=False)
async def flaky(i: int) -> None:
    probe.flaky(i)


def run_inprocess() -> None:
    """Run ``app.worker(queues=["default"], concurrency=N).run()`` (no CLI needed)."""
    concurrency = int(os.environ.get("BENCH_CONCURRENCY", "100"))

    async def main() -> None:
        await app.worker(queues=["default"], concurrency=concurrency).run()

    _uvloop.run(main())


if __name__ == "__main__":
    # Run as ``python -m benchmarks.jobs_asyncjobs``, this file is ``__main__``: its jobs
    # would be registered under that module's name, not the one the client defers. Run
    # the worker of the module the client imports.
    from benchmarks import jobs_asyncjobs

    jobs_asyncjobs.run_inprocess()
