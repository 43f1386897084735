"""taskiq's job side: a taskiq-redis broker and two tasks (see benchmarks.probe).

``BENCH_TASKIQ_BROKER`` picks the broker: ``stream`` (``RedisStreamBroker``: consumer
group, acknowledged messages) or ``list`` (``ListQueueBroker``: ``BRPOP``, no acks).
"""

from __future__ import annotations

import os

from taskiq_redis import ListQueueBroker, RedisStreamBroker

from benchmarks import probe

_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
_kind = os.environ.get("BENCH_TASKIQ_BROKER", "stream")

broker: RedisStreamBroker | ListQueueBroker = (
    ListQueueBroker(_url, queue_name="bench")
    if _kind == "list"
    else RedisStreamBroker(_url, queue_name="bench")
)


@broker.task(task_name="noop")
async def noop() -> None:
    probe.hit()


@broker.task(task_name="stamp")
async def stamp(ts: float) -> None:
    probe.stamp(ts)
