"""Prometheus (asyncjobs.prometheus): a scrape during a run of two worker processes,
parsed by prometheus_client's own parser, matches what ran; the collector in a user's
registry; the dashboard's /metrics; asyncjobs metrics."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import asyncjobs
from asyncjobs import api
from asyncjobs.prometheus import AsyncJobsCollector
from tests.apps import metered
from tests.conftest import WORKER_CMD, cli, subprocess_env, text, wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        if p.stdout is not None:
            print(p.stdout.read().decode(errors="replace")[-3000:])  # noqa: T201
            p.stdout.close()


def _spawn(procs: list[subprocess.Popen[bytes]], redis_url: str, *args: str) -> None:
    """Start ``asyncjobs ARGS`` against the test Redis; its output shown on failure."""
    procs.append(
        subprocess.Popen(
            [*WORKER_CMD, *args],
            env=subprocess_env(redis_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and labels (prometheus_client's parser)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def _defer_all(redis_url: str) -> None:
    metered.app.redis_url = redis_url
    try:
        await metered.work.defer_many([(n, 0.01) for n in range(60)])
        await metered.work.configure(queue="bulk").defer_many([(n, 0.0) for n in range(40)])
        for _ in range(5):
            await metered.dies.defer()
        for _ in range(3):
            await metered.discarded.defer()
        for _ in range(4):
            await metered.retried.defer()
    finally:
        await metered.app.aclose()


async def test_scrape_of_two_worker_processes_matches_what_ran(
    redis_url: str, redis: aioredis.Redis, procs: list[subprocess.Popen[bytes]]
) -> None:
    worker = ("worker", "tests.apps.metered:app", "--processes", "2", "-c", "4")
    _spawn(procs, redis_url, *worker, "-q", "default", "-q", "bulk")

    async def registered() -> bool:
        return await redis.scard("{asyncjobs}:processes") == 2

    await wait_for(registered, timeout=30)
    await _defer_all(redis_url)

    async def all_processed() -> bool:
        raw = await redis.get("{asyncjobs}:stat:processed")
        return raw is not None and int(raw) == 112

    await wait_for(all_processed, timeout=30)
    reader = asyncjobs.App(redis_url)

    async def measured() -> bool:  # each process writes its last metrics when idle
        totals = await api.metrics_totals(reader)
        return sum(c.runs for c in totals.counts) == 112

    try:
        await wait_for(measured, timeout=10)
    finally:
        await reader.aclose()
    pids = {text(p) for p in await redis.lrange("test:pids", 0, -1)}
    assert len(pids) == 2, pids  # both processes ran jobs: the scrape must sum them

    port = _free_port()
    _spawn(procs, redis_url, "metrics", "--bind", f"127.0.0.1:{port}")
    body = ""
    async with httpx.AsyncClient() as client:

        async def scraped() -> bool:
            nonlocal body
            try:
                resp = await client.get(f"http://127.0.0.1:{port}/metrics")
            except httpx.TransportError:
                return False
            body = resp.text if resp.status_code == 200 else ""
            return bool(body)

        await wait_for(scraped, timeout=20, interval=0.1)
    found = samples(body)
    work, dies = "tests.apps.metered.work", "tests.apps.metered.dies"
    discarded, retried = "tests.apps.metered.discarded", "tests.apps.metered.retried"
    processed = "asyncjobs_jobs_processed_total"
    assert value(found, processed, queue="default", job=work) == 60
    assert value(found, processed, queue="bulk", job=work) == 40
    assert value(found, processed, queue="default", job=dies) == 5
    assert value(found, "asyncjobs_jobs_failed_total", queue="default", job=dies) == 5
    assert value(found, "asyncjobs_jobs_dead_total", queue="default", job=dies) == 5
    assert value(found, "asyncjobs_jobs_discarded_total", queue="default", job=discarded) == 3
    assert value(found, "asyncjobs_jobs_retried_total", queue="default", job=retried) == 4
    assert value(found, "asyncjobs_jobs_failed_total", queue="default", job=work) == 0
    total = sum(v for (name, _), v in found.items() if name == processed)
    assert total == 112 == value(found, "asyncjobs_processed_total")
    assert value(found, "asyncjobs_failed_total") == 12
    # Histograms: one observation per run; the 10 ms naps are not in the 1 ms bucket.
    assert value(found, "asyncjobs_job_execution_seconds_count", job=work) == 100
    assert value(found, "asyncjobs_job_execution_seconds_bucket", job=work, le="+Inf") == 100
    assert value(found, "asyncjobs_job_execution_seconds_bucket", job=work, le="0.001") <= 40
    assert value(found, "asyncjobs_job_execution_seconds_sum", job=work) >= 0.6
    assert value(found, "asyncjobs_job_dispatch_latency_seconds_count", queue="default") == 72
    assert value(found, "asyncjobs_job_dispatch_latency_seconds_count", queue="bulk") == 40
    assert value(found, "asyncjobs_retry_jobs") == 4
    assert value(found, "asyncjobs_dead_jobs") == 5
    assert value(found, "asyncjobs_queue_size", queue="default") == 0
    conc = [k for k in found if k[0] == "asyncjobs_process_concurrency"]
    assert len(conc) == 2 and all(found[k] == 4 for k in conc)


async def test_collector_in_a_users_registry(redis_url: str, redis: aioredis.Redis) -> None:
    app = asyncjobs.App(redis_url, metrics=True)

    @app.job(name="hello")
    async def hello() -> None:
        pass

    try:
        await hello.defer()
        async with app.run_worker():

            async def done() -> bool:
                return await redis.get("{asyncjobs}:stat:processed") == b"1"

            await wait_for(done)
        registry = CollectorRegistry()
        registry.register(AsyncJobsCollector(app))
        # collect() is synchronous and reads Redis on a thread of its own: called from
        # inside this running event loop, it still works.
        found = samples(generate_latest(registry).decode())
    finally:
        await app.aclose()
    assert value(found, "asyncjobs_jobs_processed_total", queue="default", job="hello") == 1
    assert value(found, "asyncjobs_queue_size", queue="default") == 0


async def test_collector_reports_an_unreachable_redis() -> None:
    app = asyncjobs.App(f"redis://127.0.0.1:{_free_port()}")
    registry = CollectorRegistry()
    registry.register(AsyncJobsCollector(app, timeout=3))
    with pytest.raises(asyncjobs.RedisUnavailable):
        generate_latest(registry)


async def test_cli_metrics_prints_once_and_refuses_a_bad_bind(redis_url: str) -> None:
    r = await cli(redis_url, "metrics")
    assert r.returncode == 0, r.stderr
    names = {f.name for f in text_string_to_metric_families(r.stdout.decode())}
    assert {"asyncjobs_jobs_processed", "asyncjobs_queue_size"} <= names
    r = await cli(redis_url, "metrics", "--bind", "nowhere")
    assert r.returncode == 2
    assert r.stderr.decode().strip() == (
        "asyncjobs: error: --bind nowhere: give HOST:PORT, such as 127.0.0.1:9191"
    )
