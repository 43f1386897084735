"""rq's job side: two plain functions (see benchmarks.probe).

rq's default worker forks a child per job, so its workers run with
``BENCH_PROBE_MODE=direct``: the probe writes to the control Redis from the child.
"""

from __future__ import annotations

import time

from benchmarks import probe


def noop() -> None:
    probe.hit()


def stamp(ts: float) -> None:
    probe.stamp(ts)


def io(ms: int) -> None:
    probe.io_begin()
    time.sleep(ms / 1000)
    probe.io_end()
    probe.hit()


def payload(data: str) -> None:
    probe.hit()


def flaky(i: int) -> None:
    probe.flaky(i)  # Retry(max=2, interval=FLAKY_BACKOFF) is set at enqueue
