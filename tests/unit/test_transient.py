"""Which errors a background loop takes for Redis going away (no Redis needed)."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions as rexc

from asyncjobs._redis import transient


def _closed_transport_error() -> RuntimeError:
    """The RuntimeError uvloop raises on a write to a transport a reset has closed."""
    uvloop = pytest.importorskip("uvloop")
    caught: list[RuntimeError] = []

    async def main() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.abort()
        await asyncio.sleep(0.01)
        try:
            writer.write(b"PING\r\n")
        except RuntimeError as exc:
            caught.append(exc)
        writer.close()
        server.close()
        await server.wait_closed()

    uvloop.run(main())
    assert caught, "uvloop no longer raises on a write to a closed transport"
    return caught[0]


def test_uvloop_closed_transport_is_transient() -> None:
    assert transient(_closed_transport_error())


@pytest.mark.parametrize(
    "exc",
    [rexc.ConnectionError("reset"), rexc.TimeoutError("slow"), ConnectionResetError(), OSError()],
)
def test_redis_away_is_transient(exc: Exception) -> None:
    assert transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("dictionary changed size during iteration"),
        RuntimeError("Event loop is closed"),
        RuntimeError("unable to perform operation on <TCPTransport closed=True>; bug"),
        ValueError("scheduler bug"),
        rexc.ResponseError("WRONGTYPE"),
    ],
)
def test_other_errors_are_bugs(exc: Exception) -> None:
    assert not transient(exc)
