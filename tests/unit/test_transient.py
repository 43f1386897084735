"""Which errors a background loop takes for Redis going away (no Redis needed)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import redis.exceptions as rexc

from asyncjobs._errors import RedisRefused, RedisUnavailable
from asyncjobs._keys import Keys
from asyncjobs._redis import map_error, transient
from asyncjobs._store import mapped
from asyncjobs._store._base import StoreBase


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


# -- as the store raises them: mapped at its boundary ----------------------------------


class _Raises(StoreBase):
    """A store whose one method raises what it is given (no Redis: the mapping only)."""

    def __init__(self) -> None:
        super().__init__("redis://h:6379/0", Keys("t"), cast(Any, None), None, cast(Any, None))

    @mapped
    async def call(self, exc: BaseException) -> None:
        raise exc


def _as_the_store_raises(exc: BaseException) -> BaseException:
    with pytest.raises(BaseException) as info:
        asyncio.run(_Raises().call(exc))
    return info.value


@pytest.mark.parametrize(
    "exc",
    [
        rexc.ConnectionError("reset"),
        rexc.TimeoutError("slow"),
        # A blocking call ended by a failover: passing, like a cut connection.
        rexc.ResponseError("UNBLOCKED force unblocking a client that was blocked"),
        rexc.ReadOnlyError("READONLY You can't write against a read only replica."),
    ],
)
def test_redis_away_is_transient_once_mapped(exc: Exception) -> None:
    mapped_exc = _as_the_store_raises(exc)
    assert isinstance(mapped_exc, RedisUnavailable | RedisRefused)
    assert transient(mapped_exc)


def test_unblocked_maps_to_redis_unavailable() -> None:
    out = map_error("redis://h:6379/0", rexc.ResponseError("UNBLOCKED force unblocking"))
    assert isinstance(out, RedisUnavailable) and "UNBLOCKED" in str(out)


def test_the_store_lets_the_closed_transport_error_through_as_it_is() -> None:
    exc = _closed_transport_error()
    assert _as_the_store_raises(exc) is exc
    assert transient(exc)


def test_other_error_replies_are_bugs_once_mapped() -> None:
    assert not transient(_as_the_store_raises(rexc.ResponseError("WRONGTYPE")))
