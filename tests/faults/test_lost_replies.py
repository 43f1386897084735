"""Lost replies: Redis ran a script, the connection died before its reply arrived.

A connection that dies at the wrong moment (a Redis restart, a reset by a middlebox,
a reply timeout) leaves the client not knowing whether its command ran. Scenarios 2
and 3 hit this by chance; here a proxy makes it happen on purpose: it forwards commands
to Redis, and when it sees the one it is armed for, it lets Redis run it and then resets
the client's connection instead of forwarding the reply.

Asserted, with one worker subprocess behind the proxy:

* a *fetch* whose reply is lost does not strand its jobs: they still run, within a few
  seconds, though Redis moved them into the worker's in-flight hash and the worker never
  received them;
* an *ack* (``done.lua``, which acknowledges successes) whose reply is lost is retried
  harmlessly: the job ran once, is counted once, and nothing is left in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from asyncjobs._redis import scripts
from tests.apps import faulty
from tests.conftest import wait_for
from tests.devserver import RedisProcess
from tests.faults._support import Fleet, client, counts, held, report, runs, write_config

pytestmark = pytest.mark.faults

STRANDED_BOUND = 10.0  # seconds within which a job whose fetch reply was lost must run


class ReplyDropper:
    """A TCP proxy (own thread and loop) that, once armed with a byte string, lets the
    next command containing it reach Redis and then resets the client's connection in
    place of the reply."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.dropped = 0
        self._needle: bytes | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, needle: bytes) -> None:
        with self._lock:
            self._needle = needle

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._needle is not None

    def _take(self, chunk: bytes) -> bool:
        with self._lock:
            if self._needle is not None and self._needle in chunk:
                self._needle = None
                return True
            return False

    def __enter__(self) -> ReplyDropper:
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await self._stop.wait()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert ready.wait(10), "proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        drop = asyncio.Event()

        async def to_redis() -> None:
            while chunk := await reader.read(65536):
                if self._take(chunk):
                    drop.set()
                up_writer.write(chunk)
                await up_writer.drain()

        async def to_client() -> None:
            while chunk := await up_reader.read(65536):
                if drop.is_set():
                    # Redis ran the command; its reply dies with the connection (RST).
                    self.dropped += 1
                    sock = writer.get_extra_info("socket")
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    writer.transport.abort()
                    return
                writer.write(chunk)
                await writer.drain()

        tasks = [asyncio.ensure_future(to_redis()), asyncio.ensure_future(to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except (ConnectionError, OSError):
            pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.transport.abort()
            up_writer.transport.abort()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("script", ["fetch", "done"])  # done.lua acks successes
async def test_lost_reply(
    script: str, tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    needle = getattr(scripts(), script).sha.encode()
    with RedisProcess() as server, ReplyDropper(server.port) as proxy:
        r = client(server.url)
        faulty.app.redis_url = server.url  # the producer talks to Redis directly
        try:
            worker = fleets(server.url, write_config(tmp_path)).start(url=proxy.url)
            await wait_for(lambda: worker.registered(r), timeout=20)
            pid = worker.process_id
            assert pid is not None
            # A first job: every script is loaded (a NOSCRIPT reply would not do), and
            # the worker is idle again, waiting for a wake-up hint.
            await faulty.record.defer(0, 0.0)
            await wait_for(lambda: _ran(r, {0}), timeout=10)
            await wait_for(lambda: _idle(r, pid), timeout=10)

            proxy.arm(needle)
            t0 = time.monotonic()
            await faulty.record.defer_many([(n, 0.0) for n in range(1, 6)])
            await wait_for(lambda: proxy.dropped > 0, timeout=10)
            in_flight_after_drop = await held(r, pid)
            try:
                await wait_for(lambda: _ran(r, set(range(6))), timeout=STRANDED_BOUND)
                await wait_for(lambda: _idle(r, pid), timeout=5)
            except TimeoutError:
                pass  # the assertions below say what is missing
            elapsed = time.monotonic() - t0
            ran = counts(await runs(r))
            stuck = await held(r, pid)
            processed = int(await r.get("{asyncjobs}:stat:processed") or 0)
            alive = worker.alive()
            worker.signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(worker.popen.wait, 15)
            report(
                f"lost_{script}_reply",
                replies_dropped=proxy.dropped,
                in_flight_right_after=in_flight_after_drop,
                not_run=sorted(set(range(6)) - set(ran)),
                run_twice=sorted(n for n, c in ran.items() if c > 1),
                stuck_in_flight=stuck,
                processed_counter=processed,
                seconds=round(elapsed, 2),
                worker_exit=code,
            )
            assert alive and code == 0, worker.output()[-3000:]
            assert set(ran) == set(range(6)), (
                f"jobs {sorted(set(range(6)) - set(ran))} never ran: "
                f"{stuck} stuck in the live worker's in-flight hash"
            )
            assert stuck == 0
            assert all(c == 1 for c in ran.values()), "no job ran twice"
            assert processed == 6, "each job counted once"
        finally:
            await faulty.app.aclose()
            await r.aclose()


async def _ran(r: aioredis.Redis, ns: set[int]) -> bool:
    return ns <= set(counts(await runs(r)))


async def _idle(r: aioredis.Redis, process_id: str) -> bool:
    return not await held(r, process_id)
