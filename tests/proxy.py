"""A small toxiproxy-like TCP proxy for fault-injection tests.

``TcpProxy`` runs in the caller's asyncio event loop (anyio tests on the asyncio backend
included); ``ThreadedTcpProxy`` runs the same proxy on its own event loop in a daemon
thread and has a synchronous API, for when the client under test is a subprocess or the
test body is synchronous.

Fault modes:

* ``cut()`` — a silent partition: connections stay open, but no byte is forwarded in
  either direction; new connections are accepted but not connected upstream. The proxy
  simply stops reading, so unread bytes wait in kernel buffers.
* ``heal()`` — forwarding resumes. Bytes sent during the partition are delivered late,
  in order (like TCP retransmission after a network partition ends); connections
  accepted during the partition are now connected upstream.
* ``reset()`` — every current client connection is aborted with a TCP RST (and its
  upstream connection closed). New connections are proxied as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

__all__ = ["TcpProxy", "ThreadedTcpProxy"]

_T = TypeVar("_T")
_CHUNK = 65536


def _abort(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    """Close a connection at once; with ``rst`` the peer gets a TCP RST, not a FIN."""
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and (once connected) its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None

    def abort(self, *, rst: bool) -> None:
        _abort(self.client, rst=rst)
        if self.upstream is not None:
            _abort(self.upstream, rst=False)

    def close(self) -> None:
        """Orderly close (FIN) after flushing what was already forwarded."""
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``.

    Use ``port = await proxy.start()`` ... ``await proxy.stop()``, or
    ``async with TcpProxy(host, port) as proxy:``. ``cut()``, ``heal()`` and ``reset()``
    take effect before they return and must be called from the proxy's event loop.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self._listen_port = listen_port
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0  # connections accepted so far (handy in assertions)
        self._refusing = False  # refuse(): every connection is reset as it comes

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return self._listen_port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` pointing at the proxy."""
        return f"redis://{self.listen_host}:{self.port}/0"

    @property
    def is_cut(self) -> bool:
        return self._flowing is not None and not self._flowing.is_set()

    @property
    def connections(self) -> int:
        """Client connections currently open through the proxy."""
        return len(self._links)

    async def start(self) -> int:
        """Start listening; return the listen port."""
        if self._server is not None:
            raise RuntimeError("proxy already started")
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(
            self._on_client, self.listen_host, self._listen_port
        )
        self._listen_port = self._server.sockets[0].getsockname()[1]
        return self._listen_port

    async def stop(self) -> None:
        """Stop listening, abort every connection and wait for the forwarding tasks."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # A connection accepted just before the close has a task that has not run yet:
        # it is in neither set, and asyncio.run would cancel it unstarted, leaving its
        # transport open (a ResourceWarning in whichever test the garbage collector
        # then runs in). Let such tasks start, then abort them too, until two passes in
        # a row find nothing.
        quiet = 0
        while quiet < 2:
            await asyncio.sleep(0)
            links, tasks = list(self._links), list(self._tasks)
            if not links and not tasks:
                quiet += 1
                continue
            quiet = 0
            for link in links:
                link.abort(rst=False)
            self._links.difference_update(links)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    def cut(self) -> None:
        """Silent partition: stop forwarding bytes (connections stay open)."""
        self._require_flowing().clear()

    def heal(self) -> None:
        """End a partition: forwarding resumes."""
        self._require_flowing().set()

    def refuse(self) -> int:
        """A server gone away: reset every current connection and every new one as
        it comes (TCP RST), while still listening, so that each accepted connection is
        closed by the proxy's own code. Unlike :meth:`stop`, a client reconnecting in
        a tight loop cannot have a connection accepted as the listener closes and
        left open by asyncio. Returns how many connections were reset."""
        self._refusing = True
        return self.reset()

    def reset(self) -> int:
        """Abort all current client connections with a TCP RST; return how many."""
        links = list(self._links)
        self._links.clear()
        for link in links:
            link.abort(rst=True)
        return len(links)

    def _require_flowing(self) -> asyncio.Event:
        if self._flowing is None:
            raise RuntimeError("proxy not started")
        return self._flowing

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refusing:
            _abort(writer, rst=True)
            return
        link = _Link(writer)
        self._links.add(link)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await self._serve(link, reader, writer)
        except asyncio.CancelledError:
            # Only stop() cancels these tasks. Ending normally keeps asyncio's
            # start_server callback (which inspects the task) from logging an error.
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                link.close()

    async def _serve(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        flowing = self._require_flowing()
        await flowing.wait()  # accepted during a partition: connect upstream on heal
        if link not in self._links:  # reset() while waiting
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            _abort(writer, rst=True)  # upstream down: the client sees a reset
            return
        link.upstream = up_writer
        if link not in self._links:
            link.abort(rst=True)
            return
        to_upstream = asyncio.ensure_future(self._pump(reader, up_writer, flowing))
        to_client = asyncio.ensure_future(self._pump(up_reader, writer, flowing))
        try:
            await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in (to_upstream, to_client):
                pump.cancel()
            await asyncio.gather(to_upstream, to_client, return_exceptions=True)

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event
    ) -> None:
        try:
            while True:
                await flowing.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    return
                await flowing.wait()  # read just before a cut: hold it until heal
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class ThreadedTcpProxy:
    """:class:`TcpProxy` on its own event loop in a daemon thread, with a sync API.

    ``port = proxy.start()`` ... ``proxy.stop()``, or ``with ThreadedTcpProxy(h, p):``.
    Every call returns once the change is in effect on the proxy's loop. Safe to call
    from async code too (the calls only block for a loop round trip).
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        timeout: float = 10.0,
    ) -> None:
        self.proxy = TcpProxy(
            upstream_host, upstream_port, listen_host=listen_host, listen_port=listen_port
        )
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested: asyncio.Event | None = None

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def accepted(self) -> int:
        return self.proxy.accepted

    def start(self) -> int:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop_requested = asyncio.Event()
            try:
                await self.proxy.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                await self._stop_requested.wait()
            finally:
                await self.proxy.stop()

        self._thread = threading.Thread(
            target=asyncio.run, args=(main(),), name="ThreadedTcpProxy", daemon=True
        )
        self._thread.start()
        if not ready.wait(self.timeout):
            raise RuntimeError("proxy thread did not start in time")
        if failure:
            self._thread.join(self.timeout)
            self._thread = None
            raise failure[0]
        return self.proxy.port

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(self.timeout)
        if thread.is_alive():
            raise RuntimeError("proxy thread did not stop in time")

    def cut(self) -> None:
        self._call(self.proxy.cut)

    def heal(self) -> None:
        self._call(self.proxy.heal)

    def reset(self) -> int:
        return self._call(self.proxy.reset)

    def refuse(self) -> int:
        return self._call(self.proxy.refuse)

    @property
    def connections(self) -> int:
        return self._call(lambda: self.proxy.connections)

    def _call(self, func: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None or self._thread is None:
            raise RuntimeError("proxy not started")

        async def run() -> _T:
            return func()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(self.timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
