"""Workers of the two floors: bare redis-py and the framework-free drain.

Run as ``python -m benchmarks.jobs_floor brpop`` or ``... drain``; both read
``BENCH_REDIS_URL`` and ``BENCH_CONCURRENCY`` from the environment.

* ``brpop``: one ``BRPOP`` at a time, decode the payload, run ``probe.stamp`` inline.
  The floor of idle pickup latency.
* ``drain``: ``RPOP key count`` (up to 100, never more than the free slots of the
  concurrency), msgspec decode, one asyncio task per job running the no-op body. No
  in-flight record, no acks, no timeouts, no middleware: the floor of the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import msgspec
import redis.asyncio as aioredis

from benchmarks import probe

QUEUE = "bench:floor:queue"
BATCH = 100


class Payload(msgspec.Struct):
    """A job payload shaped like a typical job runner's (Sidekiq-style field names)."""

    jid: str
    queue: str
    func: str
    args: list[Any]
    created_at: float
    enqueued_at: float


_encoder = msgspec.json.Encoder()


def encode(func: str, args: list[Any]) -> bytes:
    now = time.time()
    return _encoder.encode(Payload(uuid.uuid4().hex, "default", func, args, now, now))


async def noop() -> None:
    probe.hit()


async def brpop_main(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    decoder = msgspec.json.Decoder(Payload)
    probe.start()
    while True:
        item = await client.brpop([QUEUE], timeout=0)
        if item is None:
            continue
        job = decoder.decode(item[1])
        probe.stamp(job.args[0])


async def drain_main(url: str, concurrency: int) -> None:
    client = aioredis.Redis.from_url(url)
    decoder = msgspec.json.Decoder(Payload)
    loop = asyncio.get_running_loop()
    free = concurrency
    slot = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    def done(task: asyncio.Task[None]) -> None:
        nonlocal free
        tasks.discard(task)
        free += 1
        slot.set()

    probe.start()
    while True:
        if free == 0:
            slot.clear()
            await slot.wait()
        items = await client.rpop(QUEUE, min(BATCH, free))
        if not items:
            await asyncio.sleep(0.001)
            continue
        for raw in items:
            decoder.decode(raw)
            free -= 1
            task = loop.create_task(noop())
            tasks.add(task)
            task.add_done_callback(done)


async def until_signal(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` until SIGINT/SIGTERM, then return normally (so profilers write)."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "drain"
    url = os.environ["BENCH_REDIS_URL"]
    concurrency = int(os.environ.get("BENCH_CONCURRENCY", "100"))
    coro = until_signal(brpop_main(url) if mode == "brpop" else drain_main(url, concurrency))
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)


if __name__ == "__main__":
    main()
