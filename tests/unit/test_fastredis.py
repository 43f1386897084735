"""FastRedis (``_conn.py``) on canned bytes, without a server: what it writes, how it
matches replies to callers, errors, deadlines, replies split across reads. In the
spirit of httpcore's tests on a mock stream: the opener seam hands it a stream we feed.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import anyio
import pytest
import redis.exceptions as rexc

from asyncjobs._conn import FastRedis, _pack, pack
from asyncjobs._errors import ConfigError
from asyncjobs._redis import map_error


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class FakeWriter:
    """What FastRedis uses of a StreamWriter: write() and transport.abort()."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.transport = FakeTransport()

    def write(self, data: bytes) -> None:
        self.written += data


class Canned:
    """A connection whose server replies are the bytes a test feeds."""

    def __init__(self, reply_timeout: float = 10.0) -> None:
        self.reader = asyncio.StreamReader()
        self.writer = FakeWriter()
        self.opened = 0
        self.redis = FastRedis(None, reply_timeout=reply_timeout, opener=self._open)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]:
        self.opened += 1
        return self.reader, cast(asyncio.StreamWriter, self.writer), None

    def feed(self, data: bytes) -> None:
        self.reader.feed_data(data)


async def settle() -> None:
    """Let every ready task run (the reader task parses what was fed)."""
    for _ in range(5):
        await asyncio.sleep(0)


def start(c: Canned, *args: Any) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(c.redis.execute(*args))


async def test_pipelined_commands_are_written_at_once_and_replies_matched_in_order() -> None:
    c = Canned()
    t1 = start(c, b"SET", "k", 1)
    t2 = start(c, b"INCRBY", "n", 5)
    t3 = start(c, b"GET", "k")
    await settle()
    # All three on the wire before any reply, in order.
    assert bytes(c.writer.written) == (
        pack((b"SET", "k", 1)) + pack((b"INCRBY", "n", 5)) + pack((b"GET", "k"))
    )
    assert not (t1.done() or t2.done() or t3.done())
    c.feed(b"+OK\r\n:5\r\n$1\r\n1\r\n")
    with anyio.fail_after(1):
        assert await t1 == b"OK"
        assert await t2 == 5
        assert await t3 == b"1"
    assert c.opened == 1
    await c.redis.aclose()


def test_pack_encodes_every_argument_type() -> None:
    assert pack((b"X", "é", 3, 1.5, True)) == (
        b"*5\r\n$1\r\nX\r\n$2\r\n\xc3\xa9\r\n$1\r\n3\r\n$3\r\n1.5\r\n$1\r\n1\r\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        (b"EVALSHA", "a" * 40, 2, "{q}:k", "{q}:w", b'{"jid":"x"}', 0, 1796063089.7935548),
        (b"X", 1e-07, 1e20, -0.0, 2**64, -5, float("inf"), memoryview(b"m"), b"\x00\xff"),
        (b"X", True, False, bytearray(b"ab")),  # hiredis refuses these: the Python packer
    ],
)
def test_hiredis_packer_and_ours_agree(args: tuple[object, ...]) -> None:
    assert pack(args) == _pack(args)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"-ERR unknown command 'X'\r\n", rexc.ResponseError),
        (b"-NOSCRIPT No matching script. Please use EVAL.\r\n", rexc.NoScriptError),
        (b"-READONLY You can't write against a read only replica.\r\n", rexc.ReadOnlyError),
        (b"-OOM command not allowed when used memory > 'maxmemory'.\r\n", rexc.OutOfMemoryError),
        (b"-NOPERM this user has no permissions\r\n", rexc.NoPermissionError),
        (b"-WRONGPASS invalid username-password pair\r\n", rexc.AuthenticationError),
        (b"-LOADING Redis is loading the dataset in memory\r\n", rexc.BusyLoadingError),
    ],
)
async def test_an_error_reply_fails_only_its_own_command(
    reply: bytes, error: type[Exception]
) -> None:
    c = Canned()
    t1, t2, t3 = start(c, b"A"), start(c, b"B"), start(c, b"C")
    await settle()
    c.feed(b"+a\r\n" + reply + b"+c\r\n")
    with anyio.fail_after(1):
        assert await t1 == b"a"
        with pytest.raises(error) as info:
            await t2
        assert type(info.value) is error
        assert await t3 == b"c"
        # The connection goes on serving.
        t4 = start(c, b"D")
        await settle()
        c.feed(b"+d\r\n")
        assert await t4 == b"d"
    assert c.opened == 1
    assert not c.writer.transport.aborted
    await c.redis.aclose()


async def test_a_reply_that_never_comes_fails_within_the_deadline() -> None:
    c = Canned(reply_timeout=0.05)
    t1, t2 = start(c, b"A"), start(c, b"B")
    with anyio.fail_after(2):
        with pytest.raises(rexc.TimeoutError, match="no reply from Redis"):
            await t1
        with pytest.raises(rexc.TimeoutError):
            await t2  # every caller waiting on that connection fails
    assert c.writer.transport.aborted  # the link is dropped: the next call reconnects
    await c.redis.aclose()


async def test_a_blocking_command_has_its_block_time_added_to_its_deadline() -> None:
    c = Canned(reply_timeout=0.05)
    task = asyncio.get_running_loop().create_task(c.redis.execute(b"BRPOP", "k", 10, block=10.0))
    await anyio.sleep(0.2)  # four reply timeouts: a plain command would have failed
    assert not task.done()
    c.feed(b"*-1\r\n")
    with anyio.fail_after(1):
        assert await task is None
    await c.redis.aclose()


async def test_replies_split_across_reads_even_mid_bulk_string() -> None:
    c = Canned()
    t1 = start(c, b"GET", "k")
    t2 = start(c, b"LRANGE", "l", 0, -1)
    await settle()
    wire = b"$11\r\nhello world\r\n*2\r\n$3\r\nabc\r\n$4\r\nde\r\n\r\n"
    pieces = [wire[:1], wire[1:4], wire[4:9], wire[9:15], wire[15:16], wire[16:30], wire[30:]]
    for i, piece in enumerate(pieces):
        c.feed(piece)
        await settle()
        if i < 4:
            assert not t1.done()
        if i < len(pieces) - 1:
            assert not t2.done()
    with anyio.fail_after(1):
        assert await t1 == b"hello world"
        assert await t2 == [b"abc", b"de\r\n"]
    await c.redis.aclose()


async def test_a_server_that_does_not_speak_resp_is_a_config_error() -> None:
    c = Canned()
    task = start(c, b"PING")
    await settle()
    c.feed(b"HTTP/1.0 400 Bad Request\r\n\r\n")
    with anyio.fail_after(1), pytest.raises(rexc.InvalidResponse) as info:
        await task
    assert isinstance(map_error("redis://h:80/0", info.value), ConfigError)
    await c.redis.aclose()


async def test_a_connection_closed_by_the_server_fails_waiting_callers() -> None:
    c = Canned()
    t1, t2 = start(c, b"A"), start(c, b"B")
    await settle()
    c.feed(b"+a\r\n")
    c.reader.feed_eof()
    with anyio.fail_after(1):
        assert await t1 == b"a"
        with pytest.raises(rexc.ConnectionError, match="closed"):
            await t2
    await c.redis.aclose()


async def test_send_nowait_is_ordered_with_the_other_commands() -> None:
    c = Canned()
    assert c.redis.send_nowait(b"X") is None  # not connected: nothing is sent
    t1 = start(c, b"A")
    await settle()
    fut = c.redis.send_nowait(b"B")
    assert fut is not None
    t3 = start(c, b"C")
    await settle()
    assert bytes(c.writer.written) == pack((b"A",)) + pack((b"B",)) + pack((b"C",))
    c.feed(b"+a\r\n+b\r\n+c\r\n")
    with anyio.fail_after(1):
        assert (await t1, await fut, await t3) == (b"a", b"b", b"c")
    await c.redis.aclose()


async def test_reset_drops_the_connection_and_the_next_command_reconnects() -> None:
    c = Canned()
    t1 = start(c, b"A")
    await settle()
    c.redis.reset()
    with anyio.fail_after(1), pytest.raises(rexc.ConnectionError):
        await t1
    assert c.writer.transport.aborted
    c.reader = asyncio.StreamReader()
    c.writer = FakeWriter()
    t2 = start(c, b"B")
    await settle()
    c.feed(b"+b\r\n")
    with anyio.fail_after(1):
        assert await t2 == b"b"
    assert c.opened == 2
    await c.redis.aclose()
