"""rq's job side: two plain functions (see benchmarks.probe).

rq's default worker forks a child per job, so its workers run with
``BENCH_PROBE_MODE=direct``: the probe writes to the control Redis from the child.
"""

from __future__ import annotations

from benchmarks import probe


def noop() -> None:
    probe.hit()


def stamp(ts: float) -> None:
    probe.stamp(ts)
