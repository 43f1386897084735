"""The middleware contract, the same in the worker and in the testing modes.

- a client middleware that does not call next: ``defer`` returns None, nothing enqueued;
  in ``defer_many`` that element's jid is None and the others go through;
- a server middleware that does not call next: the job is skipped and acknowledged as
  done, not retried;
- an exception before or after next is a job failure, retried like any other;
- a capsule's own server middleware runs inside the app's, for that capsule only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import testing
from tests.conftest import loads, running, wait_for

QUEUE = "{asyncjobs}:queue:default"
RETRY = "{asyncjobs}:retry"


async def test_client_middleware_that_does_not_call_next_enqueues_nothing(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    @app.job
    async def work(n: int) -> None: ...

    async def drop_odd(
        payload: asyncjobs.Payload, call_next: Callable[[asyncjobs.Payload], Awaitable[str | None]]
    ) -> str | None:
        if loads(bytes(payload.args))["n"] % 2:
            return None
        return await call_next(payload)

    app.client_middleware.add(drop_odd)
    assert await work.defer(1) is None
    assert await redis.llen(QUEUE) == 0
    jid = await work.defer(2)
    assert jid is not None and await redis.llen(QUEUE) == 1
    jids = await work.defer_many([(3,), (4,), (5,), (6,)])
    assert [j is None for j in jids] == [True, False, True, False]
    queued = {loads(raw)["jid"] for raw in await redis.lrange(QUEUE, 0, -1)}
    assert queued == {jid, jids[1], jids[3]}


async def test_server_middleware_that_does_not_call_next_skips_the_job(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    ran: list[int] = []

    @app.job
    async def work(n: int) -> None:
        ran.append(n)

    async def skip_odd(ctx: asyncjobs.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        if ctx.jid.startswith("skip"):
            return None
        return await call_next()

    app.server_middleware.add(skip_odd)
    await work.configure(jid="skip-1").defer(1)
    await work.defer(2)
    async with running(app.worker()) as worker:
        await wait_for(lambda: worker.statistics()["processed"] == 2)
        await worker.wait_idle()
    assert ran == [2]
    assert await redis.zcard(RETRY) == 0  # skipped, not failed
    assert int(await redis.get("{asyncjobs}:stat:processed") or 0) == 2


async def test_exception_before_or_after_next_is_a_failure_retried(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    ran: list[str] = []

    @app.job
    async def work(where: str) -> None:
        ran.append(where)

    async def raise_around(
        ctx: asyncjobs.JobContext, call_next: Callable[[], Awaitable[Any]]
    ) -> Any:
        where = loads(bytes(asyncjobs.current_job()._payload.args))["where"]
        if where == "before":
            raise RuntimeError("before next")
        result = await call_next()
        if where == "after":
            raise RuntimeError("after next")
        return result

    app.server_middleware.add(raise_around)
    await work.defer("before")
    await work.defer("after")
    async with running(app.worker()) as worker:
        await wait_for(lambda: worker.statistics()["failed"] == 2)
        await worker.wait_idle()
    assert ran == ["after"]
    retries = sorted(loads(raw)["error_message"] for raw in await redis.zrange(RETRY, 0, -1))
    assert retries == ["after next", "before next"]


async def test_capsule_middleware_runs_inside_the_apps_for_its_capsule_only(
    app: asyncjobs.App,
) -> None:
    seen: list[tuple[str, str]] = []

    @app.job(queue="a")
    async def in_a() -> None: ...

    @app.job(queue="b")
    async def in_b() -> None: ...

    def recorder(tag: str) -> Callable[..., Awaitable[Any]]:
        async def mw(ctx: asyncjobs.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
            seen.append((tag, ctx.queue))
            return await call_next()

        return mw

    app.server_middleware.add(recorder("app"))
    app.capsule_middleware("only-a").add(recorder("capsule"))
    await in_a.defer()
    await in_b.defer()
    capsules = [
        asyncjobs.CapsuleSpec(name="only-a", queues=[("a", 1)], concurrency=2),
        asyncjobs.CapsuleSpec(name="other", queues=[("b", 1)], concurrency=2),
    ]
    async with running(app.worker(capsules=capsules)) as worker:
        await wait_for(lambda: worker.statistics()["processed"] == 2)
    assert sorted(seen) == [("app", "a"), ("app", "b"), ("capsule", "a")]
    assert seen.index(("app", "a")) < seen.index(("capsule", "a"))


async def test_testing_modes_keep_the_same_contract(app: asyncjobs.App) -> None:
    ran: list[int] = []

    @app.job
    async def work(n: int) -> None:
        ran.append(n)

    async def drop_one(
        payload: asyncjobs.Payload, call_next: Callable[[asyncjobs.Payload], Awaitable[str | None]]
    ) -> str | None:
        return None if loads(bytes(payload.args))["n"] == 1 else await call_next(payload)

    async def skip_two(ctx: asyncjobs.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        return None if ctx.jid == "two" else await call_next()

    app.client_middleware.add(drop_one)
    app.server_middleware.add(skip_two)
    with testing.inline(app) as inline:
        assert await work.defer(1) is None
        assert await work.configure(jid="two").defer(2) == "two"
        assert await work.defer(3) is not None
    assert ran == [3] and [c.arguments["n"] for c in inline.ran] == [2, 3]
    with testing.capture(app) as captured:
        assert await work.defer_many([(1,), (4,)]) == [None, captured.jobs[0].jid]
        await captured.drain()
    assert ran == [3, 4]
