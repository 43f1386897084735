"""Per-job metrics (``App(metrics=True)``): a window of the per-minute counters (the
dashboard's Metrics page, ``asyncjobs top``), and the totals since the beginning
(Prometheus). Percentiles are read from the histograms' buckets."""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import TYPE_CHECKING

import msgspec

from .._metrics import BOUNDS_MS, BUCKETS, minute_stamp, parse_total, quantile, split_field
from ._common import _stores
from ._records import InvalidArgument

if TYPE_CHECKING:
    from .._app import App

__all__ = [
    "JobMetrics",
    "MetricCounts",
    "MetricHistogram",
    "MetricsPoint",
    "MetricsReport",
    "MetricsTotals",
    "job_metrics",
    "metrics_totals",
]

# The longest window: the minute hashes live 72 hours.
MAX_HOURS = 72
# A window's series has at most this many points (1 h: one a minute).
MAX_POINTS = 120


class JobMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """One job's figures over a window. Times are in milliseconds; a percentile is None
    without runs."""

    job: str
    runs: int  # runs that ended (succeeded or failed)
    failures: int
    seconds: float  # total execution time
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    # Dispatch latency: from the job's entry into its queue (enqueued_at) to its start.
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    histogram: list[int]  # execution-time bucket counts (upper bounds: MetricsReport.bounds_ms)
    latency_histogram: list[int]


class MetricsPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a window's series: runs, failures and execution seconds per job."""

    at: dt.datetime  # the step's start (UTC)
    runs: dict[str, int]
    failures: dict[str, int]
    seconds: dict[str, float]


class MetricsReport(msgspec.Struct, frozen=True, kw_only=True):
    """Every job's figures over the last ``hours``, busiest (most execution time) first,
    and their series in steps of ``step_minutes``."""

    start: dt.datetime
    end: dt.datetime
    hours: int
    step_minutes: int
    jobs: list[JobMetrics]
    series: list[MetricsPoint]
    bounds_ms: list[float]  # upper bounds of the histogram buckets; one more bucket after


def _hours(hours: int) -> int:
    if isinstance(hours, bool) or not isinstance(hours, int):
        raise TypeError(f"hours must be an int, got {hours!r}")
    if not 1 <= hours <= MAX_HOURS:
        raise InvalidArgument(
            f"hours must be 1 to {MAX_HOURS} (the per-minute metrics expire after 72 "
            f"hours), got {hours}"
        )
    return hours


async def job_metrics(
    app: App, hours: int = 1, *, job: str | None = None, now: float | None = None
) -> MetricsReport:
    """Every job's runs, failures, execution time and dispatch latency (p50, p95, p99)
    over the last ``hours`` (1 to 72; :class:`InvalidArgument` otherwise), from the
    per-minute counters workers write with ``App(metrics=True)``; ``job``: that job's
    only. One round trip per shard (a pipeline of one ``HGETALL`` per minute)."""
    hours = _hours(hours)
    end = math.floor((time.time() if now is None else now) / 60) * 60
    minutes = hours * 60
    starts = [end - 60 * i for i in range(minutes - 1, -1, -1)]  # oldest first
    stamps = [minute_stamp(t) for t in starts]
    hashes = _summed([await store.metrics_minutes(stamps) for store in await _stores(app)])
    step = max(1, math.ceil(minutes / MAX_POINTS))
    totals: dict[str, dict[str, int]] = {}
    series: list[MetricsPoint] = []
    point: tuple[dict[str, int], dict[str, int], dict[str, float]] | None = None
    for i, (t, fields) in enumerate(zip(starts, hashes, strict=True)):
        if i % step == 0:
            point = ({}, {}, {})
            series.append(
                MetricsPoint(
                    at=dt.datetime.fromtimestamp(t, dt.UTC),
                    runs=point[0],
                    failures=point[1],
                    seconds=point[2],
                )
            )
        assert point is not None
        for field, n in fields.items():
            parts = split_field(field)
            if parts is None:
                continue
            name, kind = parts
            if job is not None and name != job:
                continue
            acc = totals.setdefault(name, {})
            acc[kind] = acc.get(kind, 0) + n
            if kind == "n":
                point[0][name] = point[0].get(name, 0) + n
            elif kind == "f":
                point[1][name] = point[1].get(name, 0) + n
            elif kind == "us":
                point[2][name] = point[2].get(name, 0.0) + n / 1e6
    jobs = [_job(name, acc) for name, acc in totals.items()]
    jobs.sort(key=lambda j: (-j.seconds, j.job))
    return MetricsReport(
        start=dt.datetime.fromtimestamp(starts[0], dt.UTC),
        end=dt.datetime.fromtimestamp(end + 60, dt.UTC),
        hours=hours,
        step_minutes=step,
        jobs=jobs,
        series=series,
        bounds_ms=list(BOUNDS_MS),
    )


def _job(name: str, acc: dict[str, int]) -> JobMetrics:
    runs = acc.get("n", 0)
    execs = [acc.get(f"e{i}", 0) for i in range(BUCKETS)]
    lats = [acc.get(f"l{i}", 0) for i in range(BUCKETS)]
    us = acc.get("us", 0)
    return JobMetrics(
        job=name,
        runs=runs,
        failures=acc.get("f", 0),
        seconds=us / 1e6,
        mean_ms=us / 1000 / runs if runs else None,
        p50_ms=quantile(execs, 0.5),
        p95_ms=quantile(execs, 0.95),
        p99_ms=quantile(execs, 0.99),
        latency_p50_ms=quantile(lats, 0.5),
        latency_p95_ms=quantile(lats, 0.95),
        latency_p99_ms=quantile(lats, 0.99),
        histogram=execs,
        latency_histogram=lats,
    )


class MetricCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Outcomes of one job in one queue since the beginning."""

    queue: str
    job: str
    runs: int  # succeeded or failed
    failed: int
    retried: int
    dead: int
    discarded: int


class MetricHistogram(msgspec.Struct, frozen=True, kw_only=True):
    """A histogram since the beginning: bucket counts (upper bounds ``BOUNDS_MS``, one
    more bucket after) and the sum of the values, in seconds."""

    buckets: list[int]
    sum_seconds: float

    @property
    def count(self) -> int:
        return sum(self.buckets)


class MetricsTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Every counter since the beginning (``{ns}:m:total``), as Prometheus exports them."""

    counts: list[MetricCounts]
    execution: dict[str, MetricHistogram]  # by job
    latency: dict[str, MetricHistogram]  # dispatch latency by queue
    bounds_ms: list[float]


async def metrics_totals(app: App) -> MetricsTotals:
    """The per-job metrics since the beginning, summed over every worker process and
    host: runs, failures, retries, deaths and discards by queue and job, the
    execution-time histogram by job, the dispatch-latency histogram by queue. One
    ``HGETALL`` per shard."""
    (fields,) = _summed([[await store.metrics_totals()] for store in await _stores(app)])
    counts: dict[tuple[str, str], dict[str, int]] = {}
    hists: dict[tuple[str, str], dict[str, int]] = {}
    for field, n in fields.items():
        parsed = parse_total(field)
        if parsed is None:
            continue
        queue, name, kind = parsed
        if queue and name:
            counts.setdefault((queue, name), {})[kind] = n
        elif name:
            hists.setdefault(("e", name), {})[kind] = n
        elif queue:
            hists.setdefault(("l", queue), {})[kind] = n
    execution: dict[str, MetricHistogram] = {}
    latency: dict[str, MetricHistogram] = {}
    for (which, name), acc in sorted(hists.items()):
        prefix, out = ("e", execution) if which == "e" else ("l", latency)
        total_us = acc.get("us" if which == "e" else "lus", 0)
        out[name] = MetricHistogram(
            buckets=[acc.get(f"{prefix}{i}", 0) for i in range(BUCKETS)],
            sum_seconds=total_us / 1e6,
        )
    return MetricsTotals(
        counts=[
            MetricCounts(
                queue=q,
                job=j,
                runs=c.get("n", 0),
                failed=c.get("f", 0),
                retried=c.get("r", 0),
                dead=c.get("d", 0),
                discarded=c.get("x", 0),
            )
            for (q, j), c in sorted(counts.items())
        ],
        execution=execution,
        latency=latency,
        bounds_ms=list(BOUNDS_MS),
    )


def _summed(per_store: list[list[dict[str, int]]]) -> list[dict[str, int]]:
    """Each shard's hashes added up, field by field (one store: its own, unchanged).
    With ``App(shards=N)`` every shard's workers write the metrics of its jobs in its
    own slot, next to the keys its acknowledgements touch."""
    first, *rest = per_store
    if not rest:
        return first
    out = [dict(h) for h in first]
    for hashes in rest:
        for merged, h in zip(out, hashes, strict=True):
            for field, n in h.items():
                merged[field] = merged.get(field, 0) + n
    return out
