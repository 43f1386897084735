"""A gate: a TCP proxy, in the test's event loop, that holds a connection's commands.

Once armed with a byte string, the next client connection that sends a chunk holding it
stops forwarding at that chunk: that chunk and everything after it on that connection
wait in the proxy until :meth:`Gate.release`. Other connections flow as usual. So a test
can hold one write (an acknowledgement, say) on its way to Redis, do something while it
is held, then let it through.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self


class Gate:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._needle: bytes | None = None
        self.held = asyncio.Event()  # a chunk is being held
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, needle: bytes) -> None:
        self._needle = needle
        self._open.clear()

    def release(self) -> None:
        self._needle = None
        self._open.set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, gated: bool) -> None:
            holding = False
            while chunk := await src.read(65536):
                if gated and not holding and self._needle is not None and self._needle in chunk:
                    holding = True
                    self.held.set()
                if holding:
                    await self._open.wait()
                    holding = False
                dst.write(chunk)
                await dst.drain()

        tasks = [
            asyncio.ensure_future(pump(reader, up_writer, True)),
            asyncio.ensure_future(pump(up_reader, writer, False)),
        ]
        self._tasks.update(tasks)
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
            self._tasks.discard(t)
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.transport.abort()
        up_writer.transport.abort()
