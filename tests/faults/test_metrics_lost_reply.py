"""Per-job metrics when the reply of the call that wrote them is lost: the acker sends
the same increments again, with the same token, and the script writes a token once, so
every run is counted exactly once (App(metrics=True))."""

from __future__ import annotations

import anyio
import pytest

import asyncjobs
from asyncjobs import api
from asyncjobs._worker import metrics
from tests.conftest import running, wait_for
from tests.devserver import RedisProcess
from tests.faults.test_lost_replies import ReplyDropper

pytestmark = pytest.mark.faults


@pytest.mark.timeout(60)
async def test_metrics_written_by_a_call_whose_reply_was_lost_count_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Metrics go out only with the first acknowledgement and then when the worker is
    # idle (calls of their own, without outcomes): the call that loses its reply is one
    # of those, whose outcomes-based guard would have nothing to go by.
    monkeypatch.setattr(metrics, "EVERY", 3600.0)
    with RedisProcess() as server, ReplyDropper(server.port) as proxy:
        app = asyncjobs.App(proxy.url, metrics=True)  # the worker, behind the proxy
        reader = asyncjobs.App(server.url)  # reads Redis directly

        @app.job(name="count")
        async def count(n: int) -> None:
            pass

        async def runs() -> int:
            return sum(c.runs for c in (await api.metrics_totals(reader)).counts)

        async def equals(n: int) -> bool:
            return await runs() == n

        try:
            async with running(app.worker(concurrency=10)):
                await count.defer(0)
                await wait_for(lambda: equals(1), timeout=10)
                proxy.arm(b":m:last:")  # only calls that carry metrics name this key
                await count.defer_many([(n,) for n in range(1, 21)])
                await wait_for(lambda: proxy.dropped > 0, timeout=10)
                await wait_for(lambda: equals(21), timeout=10)
                await anyio.sleep(1.0)  # the retries are over: still 21, not 41
                assert await runs() == 21
                stats = await api.Stats.fetch(reader, days=1)
                assert stats.processed == 21
            assert await runs() == 21
            report = await api.job_metrics(reader, 1)
            assert [(j.job, j.runs) for j in report.jobs] == [("count", 21)]
        finally:
            await app.aclose()
            await reader.aclose()
