"""_redis.map_error: each redis-py error becomes the asyncjobs error that says what to do."""

from __future__ import annotations

import pickle

import hiredis
import pytest
import redis.exceptions as rexc

import asyncjobs
from asyncjobs._redis import is_readonly, map_error

URL = "redis://user:secret@redis.internal:6379/7"


@pytest.mark.parametrize(
    ("exc", "mapped", "words"),
    [
        (rexc.ConnectionError("refused"), asyncjobs.RedisUnavailable, "cannot reach Redis"),
        (rexc.TimeoutError("slow"), asyncjobs.RedisUnavailable, "cannot reach Redis"),
        (ConnectionRefusedError(111, "refused"), asyncjobs.RedisUnavailable, "cannot reach"),
        (rexc.BusyLoadingError("LOADING"), asyncjobs.RedisUnavailable, "cannot reach Redis"),
        (rexc.ClusterDownError("CLUSTERDOWN"), asyncjobs.RedisUnavailable, "not serving"),
        (rexc.AuthenticationError("WRONGPASS"), asyncjobs.ConfigError, "refused the credentials"),
        (rexc.NoPermissionError("NOPERM"), asyncjobs.ConfigError, "denied a command"),
        (rexc.ResponseError("DB index is out of range"), asyncjobs.ConfigError, "no database 7"),
        (rexc.InvalidResponse("Protocol error"), asyncjobs.ConfigError, "does not speak"),
        (hiredis.ProtocolError("bad"), asyncjobs.ConfigError, "does not speak"),
        (rexc.OutOfMemoryError("OOM command not allowed"), asyncjobs.RedisRefused, "maxmemory"),
        (rexc.ResponseError("OOM command not allowed"), asyncjobs.RedisRefused, "maxmemory"),
        (rexc.ReadOnlyError("READONLY replica"), asyncjobs.RedisRefused, "read-only replica"),
        (rexc.ResponseError("READONLY replica"), asyncjobs.RedisRefused, "read-only replica"),
        (rexc.ResponseError("WRONGTYPE"), asyncjobs.RedisRefused, "refused a command"),
        (rexc.DataError("bad"), asyncjobs.RedisRefused, "refused a command"),
    ],
)
def test_every_redis_error_is_mapped(
    exc: BaseException, mapped: type[Exception], words: str
) -> None:
    out = map_error(URL, exc)
    assert type(out) is mapped
    assert words in str(out)
    assert "secret" not in str(out)  # the password is masked


def test_mapped_errors_and_foreign_ones_pass_through() -> None:
    done = asyncjobs.RedisUnavailable("x")
    assert map_error(URL, done) is done
    other = ValueError("x")
    assert map_error(URL, other) is other


def test_readonly_reason_and_pickling() -> None:
    out = map_error(URL, rexc.ReadOnlyError("READONLY"))
    assert isinstance(out, asyncjobs.RedisRefused) and out.reason == "readonly"
    back = pickle.loads(pickle.dumps(out))
    assert back.reason == "readonly" and str(back) == str(out)
    assert is_readonly(rexc.ResponseError("READONLY You can't write"))
    assert not is_readonly(rexc.ResponseError("ERR"))
