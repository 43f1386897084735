"""The transactional outbox (#15) on SQLite and PostgreSQL, against a real Redis: a
commit enqueues, a rollback never does, rows move once each (a repeated move, as after
a relay killed before its commit, pushes nothing), several relays at once, scheduled
jobs, the relay in a worker and standalone, and defer after commit."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

import asyncjobs
from asyncjobs._errors import ArgumentError, ConfigError, RedisUnavailable
from asyncjobs._payload import DECODER
from asyncjobs._store import OutboxRow
from asyncjobs.outbox import Outbox, defer_after_commit
from tests.conftest import WORKER_CMD, cli, subprocess_env, wait_for
from tests.sqldb import KINDS, database

pytestmark = [pytest.mark.timeout(90)]

NS = "{asyncjobs}"
QUEUE = f"{NS}:queue:default"
SCHEDULE = f"{NS}:schedule"

orders = sa.Table(
    "orders",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("total", sa.Integer, nullable=False),
)


@pytest.fixture(params=KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    e = create_async_engine(db_url)
    async with e.begin() as conn:
        await conn.run_sync(orders.create)
    yield e
    await e.dispose()


@pytest.fixture
async def outbox(app: asyncjobs.App, engine: AsyncEngine) -> Outbox:
    ob = Outbox(app)
    await ob.create_table(engine)
    return ob


def spawn_relay(redis_url: str, db_url: str) -> subprocess.Popen[bytes]:
    """``asyncjobs outbox relay`` in a subprocess, its output piped."""
    return subprocess.Popen(
        [*WORKER_CMD, "outbox", "relay", "--db", db_url, "--poll", "0.05"],
        env=subprocess_env(redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def jids_of(raws: list[Any]) -> list[str]:
    return [DECODER.decode(r).jid for r in raws]


async def queued(redis: aioredis.Redis) -> list[str]:
    return jids_of(await redis.lrange(QUEUE, 0, -1))


async def test_commit_enqueues_the_payload_defer_would_push(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox, redis: aioredis.Redis
) -> None:
    @app.job(name="welcome", retry=3)
    async def welcome(user_id: int, note: str = "") -> None:
        pass

    @app.client_middleware.add
    async def stamp(payload: Any, call_next: Any) -> str | None:
        payload.meta["request"] = "r-1"
        result: str | None = await call_next(payload)
        return result

    async with AsyncSession(engine) as session, session.begin():
        await session.execute(sa.insert(orders).values(id=1, total=10))
        handle = await outbox.defer(session, welcome, 7, note="hi")
        assert handle is not None
        async with engine.connect() as other:  # not visible before the commit
            n = (await other.execute(sa.select(sa.func.count()).select_from(outbox.table))).scalar()
            assert n == 0
        [row] = (await session.execute(sa.select(outbox.table.c.payload))).all()
    assert await redis.llen(QUEUE) == 0  # nothing reaches Redis before a relay moves it
    assert await outbox.pending(engine) == 1

    relay = outbox.relay(engine)
    assert await relay.run_once() == 1
    [raw] = await redis.lrange(QUEUE, 0, -1)
    assert raw == bytes(row[0])  # the bytes written in the transaction, unchanged
    assert await outbox.pending(engine) == 0
    assert await redis.keys(f"{NS}:outbox:*") == []  # marks removed after the commit
    assert await redis.sismember(f"{NS}:queues", "default")

    # The same fields as a plain defer of the same call (but the jid and the times).
    direct = await welcome.defer(7, note="hi")
    assert direct is not None
    raws = await redis.lrange(QUEUE, 0, -1)
    via_outbox, via_defer = json.loads(raws[1]), json.loads(raws[0])
    assert via_outbox["jid"] == handle.jid and via_defer["jid"] == direct.jid
    for p in (via_outbox, via_defer):
        del p["jid"], p["created_at"], p["enqueued_at"]
    assert via_outbox == via_defer
    assert via_outbox["meta"] == {"request": "r-1"} and via_outbox["retry"] == 3


async def test_rollback_never_enqueues(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox, redis: aioredis.Redis
) -> None:
    @app.job(name="charge")
    async def charge(order_id: int) -> None:
        pass

    async with AsyncSession(engine) as session:
        async with session.begin():
            await outbox.defer(session, charge, 1)
            await session.rollback()
        with pytest.raises(RuntimeError, match="boom"):
            async with session.begin():
                await outbox.defer(session, charge, 2)
                raise RuntimeError("boom")
    async with engine.connect() as conn:
        await outbox.defer(conn, charge, 3)
        await conn.rollback()
    relay = outbox.relay(engine)
    assert await relay.run_once() == 0
    assert await redis.llen(QUEUE) == 0 and await outbox.pending(engine) == 0


async def test_core_connection_commits(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox, redis: aioredis.Redis
) -> None:
    @app.job(name="ship")
    async def ship(order_id: int) -> None:
        pass

    async with engine.begin() as conn:
        await conn.execute(sa.insert(orders).values(id=5, total=1))
        handle = await outbox.defer(conn, ship.configure(queue="mail"), 5)
    assert await outbox.relay(engine).run_once() == 1
    assert jids_of(await redis.lrange(f"{NS}:queue:mail", 0, -1)) == [handle]


async def test_a_repeated_move_pushes_nothing_twice(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox, redis: aioredis.Redis
) -> None:
    """A relay killed after its move and before its delete committed leaves the rows
    in the table, marked in Redis: the next relay deletes them without pushing."""

    @app.job(name="once")
    async def once(n: int) -> None:
        pass

    async with AsyncSession(engine) as session, session.begin():
        for i in range(5):
            await outbox.defer(session, once, i)
    # The first relay's move, whose commit never happened: the rows stay.
    t = outbox.table
    async with engine.connect() as conn:
        rows = [
            OutboxRow(r.id, r.jid, r.queue, r.at, bytes(r.payload))
            for r in await conn.execute(sa.select(t).order_by(t.c.id))
        ]
    store = await app.open_store()
    assert await store.outbox_move(rows[:3], 60) == 3
    assert await redis.llen(QUEUE) == 3
    relay = outbox.relay(engine)
    assert await relay.run_once() == 5
    assert (relay.moved, relay.skipped) == (2, 3)
    assert sorted(await queued(redis)) == sorted(r.jid for r in rows)
    assert await outbox.pending(engine) == 0


async def test_scheduled_jobs_go_to_the_schedule(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox, redis: aioredis.Redis
) -> None:
    import datetime as dt

    @app.job(name="remind")
    async def remind(n: int) -> None:
        pass

    at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    async with AsyncSession(engine) as session, session.begin():
        later = await outbox.defer(session, remind.configure(delay=600), 1)
        fixed = await outbox.defer(session, remind.configure(at=at), 2)
        now = await outbox.defer(session, remind, 3)
    assert await outbox.relay(engine).run_once() == 3
    entries: list[Any] = await redis.zrange(SCHEDULE, 0, -1, withscores=True)
    scheduled: dict[str, float] = {DECODER.decode(m).jid: s for m, s in entries}
    assert later is not None and fixed is not None
    assert set(scheduled) == {later, fixed}
    assert scheduled[fixed] == pytest.approx(at.timestamp())
    assert scheduled[later] == pytest.approx(time.time() + 600, abs=30)
    assert await queued(redis) == [now]
    assert await redis.llen(f"{NS}:wake-scheduler") == 1  # a sooner job wakes schedulers


async def test_relay_in_worker_runs_committed_jobs_only(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox, redis: aioredis.Redis
) -> None:
    ran: list[int] = []

    @app.job(name="record")
    async def record(n: int) -> None:
        ran.append(n)

    relay = outbox.relay_in_worker(engine, poll=0.05)
    async with app.run_worker(scheduler_poll=0.2):
        async with AsyncSession(engine) as session:
            async with session.begin():
                await outbox.defer(session, record, 1)
                await outbox.defer(session, record.configure(delay=0.3), 2)
            async with session.begin():
                await outbox.defer(session, record, 3)
                await session.rollback()
        await wait_for(lambda: sorted(ran) == [1, 2], timeout=10)
    assert relay.moved == 2
    await anyio.sleep(0.2)
    assert sorted(ran) == [1, 2]
    assert await outbox.pending(engine) == 0


async def test_several_relays_move_each_row_once(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox, redis: aioredis.Redis
) -> None:
    @app.job(name="many")
    async def many(n: int) -> None:
        pass

    committed: list[str] = []
    relays = [outbox.relay(engine, batch=7, poll=0.01) for _ in range(4)]

    async def produce(k: int) -> None:
        for i in range(30):
            async with AsyncSession(engine) as session, session.begin():
                h = await outbox.defer(session, many, k * 100 + i)
                assert h is not None
                await session.execute(sa.insert(orders).values(id=k * 1000 + i, total=i))
            committed.append(h.jid)

    async with anyio.create_task_group() as tg:
        for r in relays:
            tg.start_soon(r.run)
        async with anyio.create_task_group() as producers:
            for k in range(3):
                producers.start_soon(produce, k)
        await wait_for(lambda: sum(r.moved for r in relays) >= 90, timeout=30)
        for r in relays:
            r.stop()
    got = await queued(redis)
    assert len(got) == len(set(got)) == 90
    assert set(got) == set(committed)
    assert sum(r.skipped for r in relays) == 0
    assert await outbox.pending(engine) == 0


async def test_bad_calls_are_refused_before_any_write(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox
) -> None:
    @app.job(name="typed")
    async def typed(n: int) -> None:
        pass

    @app.job(name="uniq", unique=True)
    async def uniq(n: int) -> None:
        pass

    other = asyncjobs.App(app.redis_url)

    @other.job(name="elsewhere")
    async def elsewhere() -> None:
        pass

    async with AsyncSession(engine) as session, session.begin():
        with pytest.raises(ArgumentError, match="argument 'n'"):
            await outbox.defer(session, typed, "x")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="unique jobs cannot go through the outbox"):
            await outbox.defer(session, uniq, 1)
        with pytest.raises(ConfigError, match="belongs to another app"):
            await outbox.defer(session, elsewhere)
        with pytest.raises(ConfigError, match="takes a job"):
            await outbox.defer(session, "typed")  # type: ignore[arg-type]
    assert await outbox.pending(engine) == 0
    with pytest.raises(ConfigError, match="batch must be"):
        outbox.relay(engine, batch=0)
    with pytest.raises(ConfigError, match="AsyncEngine or a database URL"):
        outbox.relay(42)  # type: ignore[arg-type]


async def test_a_middleware_that_stops_the_job_writes_no_row(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox
) -> None:
    @app.job(name="stopped")
    async def stopped() -> None:
        pass

    @app.client_middleware.add
    async def drop(payload: Any, call_next: Any) -> str | None:
        return None

    async with AsyncSession(engine) as session, session.begin():
        assert await outbox.defer(session, stopped) is None
    assert await outbox.pending(engine) == 0


async def test_defer_after_commit(
    app: asyncjobs.App, engine: AsyncEngine, redis: aioredis.Redis
) -> None:
    @app.job(name="after")
    async def after(n: int) -> None:
        pass

    async with AsyncSession(engine) as session:
        async with session.begin():
            await session.execute(sa.insert(orders).values(id=1, total=1))
            first = defer_after_commit(session, after, 1)
            assert await redis.llen(QUEUE) == 0  # nothing before the commit
            savepoint = await session.begin_nested()
            defer_after_commit(session, after, 2)  # dropped with its savepoint
            await savepoint.rollback()
            kept = await session.begin_nested()
            third = defer_after_commit(session, after, 3)
            await kept.commit()
        assert sorted(await queued(redis)) == sorted([first, third])
        async with session.begin():
            defer_after_commit(session, after, 4)
            await session.rollback()
        async with session.begin():
            pass  # a later commit does not defer what a rollback dropped
    assert len(await queued(redis)) == 2
    with pytest.raises(ArgumentError):
        async with AsyncSession(engine) as session, session.begin():
            defer_after_commit(session, after, "x")  # type: ignore[arg-type]


async def test_defer_after_commit_with_redis_away_raises_after_the_commit(
    engine: AsyncEngine,
) -> None:
    app = asyncjobs.App("redis://127.0.0.1:1/0")

    @app.job(name="lost")
    async def lost() -> None:
        pass

    try:
        async with AsyncSession(engine) as session:
            with pytest.raises(RedisUnavailable):
                async with session.begin():
                    await session.execute(sa.insert(orders).values(id=9, total=9))
                    defer_after_commit(session, lost)
        async with engine.connect() as conn:  # the data is committed all the same
            assert (await conn.execute(sa.select(orders.c.id))).scalars().all() == [9]
    finally:
        await app.aclose()


async def test_cli_relay_once_and_errors(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox, redis: aioredis.Redis, db_url: str
) -> None:
    @app.job(name="cli_job")
    async def cli_job(n: int) -> None:
        pass

    async with AsyncSession(engine) as session, session.begin():
        jids = [await outbox.defer(session, cli_job, i) for i in range(3)]
    assert (await cli(app.redis_url, "outbox", "pending", "--db", db_url)).stdout == b"3\n"
    done = await cli(app.redis_url, "outbox", "relay", "--db", db_url, "--once")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"moved 3 rows (0 were in Redis already)\n"
    assert sorted(await queued(redis)) == sorted(j for j in jids if j is not None)
    missing = await cli(app.redis_url, "outbox", "relay", "--db", db_url, "--table", "nope")
    assert missing.returncode == 2
    [line] = missing.stderr.decode().splitlines()
    assert line.startswith("asyncjobs: error: cannot read the outbox table nope"), line
    sync = await cli(app.redis_url, "outbox", "pending", "--db", "sqlite:///x.db")
    assert sync.returncode == 2 and b"async driver" in sync.stderr
    ddl = await cli(app.redis_url, "outbox", "ddl", "--dialect", "sqlite")
    assert ddl.returncode == 0 and b"CREATE TABLE asyncjobs_outbox" in ddl.stdout


async def test_postgresql_relay_wakes_at_commit_not_at_its_poll(
    app: asyncjobs.App, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """create_table's trigger notifies at commit: a relay polling every 30 s moves a
    committed job at once (it would wait the 30 s without the notification)."""

    @app.job(name="woken")
    async def woken(n: int) -> None:
        pass

    with database("postgresql", tmp_path) as url:
        engine = create_async_engine(url)
        try:
            ob = Outbox(app)
            await ob.create_table(engine)
            await ob.create_table(engine)  # again: idempotent, trigger included
            assert "CREATE TRIGGER" in ob.ddl("postgresql") and "TRIGGER" not in ob.ddl("sqlite")
            relay = ob.relay(engine, poll=30)
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay.run)
                await wait_for(lambda: relay.listening, timeout=10)
                await anyio.sleep(0.3)  # past its first look: now waiting up to 30 s
                for n in range(3):
                    async with AsyncSession(engine) as session, session.begin():
                        await ob.defer(session, woken, n)
                    await wait_for(lambda n=n: relay.moved == n + 1, timeout=5)
                relay.stop()
            assert not relay.listening
            assert await redis.llen(QUEUE) == 3
        finally:
            await engine.dispose()


async def test_postgresql_schema_table_name_and_your_metadata(
    app: asyncjobs.App, redis: aioredis.Redis, tmp_path: Path
) -> None:
    @app.job(name="named")
    async def named(n: int) -> None:
        pass

    metadata = sa.MetaData()
    outbox = Outbox(app, table_name="Job Outbox", schema="jobs", metadata=metadata)
    assert metadata.tables["jobs.Job Outbox"] is outbox.table
    with database("postgresql", tmp_path) as url:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("CREATE SCHEMA jobs"))
            await outbox.create_table(engine)
            relay = outbox.relay(engine, poll=30)
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay.run)
                await wait_for(lambda: relay.listening, timeout=10)
                await anyio.sleep(0.3)
                async with AsyncSession(engine) as session, session.begin():
                    handle = await outbox.defer(session, named, 1)
                await wait_for(lambda: relay.moved == 1, timeout=5)  # woken by the trigger
                relay.stop()
            assert await queued(redis) == [handle]
        finally:
            await engine.dispose()


async def test_defer_many_in_one_insert(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox, redis: aioredis.Redis
) -> None:
    import datetime as dt

    @app.job(name="bulk")
    async def bulk(n: int, tag: str = "") -> None:
        pass

    @app.client_middleware.add
    async def skip_odd(payload: Any, call_next: Any) -> str | None:
        if b'"n":3' in bytes(payload.args):
            return None
        result: str | None = await call_next(payload)
        return result

    inserts: list[int] = []
    sa.event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda *a: inserts.append(1) if a[2].startswith("INSERT") else None,
    )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    async with AsyncSession(engine) as session, session.begin():
        jids = await outbox.defer_many(
            session, bulk, [(1,), {"n": 2, "tag": "x"}, (3,)], at=[None, later, None]
        )
        with pytest.raises(ArgumentError):  # one bad item: nothing written
            await outbox.defer_many(session, bulk, [(4,), ("five",)])
    assert len(inserts) == 1
    assert jids[2] is None and None not in jids[:2]
    assert await outbox.relay(engine).run_once() == 2
    assert await queued(redis) == [jids[0]]
    entries: list[Any] = await redis.zrange(SCHEDULE, 0, -1, withscores=True)
    [(member, score)] = entries
    assert DECODER.decode(member).jid == jids[1] and score == pytest.approx(later.timestamp())


async def test_relay_in_worker_with_a_bad_database_url_stops_the_start(
    app: asyncjobs.App,
) -> None:
    Outbox(app).relay_in_worker("sqlite:///not-async.db")
    worker = app.worker()
    with pytest.raises(ConfigError, match="outbox relay: bad database URL.*async driver"):
        await worker.run()


async def test_cli_relay_runs_until_sigterm(
    app: asyncjobs.App, engine: AsyncEngine, outbox: Outbox, redis: aioredis.Redis, db_url: str
) -> None:
    import signal

    @app.job(name="served")
    async def served(n: int) -> None:
        pass

    proc = spawn_relay(app.redis_url, db_url)
    try:
        async with AsyncSession(engine) as session, session.begin():
            jids = await outbox.defer_many(session, served, [(n,) for n in range(4)])

        async def all_moved() -> bool:
            return await redis.llen(QUEUE) == 4

        await wait_for(all_moved, timeout=20)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert b"outbox relay: SIGTERM, stopping" in err
    assert sorted(await queued(redis)) == sorted(j for j in jids if j is not None)
    assert await outbox.pending(engine) == 0
