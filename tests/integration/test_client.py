"""The client side against a real Redis: defer, configure, defer_many, validation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

import asyncjobs
from tests.conftest import loads

Q = "{asyncjobs}:queue:"


async def test_defer_returns_jid_and_stores_readable_payload(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    @app.job
    async def resize(image_id: int, size: str = "thumb") -> None: ...

    jid = await resize.defer(42, size="large")
    assert jid is not None and len(jid) == 24
    [raw] = await redis.lrange(Q + "default", 0, -1)
    payload = loads(raw)
    assert payload["jid"] == jid
    assert payload["class"] == resize.name
    assert payload["queue"] == "default"
    assert payload["args"] == {"image_id": 42, "size": "large"}
    assert payload["retry"] == 25
    assert payload["enqueued_at"] >= payload["created_at"]
    assert await redis.smembers("{asyncjobs}:queues") == {b"default"}
    # the first job on an empty queue leaves a wake hint for idle fetchers
    assert await redis.llen("{asyncjobs}:wake:default") == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        (("x",), {}, "argument 'image_id': Expected `int`, got `str`"),
        ((), {}, "missing argument 'image_id'"),
        ((1,), {"nope": 2}, "unexpected keyword argument 'nope'"),
        ((1, 2), {}, "argument 'size': Expected `str`, got `int`"),
        ((1, "a", 3), {}, "too many positional arguments"),
    ],
)
async def test_bad_arguments_raise_and_enqueue_nothing(
    app: asyncjobs.App,
    redis: aioredis.Redis,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    needle: str,
) -> None:
    @app.job
    async def resize(image_id: int, size: str = "thumb") -> None: ...

    with pytest.raises(asyncjobs.ArgumentError) as info:
        await resize.defer(*args, **kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert resize.name in str(info.value)
    assert await redis.dbsize() == 0


async def test_nested_argument_error_names_the_path(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    @app.job
    async def tag(ids: list[int]) -> None: ...

    with pytest.raises(asyncjobs.ArgumentError) as info:
        await tag.defer([1, "two"])  # type: ignore[list-item]
    assert info.value.argument == "ids"
    assert "[1]" in str(info.value)
    assert await redis.dbsize() == 0


@dataclasses.dataclass
class Point:
    x: int
    y: int


async def test_typed_arguments_are_validated(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job
    async def typed(when: dt.datetime, u: uuid.UUID, d: Decimal, p: Point) -> None: ...

    await typed.defer(dt.datetime.now(dt.UTC), uuid.uuid4(), Decimal("1.10"), Point(1, 2))
    with pytest.raises(asyncjobs.ArgumentError, match="'p'"):
        await typed.defer(dt.datetime.now(dt.UTC), uuid.uuid4(), Decimal(1), {"x": "a"})  # type: ignore[arg-type]
    assert await redis.llen(Q + "default") == 1


async def test_configure_overrides(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job(queue="low", retry=3, timeout=10)
    async def work(n: int) -> None: ...

    await work.configure(queue="critical", retry=0).defer(1)
    [raw] = await redis.lrange(Q + "critical", 0, -1)
    p = loads(raw)
    assert (p["queue"], p["retry"], p["timeout"]) == ("critical", 0, 10.0)
    jid = await work.configure(delay=dt.timedelta(seconds=60)).defer(2)
    entries: list[Any] = await redis.zrange("{asyncjobs}:schedule", 0, -1, withscores=True)
    [(member, score)] = entries
    assert loads(member)["jid"] == jid
    assert score == pytest.approx(loads(member)["created_at"] + 60, abs=0.01)
    at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    await work.configure(at=at).defer(3)
    assert await redis.zcard("{asyncjobs}:schedule") == 2
    with pytest.raises(asyncjobs.ConfigError, match="aware"):
        work.configure(at=dt.datetime.now())
    with pytest.raises(asyncjobs.ConfigError):
        work.configure(delay=1, at=at)
    assert await redis.llen(Q + "low") == 0


async def test_defer_many_is_one_round_trip(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    @app.job
    async def work(n: int, tag: str = "") -> None: ...

    await app.connect()
    await redis.config_resetstat()
    jids = await work.defer_many([(i,) for i in range(1000)] + [{"n": 5, "tag": "kw"}])
    assert len(set(jids)) == 1001
    assert await redis.llen(Q + "default") == 1001
    stats = await redis.info("commandstats")
    calls = stats.get("cmdstat_evalsha", {}).get("calls", 0) + stats.get("cmdstat_eval", {}).get(
        "calls", 0
    )
    assert calls == 1
    # one bad item enqueues nothing
    with pytest.raises(asyncjobs.ArgumentError):
        await work.defer_many([(1,), ("bad",)])
    assert await redis.llen(Q + "default") == 1001


async def test_inline_call_runs_without_redis() -> None:
    app = asyncjobs.App("redis://127.0.0.1:1/0")

    @app.job
    async def add(a: int, b: int) -> int:
        return a + b

    assert await add(2, 3) == 5


async def test_url_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCJOBS_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert asyncjobs.App().redis_url == "redis://localhost:6379/0"
    monkeypatch.setenv("REDIS_URL", "redis://b:1/0")
    assert asyncjobs.App().redis_url == "redis://b:1/0"
    monkeypatch.setenv("ASYNCJOBS_REDIS_URL", "redis://a:1/0")
    assert asyncjobs.App().redis_url == "redis://a:1/0"
    assert asyncjobs.App("redis://c:1/0").redis_url == "redis://c:1/0"


async def test_unreachable_redis_raises_redis_unavailable() -> None:
    app = asyncjobs.App("redis://user:secret@127.0.0.1:1/0")

    @app.job
    async def work() -> None: ...

    with pytest.raises(asyncjobs.RedisUnavailable) as info:
        await work.defer()
    assert "127.0.0.1:1" in str(info.value)
    assert "secret" not in str(info.value)


async def test_context_manager_connects_and_closes(redis_url: str) -> None:
    async with asyncjobs.App(redis_url) as app:
        assert app._redis is not None
        client = await app.connect()
        assert await client.ping()
    assert app._redis is None


async def test_payload_size_limit(redis_url: str, redis: aioredis.Redis) -> None:
    app = asyncjobs.App(redis_url, max_payload_bytes=1000)

    @app.job
    async def big(blob: str) -> None: ...

    with pytest.raises(asyncjobs.EnqueueError, match="over the limit"):
        await big.defer("x" * 2000)
    assert await redis.dbsize() == 0
    await app.aclose()


def test_registration_errors() -> None:
    app = asyncjobs.App()

    def sync(x: int) -> None: ...

    with pytest.raises(asyncjobs.ConfigError, match="async def"):
        app.job(sync)  # type: ignore[arg-type]
    with pytest.raises(asyncjobs.ConfigError, match="retry"):
        app.job(retry=-1)(_noop)


async def _noop() -> None: ...
