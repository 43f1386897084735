"""dramatiq's job side: a Redis broker and two actors (see benchmarks.probe)."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks import probe

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    probe.hit()


@dramatiq.actor(max_retries=0)
def stamp(ts: float) -> None:
    probe.stamp(ts)
