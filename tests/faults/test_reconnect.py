"""The client side across a Redis restart: ``defer`` reconnects by itself, and the
connection it drops is closed, not leaked.

redis-py warns (``ResourceWarning: unclosed Connection``) when a connection object is
garbage-collected while still open; the suite turns warnings into errors. A long-lived
web app that defers jobs through a few Redis restarts or failovers must not leak one
connection per reconnect.
"""

from __future__ import annotations

import gc
import time
import warnings

import anyio
import pytest

import asyncjobs
from tests.apps import faulty
from tests.devserver import RedisProcess
from tests.faults._support import report

pytestmark = pytest.mark.faults

RESTARTS = 3


@pytest.mark.timeout(60)
async def test_defer_across_redis_restarts_leaks_no_connection() -> None:
    refused = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with RedisProcess() as server:
            app = asyncjobs.App(server.url)
            job = app.job(name=faulty.record.name)(faulty.record.fn)
            try:
                await job.defer(0, 0.0)
                for i in range(1, RESTARTS + 1):
                    server.kill()
                    await anyio.to_thread.run_sync(server.restart)
                    deadline = time.monotonic() + 10
                    while True:
                        try:
                            await job.defer(i, 0.0)
                            break
                        except asyncjobs.RedisUnavailable:
                            refused += 1
                            assert time.monotonic() < deadline, "defer never reconnected"
                            await anyio.sleep(0.05)
            finally:
                await app.aclose()
            del app, job
            gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    report("reconnect", restarts=RESTARTS, refused_defers=refused, leaked_connections=len(leaks))
    assert not leaks, f"{len(leaks)} connections leaked across {RESTARTS} restarts: {leaks[0]}"
