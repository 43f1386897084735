"""taskiq's job side: a taskiq-redis broker and two tasks (see benchmarks.probe).

``BENCH_TASKIQ_BROKER`` picks the broker: ``stream`` (``RedisStreamBroker``: consumer
group, acknowledged messages) or ``list`` (``ListQueueBroker``: ``BRPOP``, no acks).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from taskiq.receiver import Receiver
from taskiq_redis import ListQueueBroker, RedisStreamBroker

from benchmarks import _uvloop, probe

_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
_kind = os.environ.get("BENCH_TASKIQ_BROKER", "stream")


def make_broker(queue_name: str) -> RedisStreamBroker | ListQueueBroker:
    if _kind == "list":
        return ListQueueBroker(_url, queue_name=queue_name)
    return RedisStreamBroker(_url, queue_name=queue_name)


# the queues curve runs one worker process per queue (BENCH_QUEUE) up to 10 queues
broker = make_broker(os.environ.get("BENCH_QUEUE", "bench"))


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


def serve_queues(queues: Sequence[str], slots: int) -> None:
    """One taskiq broker per queue (this module's tasks registered on each) and one
    ``Receiver`` per broker (``max_async_tasks=slots``, one shared thread pool), all
    listening in one uvloop loop, as ``taskiq worker`` runs one receiver in each of its
    processes (``benchmarks.many_queues``; no process manager above them)."""
    _uvloop.install()

    async def main() -> None:
        finish = asyncio.Event()
        with ThreadPoolExecutor() as pool:
            receivers = []
            for name in queues:
                b = make_broker(name)
                b.is_worker_process = True
                for task_name, task in broker.get_all_tasks().items():
                    b.register_task(task.original_func, task_name=task_name, **task.labels)
                receivers.append(Receiver(b, executor=pool, max_async_tasks=slots))
            await asyncio.gather(*(r.listen(finish) for r in receivers))

    asyncio.run(main())
