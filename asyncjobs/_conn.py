"""A lean, pipelined RESP connection for the hot path (pure I/O, no policy).

redis-py spends most of a round trip's client CPU on its pool, locks and command
machinery (measured: ``client.ping()`` costs about four times a bare socket write and
read). Enqueue, fetch and ack are the hot path and need none of that, so they go through
this class: one socket, commands written as they come, replies matched to callers in
order by a reader task, parsed by hiredis. Concurrent callers are pipelined for free.

Connection setup (TLS, AUTH with ACL users, SELECT, timeouts) is delegated to redis-py's
own ``Connection``; errors are redis-py's exception types, so callers handle one family.
Redis Cluster goes through redis-py: this class serves single-server deployments.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as rexc

__all__ = ["FastRedis", "Opener", "pack"]

# Opens a connection: its reader and writer, and the redis-py connection that owns them
# (None for a bare stream).
Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]]]


def _bytes(a: Any) -> bytes:
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode()
    if isinstance(a, bool):
        return b"1" if a else b"0"
    if isinstance(a, int):
        return b"%d" % a
    if isinstance(a, float):
        return repr(a).encode()
    return bytes(a)


_pack_command = hiredis.pack_command


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: hiredis's C packer (a push's arguments: 0.9 µs against 2.6
    for the Python one below), which takes str, int, float and bytes-like arguments;
    the Python one for the rest (bool, bytearray)."""
    try:
        packed: bytes = _pack_command(args)
    except TypeError:
        return _pack(args)
    return packed


def _pack(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _bytes(a)
        out.append(b"$%d\r\n" % len(b))
        out.append(b)
        out.append(b"\r\n")
    return b"".join(out)


def _error(reply: hiredis.ReplyError) -> rexc.RedisError:
    msg = str(reply)
    code = msg.split(" ", 1)[0]
    if code == "NOSCRIPT":
        return rexc.NoScriptError(msg)
    if code == "NOPERM":
        return rexc.NoPermissionError(msg)
    if code in ("NOAUTH", "WRONGPASS"):
        return rexc.AuthenticationError(msg)
    if code == "LOADING":
        return rexc.BusyLoadingError(msg)
    if code == "READONLY":
        return rexc.ReadOnlyError(msg)
    if code == "OOM":
        return rexc.OutOfMemoryError(msg)
    return rexc.ResponseError(msg)


class FastRedis:
    """One pipelined connection. Safe for many concurrent callers of non-blocking
    commands; give a blocking command (``BRPOP``) a connection of its own."""

    def __init__(
        self,
        pool: aioredis.ConnectionPool | None,
        *,
        reply_timeout: float = 10.0,
        opener: Opener | None = None,
    ) -> None:
        """Connections come from ``pool`` (redis-py's handshake), or ``opener`` (a seam
        for protocol tests on canned streams)."""
        self._pool = pool
        self._opener = opener
        self.reply_timeout = reply_timeout
        self._conn: Any = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._connecting: asyncio.Lock | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        # Counts the connections opened: a command written at one generation and one
        # written at another did not go out on the same socket.
        self.generation = 0

    # -- connection ------------------------------------------------------------------

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None:
                return self._writer
            if self._closed:
                raise rexc.ConnectionError("connection closed")
            reader, writer, self._conn = await (self._opener or self._open)()
            self._writer = writer
            self.generation += 1
            self._reader_task = asyncio.get_running_loop().create_task(
                self._read_loop(reader, writer)
            )
            return writer

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]:
        assert self._pool is not None
        conn: Any = self._pool.make_connection()  # type: ignore[no-untyped-call]
        await conn.connect()  # TLS, AUTH, SELECT: redis-py's handshake
        # redis-py internals (hence the pinned redis-py range in pyproject.toml).
        reader: asyncio.StreamReader | None = conn._reader
        writer: asyncio.StreamWriter | None = conn._writer
        if reader is None or writer is None:  # pragma: no cover - redis-py changed
            raise rexc.ConnectionError("redis-py connection has no stream")
        return reader, writer, conn

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        pending = self._pending
        error: BaseException = rexc.ConnectionError("Connection closed by server.")
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    fut, _ = pending.popleft()
                    if fut.done():  # its caller was cancelled; the reply is dropped
                        continue
                    if isinstance(reply, hiredis.ReplyError):
                        fut.set_exception(_error(reply))
                    else:
                        fut.set_result(reply)
        except asyncio.CancelledError:
            error = rexc.ConnectionError("connection closed")
            raise
        except hiredis.ProtocolError as exc:
            # Not a Redis server (an HTTP or SSH port): a configuration error, mapped
            # to ConfigError by the store, not an outage to wait out.
            error = rexc.InvalidResponse(f"not a RESP reply: {exc}")
        except (OSError, IndexError) as exc:
            error = rexc.ConnectionError(f"connection lost: {exc}")
        finally:
            # A newer connection may exist already (after a timeout drop): leave it be.
            if self._writer is writer or self._writer is None:
                self._drop(error)

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) of the server this connection is open to, if it is."""
        conn = self._conn
        if self._writer is None or conn is None or not hasattr(conn, "port"):
            return None
        return conn.host, int(conn.port)

    def reset(self) -> None:
        """Drop the connection (callers waiting fail); the next command reconnects.
        After a ``READONLY`` reply: a failover may have moved the master."""
        task = self._reader_task
        self._drop(rexc.ConnectionError("connection reset"))
        if task is not None and not task.done():
            task.cancel()

    def _drop(self, error: BaseException) -> None:
        """Forget the socket and fail every caller still waiting on it."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.transport.abort()
        conn, self._conn = self._conn, None
        if conn is not None:  # its socket is gone: tell redis-py, so nothing is left open
            conn._reader = conn._writer = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            fut, _ = self._pending.popleft()
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # mark retrieved: a cancelled caller never reads it

    def _watch(self) -> None:
        """Timer: a reply overdue by ``reply_timeout`` means the link is dead (a silent
        partition): drop the connection so callers fail and reconnect."""
        self._timer = None
        if not self._pending:
            return
        now = time.monotonic()
        deadline = self._pending[0][1]
        if deadline <= now:
            task = self._reader_task
            self._drop(rexc.TimeoutError(f"no reply from Redis in {self.reply_timeout:.0f}s"))
            if task is not None:
                task.cancel()
            return
        self._timer = asyncio.get_running_loop().call_at(deadline, self._watch)

    # -- commands --------------------------------------------------------------------

    async def execute(self, *args: Any, block: float = 0.0) -> Any:
        """Send one command and wait for its reply. ``block`` is the server-side
        blocking time of a blocking command, added to the reply deadline."""
        writer = self._writer or await self._connect()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        deadline = time.monotonic() + self.reply_timeout + block
        self._pending.append((fut, deadline))
        try:
            writer.write(pack(args))
        except RuntimeError as exc:  # uvloop: the transport was closed under us (reset)
            self._drop(rexc.ConnectionError(f"connection lost: {exc}"))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._watch)
        return await fut

    async def execute_many(
        self, commands: list[tuple[Any, ...]], *, block: float = 0.0
    ) -> list[Any]:
        """Send ``commands`` in one write, so all of them go out on one connection, and
        wait for their replies: each one a value, or the exception of an error reply
        (a lost connection fails them all alike). ``block``: as for :meth:`execute`,
        the server-side blocking time of the last command (``WAIT``)."""
        writer = self._writer or await self._connect()
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.reply_timeout + block
        futures: list[asyncio.Future[Any]] = []
        for _ in commands:
            fut: asyncio.Future[Any] = loop.create_future()
            futures.append(fut)
            self._pending.append((fut, deadline))
        try:
            writer.write(b"".join(pack(args) for args in commands))
        except RuntimeError as exc:
            self._drop(rexc.ConnectionError(f"connection lost: {exc}"))
        if self._timer is None:
            self._timer = loop.call_at(self._pending[0][1], self._watch)
        return await asyncio.gather(*futures, return_exceptions=True)

    async def connected(self) -> int:
        """Connect if not connected; the connection's generation."""
        if self._writer is None:
            await self._connect()
        return self.generation

    def send_nowait(self, *args: Any, block: float = 0.0) -> asyncio.Future[Any] | None:
        """Write a command now (ordered before anything sent later on this connection)
        and return the future of its reply; None when not connected. ``block``: as for
        :meth:`execute`."""
        writer = self._writer
        if writer is None:
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((fut, time.monotonic() + self.reply_timeout + block))
        try:
            writer.write(pack(args))
        except RuntimeError as exc:
            self._drop(rexc.ConnectionError(f"connection lost: {exc}"))
        if self._timer is None:
            self._timer = loop.call_at(self._pending[0][1], self._watch)
        return fut

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute(b"EVALSHA", sha, numkeys, *keys_and_args)

    async def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute(b"EVAL", script, numkeys, *keys_and_args)

    async def script_load(self, script: str) -> Any:
        return await self.execute(b"SCRIPT", b"LOAD", script)

    async def brpop(self, keys: list[str], timeout: float) -> Any:
        return await self.execute(b"BRPOP", *keys, timeout, block=timeout)

    async def aclose(self) -> None:
        self._closed = True
        task = self._reader_task
        self._drop(rexc.ConnectionError("connection closed"))
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._conn is not None:
            await self._conn.disconnect(nowait=True)
            self._conn = None
