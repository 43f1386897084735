"""saq's job side: the queue, the worker settings and two jobs (see benchmarks.probe).

uvloop's policy is installed at import, so the loop saq's CLI creates is uvloop's.
"""

from __future__ import annotations

import os
from typing import Any

from saq import Queue

from benchmarks import _uvloop, probe

_uvloop.install()

queue = Queue.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"), name="bench")


async def noop(ctx: dict[str, Any]) -> None:
    probe.hit()


async def stamp(ctx: dict[str, Any], *, ts: float) -> None:
    probe.stamp(ts)


settings: dict[str, Any] = {
    "queue": queue,
    "functions": [noop, stamp],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "100")),
}
