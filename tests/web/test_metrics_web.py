"""The dashboard's Metrics page and Prometheus endpoint, in process (httpx over ASGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

import asyncjobs
from asyncjobs.web import create_app
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def mapp(redis_url: str) -> AsyncIterator[asyncjobs.App]:
    application = asyncjobs.App(redis_url, metrics=True)
    yield application
    await application.aclose()


@pytest.fixture
async def client(mapp: asyncjobs.App) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(mapp, auth=None, secret="s"))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
        yield c


async def _run_some(mapp: asyncjobs.App, redis: aioredis.Redis) -> None:
    @mapp.job(name="report.<build>")
    async def build(n: int) -> None:
        await anyio.sleep(0.02)

    @mapp.job(name="mailer", retry=0)
    async def mailer() -> None:
        raise RuntimeError("smtp down")

    for i in range(5):
        await build.defer(i)
    await mailer.defer()
    async with mapp.run_worker(concurrency=10):

        async def done() -> bool:
            return await redis.get("{asyncjobs}:stat:processed") == b"6"

        await wait_for(done)


async def test_metrics_page_lists_jobs_with_percentiles(
    mapp: asyncjobs.App, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    await _run_some(mapp, redis)
    r = await client.get("/metrics/jobs")
    assert r.status_code == 200
    html = r.text
    assert "report.&lt;build&gt;" in html and "<build>" not in html  # escaped
    assert "mailer" in html and "<polyline" in html
    row = html[html.index("report.&lt;build&gt;</a>") :]
    row = row[: row.index("</tr>")]
    assert '<td class="num">5</td>' in row  # runs
    assert " ms</td>" in row  # the percentiles
    # The range tabs and a filter.
    r = await client.get("/metrics/jobs?hours=24&filter=mail")
    assert "mailer" in r.text and "report.&lt;build&gt;" not in r.text
    assert 'class="tab active">24 h' in r.text
    r = await client.get("/metrics/jobs?hours=999&chart=runs")
    assert r.status_code == 200 and 'class="tab active">1 h' in r.text
    # One job: its histograms.
    r = await client.get("/metrics/jobs/report.%3Cbuild%3E?hours=8")
    assert r.status_code == 200
    assert 'aria-label="Execution time histogram"' in r.text
    assert r.text.count('<div style="height: 100.0%"') >= 2  # a tallest bar in each


async def test_metrics_page_without_metrics_says_how_to_turn_them_on(app: asyncjobs.App) -> None:
    transport = httpx.ASGITransport(app=create_app(app, auth=None, secret="s"))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
        r = await c.get("/metrics/jobs")
        assert r.status_code == 200
        assert "App(metrics=True)" in r.text
        r = await c.get("/metrics/jobs/nothing")
        assert "No runs of nothing" in r.text


async def test_prometheus_endpoint(
    mapp: asyncjobs.App, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    await _run_some(mapp, redis)
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
    }
    key = ("asyncjobs_jobs_processed_total", (("job", "report.<build>"), ("queue", "default")))
    assert found[key] == 5
    dead = ("asyncjobs_jobs_dead_total", (("job", "mailer"), ("queue", "default")))
    assert found[dead] == 1
