"""Workers of the floors: bare redis-py, the framework-free drain and the latency floor.

Run as ``python -m benchmarks.jobs_floor brpop``, ``... drain`` or ``... blmpop``; all
read ``BENCH_REDIS_URL`` (and ``drain`` ``BENCH_CONCURRENCY``) from the environment.

* ``brpop``: one ``BRPOP`` at a time, decode the payload, run ``probe.stamp`` inline.
  The floor of idle pickup latency.
* ``drain``: ``RPOP key count`` (up to 100, never more than the free slots of the
  concurrency), msgspec decode, one asyncio task per job running the no-op body. No
  in-flight record, no acks, no timeouts, no middleware: the floor of the drain.
* ``blmpop``: a loop of ``BLMPOP 1 1 QUEUE RIGHT COUNT 100`` (Redis >= 7.0) on one
  :class:`Pipe`, msgspec decode, each job run inline (``stamp``: ``probe.stamp(ts)``,
  else ``probe.hit()``). The floor of the latency-load curve: what Redis and the machine
  allow for defer-to-first-line under load.

:class:`Pipe` is the producer's side of that floor too: a minimal RESP client on one
asyncio-streams connection (hiredis parses the replies) that writes each command as it
comes and resolves the callers' futures in order, so many tasks can send at once
without a connection pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

import hiredis
import msgspec
import redis.asyncio as aioredis

from benchmarks import _uvloop, probe

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


class Pipe:
    """One pipelined connection: :meth:`call` writes its command at once and waits for
    its reply; a reader task hands the replies to the waiting calls in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._parser = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, url: str) -> Pipe:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 6379)
        pipe = cls(reader, writer)
        db = parts.path.strip("/")
        if db and db != "0":
            await pipe.call("SELECT", db)
        return pipe

    def call(self, *args: str | bytes | int | float) -> asyncio.Future[Any]:
        if self._task.done():
            raise ConnectionError("connection closed")
        self._writer.write(hiredis.pack_command(args))  # type: ignore[arg-type]  # its stub
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        return future

    async def _read(self) -> None:
        try:
            while data := await self._reader.read(1 << 16):
                self._parser.feed(data)
                while (reply := self._parser.gets()) is not False:
                    future = self._waiting.popleft()
                    if future.done():
                        continue
                    if isinstance(reply, hiredis.ReplyError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:  # closed, cancelled or broken: no reply will come
            for future in self._waiting:
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))
            self._waiting.clear()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


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


async def blmpop_main(url: str) -> None:
    pipe = await Pipe.connect(url)
    decoder = msgspec.json.Decoder(Payload)
    probe.start()
    while True:
        reply = await pipe.call("BLMPOP", 1, 1, QUEUE, "RIGHT", "COUNT", BATCH)
        if reply is None:
            continue
        for raw in reply[1]:
            job = decoder.decode(raw)
            if job.func == "stamp":
                probe.stamp(job.args[0])
            else:
                probe.hit()


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
    if mode == "brpop":
        job_loop = brpop_main(url)
    elif mode == "blmpop":
        job_loop = blmpop_main(url)
    else:
        job_loop = drain_main(url, concurrency)
    _uvloop.run(until_signal(job_loop))


if __name__ == "__main__":
    main()
