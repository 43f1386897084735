"""celery's job side: the app (Redis broker, no result backend) and two tasks."""

from __future__ import annotations

import os

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
