"""celery's job side: the app (Redis broker, no result backend) and two tasks."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from benchmarks import probe

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_default_queue="bench",
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)


@app.task(name="noop")
def noop() -> None:
    probe.hit()


@app.task(name="stamp")
def stamp(ts: float) -> None:
    probe.stamp(ts)


@app.task(name="io")
def io(ms: int) -> None:
    probe.io_begin()
    time.sleep(ms / 1000)
    probe.io_end()
    probe.hit()


@app.task(name="payload")
def payload(data: str) -> None:
    probe.hit()


@app.task(name="flaky", bind=True, max_retries=2)
def flaky(self: Any, i: int) -> None:
    try:
        probe.flaky(i)
    except probe.FlakyError as exc:
        raise self.retry(exc=exc, countdown=probe.FLAKY_BACKOFF) from exc
