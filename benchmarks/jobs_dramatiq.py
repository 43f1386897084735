"""dramatiq's job side: a Redis broker and two actors (see benchmarks.probe)."""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks import probe

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)
# the queues curve: the worker consumes every declared queue
for _queue in filter(None, os.environ.get("BENCH_QUEUES", "").split(",")):
    broker.declare_queue(_queue)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    probe.hit()


@dramatiq.actor(max_retries=0)
def stamp(ts: float) -> None:
    probe.stamp(ts)


@dramatiq.actor(max_retries=0)
def io(ms: int) -> None:
    probe.io_begin()
    time.sleep(ms / 1000)
    probe.io_end()
    probe.hit()


@dramatiq.actor(max_retries=0)
def payload(data: str) -> None:
    probe.hit()


_BACKOFF_MS = int(probe.FLAKY_BACKOFF * 1000)


@dramatiq.actor(max_retries=2, min_backoff=_BACKOFF_MS, max_backoff=_BACKOFF_MS)
def flaky(i: int) -> None:
    probe.flaky(i)
