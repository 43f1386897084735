"""Results, status, progress and cancellation (#14), on a real Redis, in process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

import asyncjobs
from tests.conftest import running, wait_for


class Size(msgspec.Struct):
    width: int
    height: int


def make_app(redis_url: str) -> asyncjobs.App:
    return asyncjobs.App(redis_url)


async def test_result_is_typed_and_waited_for(redis_url: str, redis: aioredis.Redis) -> None:
    app = make_app(redis_url)

    @app.job(keep_result=60, name="resize")
    async def resize(width: int) -> Size:
        await asyncio.sleep(0.05)
        return Size(width, width // 2)

    try:
        handle = await resize.defer(640)
        assert handle is not None
        assert isinstance(handle, str) and len(handle) == 24
        # Waiters before the job runs are woken by it (two at once: the signal stays).
        async with running(app.worker()):
            with anyio.fail_after(5):
                a, b = await asyncio.gather(handle.result(timeout=5), handle.result(timeout=5))
        assert a == Size(640, 320) and b == a
        assert await handle.result(timeout=0) == Size(640, 320)  # stored: no wait
        assert await app.result(handle.jid) == Size(640, 320)
        status = await app.status(handle)
        assert status.state == "succeeded" and status.has_result
        ttl = await redis.pttl(f"{{asyncjobs}}:result:{handle}")
        assert 0 < ttl <= 60_000
    finally:
        await app.aclose()


async def test_result_timeout_and_failure(redis_url: str) -> None:
    app = make_app(redis_url)

    @app.job(keep_result=60, retry=0, name="boom")
    async def boom() -> int:
        raise ValueError("no good")

    try:
        handle = await boom.defer()
        assert handle is not None
        with pytest.raises(TimeoutError):
            await handle.result(timeout=0.2)
        async with running(app.worker()):
            with pytest.raises(asyncjobs.JobFailed) as info:
                await handle.result(timeout=5)
        assert info.value.error_class == "ValueError"
        assert info.value.error_message == "no good"
        assert info.value.state == "dead"
        assert (await app.status(handle)).state == "dead"
    finally:
        await app.aclose()


async def test_untracked_job_writes_nothing(redis_url: str, redis: aioredis.Redis) -> None:
    app = make_app(redis_url)

    @app.job(name="plain")
    async def plain() -> int:
        return 1

    try:
        handle = await plain.defer()
        assert handle is not None
        async with running(app.worker()) as w:
            await wait_for(lambda: w.statistics()["processed"] == 1)
        keys = {k.decode() for k in await redis.keys("*") if isinstance(k, bytes)}
        assert not [k for k in keys if ":status:" in k or ":result:" in k or ":progress:" in k]
        assert (await app.status(handle)).state == "unknown"
        with pytest.raises(asyncjobs.ConfigError, match="keep_result"):
            await handle.result(timeout=0.1)
    finally:
        await app.aclose()


async def test_status_through_the_life_of_a_job(redis_url: str) -> None:
    app = make_app(redis_url)
    go = asyncio.Event()
    failures = 0

    @app.job(track_status=True, retry=3, retry_in=lambda count, exc: 3600, name="steps")
    async def steps() -> None:
        nonlocal failures
        asyncjobs.current_job().progress(0.5, "half way", meta={"done": 5})
        await go.wait()
        if failures == 0:
            failures += 1
            raise RuntimeError("first try fails")

    try:
        scheduled = await steps.configure(delay=3600).defer()
        assert scheduled is not None
        st = await app.status(scheduled)
        assert st.state == "scheduled" and st.next_at is not None
        handle = await steps.defer()
        assert handle is not None
        assert (await app.status(handle)).state == "queued"
        async with running(app.worker()) as w:

            async def is_running() -> bool:
                st = await app.status(handle)
                return st.state == "running" and st.progress is not None

            await wait_for(is_running)
            st = await app.status(handle)
            assert st.process == w.process_id
            assert st.progress is not None
            assert st.progress.fraction == 0.5 and st.progress.message == "half way"
            assert st.progress.meta == {"done": 5}
            go.set()

            async def is_retrying() -> bool:
                return (await app.status(handle)).state == "retrying"

            await wait_for(is_retrying)
        st = await app.status(handle)
        assert st.retry_count == 1 and st.next_at is not None
        assert st.error_class == "RuntimeError"
    finally:
        await app.aclose()


async def test_cancel_queued_and_scheduled(redis_url: str, redis: aioredis.Redis) -> None:
    app = make_app(redis_url)

    @app.job(keep_result=60, name="later")
    async def later() -> None:
        pass

    try:
        queued = await later.defer()
        scheduled = await later.configure(delay=600).defer()
        assert queued is not None and scheduled is not None
        assert await app.cancel(queued) == "removed"
        assert await scheduled.cancel() == "removed"
        assert await redis.llen("{asyncjobs}:queue:default") == 0
        assert await redis.zcard("{asyncjobs}:schedule") == 0
        assert (await app.status(queued)).state == "cancelled"
        with pytest.raises(asyncjobs.JobCancelled):
            await scheduled.result(timeout=1)
        assert await app.cancel("nosuchjid") == "not found"
    finally:
        await app.aclose()


async def test_cancel_running_job_with_shield(redis_url: str, redis: aioredis.Redis) -> None:
    app = make_app(redis_url)
    started = asyncio.Event()
    in_shield = asyncio.Event()
    leave_shield = asyncio.Event()
    seen: list[str] = []

    @app.job(keep_result=60, name="long")
    async def long() -> None:
        with asyncjobs.shield():
            started.set()
            in_shield.set()
            await leave_shield.wait()
            seen.append("shield done")
        await asyncio.sleep(30)
        seen.append("not cancelled")

    async def on_cancel(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        seen.append(f"hook {ctx.jid}")

    app.cancel_handlers.append(on_cancel)
    try:
        handle = await long.defer()
        assert handle is not None
        async with running(app.worker()) as w:
            with anyio.fail_after(5):
                await in_shield.wait()
            assert await handle.cancel() == "cancelling"
            await anyio.sleep(0.2)  # the shield holds the cancel back
            assert seen == []
            leave_shield.set()
            with pytest.raises(asyncjobs.JobCancelled), anyio.fail_after(5):
                await handle.result(timeout=5)
            await wait_for(lambda: f"hook {handle}" in seen)
            assert seen[0] == "shield done" and "not cancelled" not in seen
            await wait_for(lambda: w.statistics()["busy"] == 0)
            assert await redis.hlen(f"{{asyncjobs}}:inflight:{w.process_id}") == 0
        assert await redis.zcard("{asyncjobs}:retry") == 0
        assert await redis.zcard("{asyncjobs}:dead") == 0
        assert (await app.status(handle)).state == "cancelled"
    finally:
        await app.aclose()


async def test_cancel_across_two_worker_processes(redis_url: str, redis: aioredis.Redis) -> None:
    """Two worker subprocesses each run one job; app.cancel ends each on its host within
    about a second, as a "cancelled" outcome: acked, not retried, not dead."""
    from tests.apps import cancelling
    from tests.conftest import spawn_worker

    procs = [spawn_worker(redis_url, "-c", "1", app="tests.apps.cancelling:app") for _ in "ab"]
    cancelling.app.redis_url = redis_url
    app = cancelling.app
    try:
        handles = [await cancelling.forever.defer(n) for n in range(2)]
        assert None not in handles

        async def both_running() -> bool:
            states = [await app.status(h) for h in handles if h is not None]
            return all(s.state == "running" and s.progress is not None for s in states)

        await wait_for(both_running, timeout=20)
        states = [await app.status(h) for h in handles if h is not None]
        assert states[0].process != states[1].process  # one job on each process
        for h in handles:
            assert h is not None
            assert await app.cancel(h) == "cancelling"
            with anyio.fail_after(1.5), pytest.raises(asyncjobs.JobCancelled):
                await h.result()
            assert (await app.status(h)).state == "cancelled"
        await wait_for(lambda: _count(redis, "test:cancel-hook", 2), timeout=5)
        assert all(p.poll() is None for p in procs)  # the workers go on
        for s in states:
            assert await redis.hlen(f"{{asyncjobs}}:inflight:{s.process}") == 0
        assert await redis.zcard("{asyncjobs}:retry") == 0
        assert await redis.zcard("{asyncjobs}:dead") == 0
        assert await redis.llen("{asyncjobs}:queue:default") == 0
    finally:
        await app.aclose()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(15)


async def _count(redis: aioredis.Redis, key: str, n: int) -> bool:
    return int(await redis.llen(key)) >= n


async def test_cli_cancel_and_job(redis_url: str) -> None:
    from tests.apps import cancelling
    from tests.conftest import cli

    cancelling.app.redis_url = redis_url
    try:
        handle = await cancelling.forever.defer(7)
        assert handle is not None
        shown = await cli(redis_url, "job", handle)
        assert shown.returncode == 0, shown.stderr
        assert b"status" in shown.stdout and b"queued since" in shown.stdout
        done = await cli(redis_url, "cancel", handle)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{handle}: removed".encode()
        # Ended: no longer in any set, still shown through its status.
        shown = await cli(redis_url, "job", handle, "--json")
        assert shown.returncode == 0, shown.stderr
        assert b'"state": "cancelled"' in shown.stdout
        again = await cli(redis_url, "cancel", handle)
        assert again.returncode == 1 and b"not found" in again.stderr
    finally:
        await cancelling.app.aclose()


async def test_cancel_a_job_fetched_ahead_never_runs_it(
    redis_url: str, redis: aioredis.Redis
) -> None:
    """A job a worker holds but has not started (prefetched behind a busy slot) is
    reported cancelled when its turn comes, without running."""
    app = make_app(redis_url)
    gate = asyncio.Event()
    ran: list[int] = []

    @app.job(track_status=True, name="slot")
    async def slot(n: int) -> None:
        ran.append(n)
        await gate.wait()

    try:
        first = await slot.defer(1)
        async with running(app.worker(concurrency=1, prefetch=1)) as w:
            await wait_for(lambda: ran == [1])
            second = await slot.defer(2)
            assert first is not None and second is not None
            inflight = f"{{asyncjobs}}:inflight:{w.process_id}"
            await wait_for(lambda: redis.hexists(inflight, second))
            assert await app.cancel(second) == "cancelling"

            async def second_cancelled() -> bool:
                return (await app.status(second)).state == "cancelled"

            await wait_for(second_cancelled)
            gate.set()
            await wait_for(lambda: w.statistics()["busy"] == 0)
        assert ran == [1]
        assert (await app.status(first)).state == "succeeded"
    finally:
        await app.aclose()


async def test_cancel_a_job_waiting_for_its_retry(redis_url: str, redis: aioredis.Redis) -> None:
    app = make_app(redis_url)

    @app.job(keep_result=60, retry_in=lambda count, exc: 3600, name="flaky")
    async def flaky() -> None:
        raise RuntimeError("down")

    try:
        handle = await flaky.defer()
        assert handle is not None
        async with running(app.worker()):
            await wait_for(lambda: redis.zcard("{asyncjobs}:retry"))
        assert (await app.status(handle)).state == "retrying"
        assert await app.cancel(handle) == "removed"
        assert await redis.zcard("{asyncjobs}:retry") == 0
        with pytest.raises(asyncjobs.JobCancelled):
            await handle.result(timeout=1)
    finally:
        await app.aclose()


async def test_result_through_server_middleware(redis_url: str) -> None:
    app = make_app(redis_url)
    seen: list[str] = []

    @app.server_middleware.add
    async def around(ctx: asyncjobs.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        seen.append(ctx.jid)
        return await call_next()

    @app.job(keep_result=60, name="double")
    async def double(n: int) -> int:
        return 2 * n

    try:
        handle = await double.defer(21)
        assert handle is not None
        async with running(app.worker()):
            assert await handle.result(timeout=5) == 42
        assert seen == [handle]
    finally:
        await app.aclose()


async def test_defer_many_and_jobs_that_do_not_run(redis_url: str) -> None:
    app = make_app(redis_url)

    @app.job(keep_result=60, name="square")
    async def square(n: int) -> int:
        return n * n

    try:
        jids = await square.defer_many([(n,) for n in range(3)])
        assert None not in jids
        assert [(await app.status(j)).state for j in jids if j] == ["queued"] * 3
        stale = await square.configure(expires_in=0.01).defer(9)
        assert stale is not None
        await anyio.sleep(0.05)
        async with running(app.worker()):
            assert [await square.result(j, timeout=5) for j in jids if j] == [0, 1, 4]
            with pytest.raises(asyncjobs.JobFailed) as info:
                await stale.result(timeout=5)
        assert info.value.state == "failed" and info.value.error_class == "NotRun"
    finally:
        await app.aclose()
