"""top, metrics: a live terminal view (rich, like sidekiqmon) and the Prometheus
exposition (printed once, or served with --bind)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._admin import AppOpt, NsOpt, UrlOpt, _admin_app, _run_admin
from ._base import _guard, app, fail, run_async

if TYPE_CHECKING:
    from rich.console import RenderableType

    from .. import api as api_mod


class Snapshot:
    """What one refresh of ``asyncjobs top`` read."""

    def __init__(
        self,
        at: float,
        stats: api_mod.Stats,
        queues: list[api_mod.QueueInfo],
        paused: list[str],
        procs: list[api_mod.ProcessInfo],
        jobs: api_mod.MetricsReport | None,
        namespace: str = "asyncjobs",
    ) -> None:
        self.at = at
        self.stats = stats
        self.queues = queues
        self.paused = set(paused)
        self.procs = procs
        self.jobs = jobs
        self.namespace = namespace


async def read_snapshot(application: Any, with_jobs: bool = True) -> Snapshot:
    """Everything top shows, read now (a handful of round trips)."""
    from .. import api

    stats = await api.Stats.fetch(application, days=1)
    queues = await api.queues(application)
    paused = await api.paused_queues(application)
    procs = await api.ProcessSet(application).list()
    jobs = await api.job_metrics(application, 1) if with_jobs else None
    namespace = application.keys.namespace
    return Snapshot(time.time(), stats, queues, paused, procs, jobs, namespace)


def _secs(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def _ms(value: float | None) -> str:
    return "–" if value is None else _secs(value / 1000)


def render(snap: Snapshot, before: Snapshot | None) -> RenderableType:
    """The screen for one snapshot; rates come from the one before (none at first)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    s = snap.stats
    rates = "rates: –"
    if before is not None and snap.at > before.at:
        dt_s = snap.at - before.at
        pr = max(0, s.processed - before.stats.processed) / dt_s
        fr = max(0, s.failed - before.stats.failed) / dt_s
        rates = f"rates: {pr:,.1f} processed/s, {fr:,.1f} failed/s"
    head = Text.assemble(
        (time.strftime("%H:%M:%S", time.localtime(snap.at)), "bold"),
        f"  namespace {snap.namespace}  ",
        f"processed {s.processed:,}  failed {s.failed:,}  busy {s.busy}  enqueued "
        f"{s.enqueued:,}  scheduled {s.scheduled:,}  retries {s.retries:,}  dead {s.dead:,}\n",
        rates,
    )
    procs = Table(title=f"Processes ({len(snap.procs)})", expand=True, title_justify="left")
    for col in ("process", "tag", "started", "busy", "rss", "state"):
        procs.add_column(col, justify="right" if col in ("busy", "rss") else "left")
    for p in snap.procs:
        state = "quiet" if p.quiet else ("unhealthy" if p.unhealthy else "running")
        procs.add_row(
            f"{p.hostname}:{p.pid}",
            p.tag,
            _secs(max(0.0, snap.at - p.started_at)) + " ago" if p.started_at else "",
            f"{p.busy}/{p.concurrency}",
            f"{p.rss / 1024:.0f} MiB" if p.rss else "",
            state,
        )
    queues = Table(title=f"Queues ({len(snap.queues)})", expand=True, title_justify="left")
    for col in ("queue", "size", "latency", "state"):
        queues.add_column(col, justify="right" if col in ("size", "latency") else "left")
    for q in snap.queues:
        queues.add_row(
            q.name, f"{q.size:,}", _secs(q.latency), "paused" if q.name in snap.paused else ""
        )
    parts: list[RenderableType] = [head, procs, queues]
    if snap.jobs is not None and snap.jobs.jobs:
        jobs = Table(title="Jobs, last hour", expand=True, title_justify="left")
        for col in ("job", "runs", "failed", "p50", "p95", "p99", "latency p95"):
            jobs.add_column(col, justify="left" if col == "job" else "right")
        for j in snap.jobs.jobs[:10]:
            jobs.add_row(
                j.job,
                f"{j.runs:,}",
                f"{j.failures:,}",
                _ms(j.p50_ms),
                _ms(j.p95_ms),
                _ms(j.p99_ms),
                _ms(j.latency_p95_ms),
            )
        parts.append(jobs)
    return Group(*parts)


@app.command()
def top(
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Print one view and exit.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, help="Seconds between refreshes.")
    ] = 2.0,
) -> None:
    """A live view of processes, busy, queues (size, latency) and rates, refreshed until
    Ctrl-C; per-job figures when workers run with App(metrics=True)."""
    from rich.console import Console

    console = Console()
    if once:
        snap = _run_admin(app_spec, redis_url, namespace, read_snapshot)
        console.print(render(snap, None))
        return
    application = _guard(lambda: _admin_app(app_spec, redis_url, namespace))

    async def loop() -> None:
        import anyio
        from rich.live import Live

        before: Snapshot | None = None
        try:
            with Live(console=console, auto_refresh=False, screen=False) as live:
                while True:
                    snap = await read_snapshot(application)
                    live.update(render(snap, before), refresh=True)
                    before = snap
                    await anyio.sleep(interval)
        finally:
            await application.aclose()

    try:
        _guard(lambda: run_async(loop))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def metrics(
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    bind: Annotated[
        str | None,
        typer.Option(
            "--bind", "-b", help="HOST:PORT to serve /metrics on; without it, print once."
        ),
    ] = None,
) -> None:
    """The Prometheus metrics, read from Redis at each scrape: served on --bind until
    Ctrl-C, else printed once. Needs the metrics extra (prometheus_client)."""
    try:
        from ..prometheus import AsyncJobsCollector, render
    except ImportError:
        fail("asyncjobs metrics needs prometheus_client: pip install 'asyncjobs-redis[metrics]'")
    if bind is None:
        text: bytes = _run_admin(app_spec, redis_url, namespace, render)
        typer.echo(text.decode(), nl=False)
        return
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not host:
        fail(f"--bind {bind}: give HOST:PORT, such as 127.0.0.1:9191")
    import threading

    from prometheus_client import CollectorRegistry, start_http_server

    application = _guard(lambda: _admin_app(app_spec, redis_url, namespace))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AsyncJobsCollector(application))
    try:
        server, thread = start_http_server(int(port), host.strip("[]"), registry=registry)
    except OSError as exc:
        fail(f"--bind {bind}: cannot listen there ({exc.strerror or exc})")
    typer.echo(f"serving Prometheus metrics on http://{bind}/metrics (Ctrl-C to stop)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
