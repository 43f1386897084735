"""Prometheus metrics of an asyncjobs app, read from Redis at scrape time.

Every figure comes from Redis when Prometheus scrapes, so it covers every worker
process and host, survives restarts, and is right with ``--processes N``. Needs
``prometheus_client`` (``pip install 'asyncjobs-redis[metrics]'``); the per-job
counters and histograms need workers of an app made with ``App(metrics=True)``.

Three ways to serve them: the dashboard's ``/metrics`` (``asyncjobs.web``), ``asyncjobs
metrics --bind HOST:PORT``, or :class:`AsyncJobsCollector` in your own registry:

```python
from prometheus_client import REGISTRY
from asyncjobs.prometheus import AsyncJobsCollector

REGISTRY.register(AsyncJobsCollector(app))
```

The metrics (``asyncjobs_`` prefix): ``jobs_processed_total``, ``jobs_failed_total``,
``jobs_retried_total``, ``jobs_dead_total``, ``jobs_discarded_total`` by queue and
job; ``job_execution_seconds`` (histogram) by job; ``job_dispatch_latency_seconds``
(histogram) by queue; ``queue_size`` and ``queue_latency_seconds`` by queue;
``scheduled_jobs``, ``retry_jobs``, ``dead_jobs``; ``process_busy`` and
``process_concurrency`` by process; ``processed_total`` and ``failed_total`` (the
dashboard's counters, with or without ``metrics=True``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "asyncjobs.prometheus needs prometheus_client: pip install 'asyncjobs-redis[metrics]'"
    ) from exc

from . import api

if TYPE_CHECKING:
    from ._app import App

__all__ = ["CONTENT_TYPE_LATEST", "AsyncJobsCollector", "families", "render"]

# How long a scrape may wait for Redis.
SCRAPE_TIMEOUT = 10.0

_COUNTS = (
    ("jobs_processed", "runs", "Jobs that ran to an outcome (succeeded or failed)"),
    ("jobs_failed", "failed", "Jobs that raised (then retried, dead or discarded)"),
    ("jobs_retried", "retried", "Failed jobs sent to the retry set"),
    ("jobs_dead", "dead", "Failed jobs sent to the dead set"),
    ("jobs_discarded", "discarded", "Failed jobs discarded"),
)


def _buckets(counts: list[int], bounds_ms: list[float]) -> list[tuple[str, float]]:
    """Cumulative ``le`` buckets in seconds, ending with +Inf."""
    out: list[tuple[str, float]] = []
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        le = repr(bounds_ms[i] / 1000) if i < len(bounds_ms) else "+Inf"
        out.append((le, float(seen)))
    return out


async def families(app: App) -> list[Metric]:
    """Every metric family, read from Redis now (three or four round trips)."""
    totals = await api.metrics_totals(app)
    stats = await api.Stats.fetch(app, days=1)
    queues = await api.queues(app)
    procs = await api.ProcessSet(app).list()
    out: list[Metric] = []
    for name, attr, doc in _COUNTS:
        fam = CounterMetricFamily(f"asyncjobs_{name}", doc, labels=["queue", "job"])
        for c in totals.counts:
            fam.add_metric([c.queue, c.job], getattr(c, attr))
        out.append(fam)
    execution = HistogramMetricFamily(
        "asyncjobs_job_execution_seconds", "Execution time of jobs, by job", labels=["job"]
    )
    for job, h in totals.execution.items():
        execution.add_metric([job], _buckets(h.buckets, totals.bounds_ms), h.sum_seconds)
    out.append(execution)
    latency = HistogramMetricFamily(
        "asyncjobs_job_dispatch_latency_seconds",
        "Time from a job's entry into its queue to its start, by queue",
        labels=["queue"],
    )
    for queue, h in totals.latency.items():
        latency.add_metric([queue], _buckets(h.buckets, totals.bounds_ms), h.sum_seconds)
    out.append(latency)
    size = GaugeMetricFamily("asyncjobs_queue_size", "Jobs waiting in a queue", labels=["queue"])
    age = GaugeMetricFamily(
        "asyncjobs_queue_latency_seconds",
        "Age of the oldest job waiting in a queue",
        labels=["queue"],
    )
    for q in queues:
        size.add_metric([q.name], q.size)
        age.add_metric([q.name], q.latency)
    out += [size, age]
    for name, value, doc in (
        ("scheduled_jobs", stats.scheduled, "Jobs in the schedule set"),
        ("retry_jobs", stats.retries, "Jobs in the retry set"),
        ("dead_jobs", stats.dead, "Jobs in the dead set"),
    ):
        out.append(GaugeMetricFamily(f"asyncjobs_{name}", doc, value=value))
    out.append(CounterMetricFamily("asyncjobs_processed", "Jobs processed", value=stats.processed))
    out.append(CounterMetricFamily("asyncjobs_failed", "Jobs failed", value=stats.failed))
    busy = GaugeMetricFamily(
        "asyncjobs_process_busy", "Jobs a worker process runs", labels=["process", "hostname"]
    )
    conc = GaugeMetricFamily(
        "asyncjobs_process_concurrency",
        "Jobs a worker process may run at once",
        labels=["process", "hostname"],
    )
    for p in procs:
        busy.add_metric([p.id, p.hostname], p.busy)
        conc.add_metric([p.id, p.hostname], p.concurrency)
    out += [busy, conc]
    return out


class _Static(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


async def render(app: App) -> bytes:
    """The text exposition of :func:`families` (for an async endpoint; content type
    :data:`CONTENT_TYPE_LATEST`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(await families(app)))
    return generate_latest(registry)


class AsyncJobsCollector(Collector):
    """A collector to register in a ``prometheus_client`` registry: each scrape reads
    Redis through an app of the same URL, namespace and cluster setting, on a thread of
    its own (``collect`` is synchronous and may be called from any thread, even one
    running an event loop)."""

    def __init__(self, app: App, *, timeout: float = SCRAPE_TIMEOUT) -> None:
        self.url = app.redis_url
        self.namespace = app.keys.namespace
        self.cluster = app.cluster
        self.timeout = timeout

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: names come from Redis at scrape

    def collect(self) -> Iterator[Metric]:
        box: dict[str, Any] = {}

        def scrape() -> None:
            try:
                box["metrics"] = asyncio.run(self._read())
            except BaseException as exc:
                box["error"] = exc

        t = threading.Thread(target=scrape, name="asyncjobs-scrape", daemon=True)
        t.start()
        t.join(self.timeout + 1)
        if "error" in box:
            raise box["error"]
        if "metrics" not in box:
            raise TimeoutError(f"asyncjobs: Redis did not answer within {self.timeout}s")
        return iter(box["metrics"])

    async def _read(self) -> list[Metric]:
        from ._app import App

        app = App(self.url, namespace=self.namespace, cluster=self.cluster)
        try:
            return await asyncio.wait_for(families(app), self.timeout)
        finally:
            await app.aclose()
