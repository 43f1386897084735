"""The outbox relay under SIGKILL (#15): every committed job reaches Redis once, a
rolled-back one never, however often the standalone relays (``asyncjobs outbox
relay``, two at once) are killed while jobs flow; and, on PostgreSQL, a relay killed in the exact
window between its move to Redis and its commit does not push those rows twice."""

from __future__ import annotations

import random
import signal
import subprocess
from collections import Counter
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

import asyncjobs
from asyncjobs._payload import DECODER
from asyncjobs.outbox import Outbox
from tests.conftest import WORKER_CMD, subprocess_env
from tests.devserver import RedisProcess
from tests.faults._support import client, report
from tests.sqldb import KINDS, database, psql

pytestmark = pytest.mark.faults

QUEUE = "{asyncjobs}:queue:default"
JOBS = 600


def spawn_relay(redis_url: str, db_url: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*WORKER_CMD, "outbox", "relay", "--db", db_url, "--batch", "5", "--poll", "0.02",
             *extra],
            env=subprocess_env(redis_url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def drain(redis_url: str, db_url: str) -> str:
    """Run ``relay --once`` until it exits; its summary line."""
    done = subprocess.run(
        [*WORKER_CMD, "outbox", "relay", "--db", db_url, "--once"],
        env=subprocess_env(redis_url),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


def make_app(url: str) -> tuple[asyncjobs.App, Outbox]:
    app = asyncjobs.App(url)

    @app.job(name="flow")
    async def flow(n: int) -> None:
        pass

    return app, Outbox(app)


async def count(engine: AsyncEngine, outbox: Outbox) -> int:
    return await outbox.pending(engine)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
async def test_relay_sigkilled_while_jobs_flow_moves_each_committed_job_once(
    kind: str, tmp_path: Path
) -> None:
    rng = random.Random(15)
    with RedisProcess() as server, database(kind, tmp_path) as db_url:
        app, outbox = make_app(server.url)
        flow = app.jobs["flow"]
        engine = create_async_engine(db_url)
        r = client(server.url)
        log = tmp_path / "relay.log"
        relays: list[subprocess.Popen[bytes]] = []
        kills = 0
        committed: list[str] = []
        rolled_back: list[str] = []
        try:
            await outbox.create_table(engine)
            # Two relays at once, so they also race each other for the rows.
            relays = [spawn_relay(server.url, db_url, log) for _ in range(2)]
            producing = True

            async def killer() -> None:
                nonlocal kills
                while producing:
                    # Once the relays have moved something (a relay takes a while to
                    # start), one of them at a random moment of its work.
                    before = await r.llen(QUEUE)
                    while producing and await r.llen(QUEUE) == before:
                        await anyio.sleep(0.005)
                    await anyio.sleep(rng.uniform(0, 0.3))
                    k = rng.randrange(len(relays))
                    relays[k].send_signal(signal.SIGKILL)
                    relays[k].wait(10)
                    kills += 1
                    relays[k] = spawn_relay(server.url, db_url, log)

            async with anyio.create_task_group() as tg:
                tg.start_soon(killer)
                i = 0
                while i < JOBS:
                    size = rng.randint(1, 4)
                    keep = rng.random() > 0.2
                    async with AsyncSession(engine) as session:
                        await session.begin()
                        jids = []
                        for _ in range(size):
                            h = await outbox.defer(session, flow, i)
                            assert h is not None
                            jids.append(h.jid)
                            i += 1
                        if keep:
                            await session.commit()
                            committed.extend(jids)
                        else:
                            await session.rollback()
                            rolled_back.extend(jids)
                    await anyio.sleep(rng.uniform(0.02, 0.1))
                producing = False
            for p in relays:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
                kills += 1
            summary = drain(server.url, db_url)
            left = await count(engine, outbox)
            raws = await r.lrange(QUEUE, 0, -1)
        finally:
            for p in relays:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            await r.aclose()
            await engine.dispose()
            await app.aclose()
    got = Counter(DECODER.decode(raw).jid for raw in raws)
    logged = log.read_text()
    report(
        f"outbox_kills[{kind}]",
        kills=kills,
        committed=len(committed),
        rolled_back=len(rolled_back),
        final_relay=summary,
        found_in_redis_already=logged.count("were moved to Redis before"),
    )
    assert left == 0
    twice = sorted(j for j, n in got.items() if n > 1)
    assert not twice, f"pushed more than once: {twice}"
    assert set(got) == set(committed), (
        f"missing: {sorted(set(committed) - set(got))}, "
        f"unexpected: {sorted(set(got) - set(committed))}"
    )
    assert kills >= 8


@pytest.mark.timeout(60)
async def test_relay_killed_between_move_and_commit_does_not_push_twice(
    tmp_path: Path,
) -> None:
    """On PostgreSQL a deferred trigger holds the relay's commit (pg_sleep) after its
    move to Redis: the relay is SIGKILLed right there, the server aborts its
    transaction (client_connection_check_interval), the rows come back; the next relay
    finds them marked in Redis and deletes them without pushing them again."""
    with RedisProcess() as server, database("postgresql", tmp_path) as db_url:
        name = db_url.rsplit("/", 1)[1]
        psql(f"ALTER DATABASE {name} SET client_connection_check_interval = '100ms'")
        app, outbox = make_app(server.url)
        flow = app.jobs["flow"]
        engine = create_async_engine(db_url)
        r = client(server.url)
        relay: subprocess.Popen[bytes] | None = None
        try:
            await outbox.create_table(engine)
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        "CREATE FUNCTION slow_commit() RETURNS trigger AS $$ BEGIN "
                        "PERFORM pg_sleep(60); RETURN NULL; END $$ LANGUAGE plpgsql"
                    )
                )
                await conn.execute(
                    sa.text(
                        "CREATE CONSTRAINT TRIGGER slow_commit AFTER DELETE ON asyncjobs_outbox "
                        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
                    )
                )
            async with AsyncSession(engine) as session, session.begin():
                jids = [await outbox.defer(session, flow, i) for i in range(5)]
            relay = spawn_relay(server.url, db_url, tmp_path / "relay.log")
            with anyio.fail_after(20):
                while await r.llen(QUEUE) < 5:  # moved; now held in its commit
                    await anyio.sleep(0.02)
            relay.send_signal(signal.SIGKILL)
            relay.wait(10)
            with anyio.fail_after(20):  # the server aborted the transaction
                while True:
                    try:
                        if await count(engine, outbox) == 5:
                            break
                    except sa.exc.DBAPIError:
                        pass
                    await anyio.sleep(0.1)
            async with engine.begin() as conn:
                await conn.execute(sa.text("DROP TRIGGER slow_commit ON asyncjobs_outbox"))
            summary = drain(server.url, db_url)
            raws = await r.lrange(QUEUE, 0, -1)
            left = await count(engine, outbox)
        finally:
            if relay is not None and relay.poll() is None:
                relay.kill()
                relay.wait(10)
            await r.aclose()
            await engine.dispose()
            await app.aclose()
    assert summary == "moved 0 rows (5 were in Redis already)"
    got = [DECODER.decode(raw).jid for raw in raws]
    assert sorted(got) == sorted(j for j in jids if j is not None)
    assert left == 0
