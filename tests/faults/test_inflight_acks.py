"""Jobs in a live worker's in-flight hash that nothing in it knows of.

A fetch error while an acknowledgement is on its way must not run a job twice.

After a fetch error the fetcher reconciles: it reads the in-flight hash and starts the
fields nothing in the process knows of (a fetch whose reply was lost). A job that
succeeded and whose ack is being written at that moment is still in the hash; it must
count as known until Redis confirmed the ack (or the ack failed and is pending again).

Deterministic: a gate proxy holds the ack (``done.lua``) on its way to Redis, the test
kills the fetcher's connection (``CLIENT KILL``), the fetcher reconciles while the ack
is held, then the gate lets the ack through.

And a job that lands in the in-flight hash or the landing list after that reconcile
(Redis ran the fetch late) must not wait there until the worker stops.
"""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs._payload import inflight_field
from asyncjobs._redis import scripts
from asyncjobs._worker import fetcher as fetcher_module
from tests.conftest import running, wait_for
from tests.devserver import RedisProcess
from tests.faults._gate import Gate

pytestmark = pytest.mark.faults


async def _blocked_client(r: aioredis.Redis) -> int | None:
    """The id of the connection waiting in BLMOVE (the idle fetcher), if any."""
    for c in await r.client_list():
        if c.get("cmd") == "blmove":
            return int(c["id"])
    return None


@pytest.mark.timeout(30)
async def test_reconcile_does_not_rerun_a_job_whose_ack_is_being_written() -> None:
    with RedisProcess() as server:
        async with Gate(server.port) as gate:
            r = aioredis.Redis.from_url(server.url)
            app = asyncjobs.App(gate.url)
            ran: list[int] = []

            @app.job
            async def note(n: int) -> None:
                ran.append(n)

            try:
                async with running(app.worker(concurrency=2)) as w:
                    # A first job loads every script (a NOSCRIPT reply would bypass the
                    # gate's needle, the sha) and leaves the fetcher idle in BLMOVE.
                    await note.defer(0)
                    await wait_for(lambda: ran == [0])
                    await w.wait_idle()
                    await wait_for(lambda: _blocked_client(r))
                    gate.arm(scripts().done.sha.encode())
                    await note.defer(1)
                    with anyio.fail_after(5):
                        await gate.held.wait()  # job 1 succeeded; its ack is held
                    assert ran == [0, 1]
                    await wait_for(lambda: _blocked_client(r))  # the fetcher idles again
                    first = await _blocked_client(r)
                    assert first is not None
                    await r.client_kill_filter(_id=str(first))
                    fetcher = w.fetchers[0]

                    async def reconciled() -> bool:
                        # Idle in BLMOVE again, on a new connection: the reconcile ran.
                        blocked = await _blocked_client(r)
                        return blocked is not None and blocked != first

                    await wait_for(reconciled)
                    gate.release()
                    await w.wait_idle()
                    assert ran == [0, 1], "job 1 ran again after the reconcile"
                    assert fetcher.reconciled == 0
                    assert not await r.hlen(app.keys.inflight(w.process_id))
            finally:
                await app.aclose()
                await r.aclose()


@pytest.mark.timeout(30)
async def test_jobs_stranded_in_a_live_worker_are_found_and_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fetch and a ``BLMOVE`` that Redis runs after the fetcher's reconcile (a late
    retransmission after a partition) put jobs in the in-flight hash and the landing
    list of a live worker, with no task to run them: its self-check starts them."""
    monkeypatch.setattr(fetcher_module, "SELF_CHECK", 0.2, raising=False)
    with RedisProcess() as server:
        r = aioredis.Redis.from_url(server.url)
        app = asyncjobs.App(server.url)
        ran: list[int] = []

        @app.job
        async def note(n: int) -> None:
            ran.append(n)

        try:
            await note.defer_many([(1,), (2,)])
            queue = app.keys.queue("default")
            raws: list[bytes] = [await r.rpop(queue), await r.rpop(queue)]  # type: ignore[list-item]
            async with running(app.worker(concurrency=2)) as w:
                await wait_for(lambda: _blocked_client(r))
                # What Redis does for a fetch (fetch.lua) and for BLMOVE, run late.
                raw1, raw2 = raws
                assert raw1 is not None and raw2 is not None
                await r.hset(app.keys.inflight(w.process_id), inflight_field(raw1), raw1)
                await r.lpush(app.keys.landing(w.process_id), raw2)
                await wait_for(lambda: sorted(ran) == [1, 2], timeout=3)
                await w.wait_idle()
                assert w.fetchers[0].stranded == 2
                assert not await r.hlen(app.keys.inflight(w.process_id))
                assert not await r.llen(app.keys.landing(w.process_id))
            assert sorted(ran) == [1, 2]
        finally:
            await app.aclose()
            await r.aclose()
