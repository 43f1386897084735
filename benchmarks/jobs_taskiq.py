"""taskiq's job side: a taskiq-redis broker and two tasks (see benchmarks.probe).

``BENCH_TASKIQ_BROKER`` picks the broker: ``stream`` (``RedisStreamBroker``: consumer
group, acknowledged messages) or ``list`` (``ListQueueBroker``: ``BRPOP``, no acks).
"""

from __future__ import annotations

import asyncio
import os

from taskiq_redis import ListQueueBroker, RedisStreamBroker

from benchmarks import probe

_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
_kind = os.environ.get("BENCH_TASKIQ_BROKER", "stream")

# the queues curve runs one worker process per queue
_queue = os.environ.get("BENCH_QUEUE", "bench")
broker: RedisStreamBroker | ListQueueBroker = (
    ListQueueBroker(_url, queue_name=_queue)
    if _kind == "list"
    else RedisStreamBroker(_url, queue_name=_queue)
)


@broker.task(task_name="noop")
async def noop() -> None:
    probe.hit()


@broker.task(task_name="stamp")
async def stamp(ts: float) -> None:
    probe.stamp(ts)


@broker.task(task_name="io")
async def io(ms: int) -> None:
    probe.io_begin()
    await asyncio.sleep(ms / 1000)
    probe.io_end()
    probe.hit()


@broker.task(task_name="payload")
async def payload(data: str) -> None:
    probe.hit()
