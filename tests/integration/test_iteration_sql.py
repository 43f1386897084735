"""The keyset source of iterable jobs (#14) on SQLAlchemy's async engine, against a
real SQLite file and a real PostgreSQL database (created for the test, dropped after):
every row once, in key order, resuming after a cursor; and a job over it quieted
mid-table that a second worker finishes, no row skipped or done twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import asyncjobs
from asyncjobs import ConfigError, Iteration
from asyncjobs.iteration import sql_keyset
from tests.conftest import running, wait_for

# The machine's PostgreSQL (trust auth); each test makes a database of its own there.
PG = os.environ.get("ASYNCJOBS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
ASYNCPG = PG.replace("postgresql://", "postgresql+asyncpg://", 1)

metadata = sa.MetaData()
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
)
# Ids with gaps (every third number is missing), inserted out of order.
IDS = sorted({n for n in range(1, 1500) if n % 3}, key=lambda n: (n * 7919) % 1499)


@contextlib.asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A PostgreSQL database of our own, dropped at the end."""
    name = f"asyncjobs_iter_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        eng = create_async_engine(f"{ASYNCPG}/postgres", isolation_level="AUTOCOMMIT")
        try:
            async with eng.connect() as conn:
                await conn.execute(sa.text(sql))
        finally:
            await eng.dispose()

    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ASYNCPG}/{name}"
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The users table, filled, in a SQLite file or a PostgreSQL database of our own."""
    if request.param == "sqlite":
        async with _filled(f"sqlite+aiosqlite:///{tmp_path / 'users.db'}") as eng:
            yield eng
    else:
        async with pg_database() as url, _filled(url) as eng:
            yield eng


@contextlib.asynccontextmanager
async def _filled(url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(url)
    try:
        async with eng.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(metadata.create_all)
            await conn.execute(
                users.insert(),
                [{"id": i, "name": f"user{i}", "active": i % 2 == 0} for i in IDS],
            )
        yield eng
    finally:
        await eng.dispose()


@pytest.mark.timeout(60)
async def test_keyset_reads_every_row_in_key_order_and_resumes_after_a_cursor(
    engine: AsyncEngine,
) -> None:
    want = sorted(IDS)
    got = [(row.id, c) async for row, c in sql_keyset(engine, users, "id", batch=97)]
    assert [i for i, _ in got] == want and [c for _, c in got] == want
    # Resuming after a cursor starts with the next key (not at it, not OFFSET-shifted).
    after = want[500]
    rest = [row.id async for row, _ in sql_keyset(engine, users, "id", cursor=after, batch=50)]
    assert rest == want[501:]
    # A table by name (reflected), a condition (on a column by name: the reflected
    # table is not ``users``) and a choice of columns.
    active = [
        row
        async for row, _ in sql_keyset(
            engine,
            "users",
            "id",
            where=sa.column("active", sa.Boolean).is_(True),
            columns=["name"],
            batch=100,
        )
    ]
    assert [r.name for r in active] == [f"user{i}" for i in want if i % 2 == 0]
    assert set(active[0]._mapping) == {"name", "id"}  # the key comes along for the cursor
    # A batch size that divides the table exactly ends without an extra row or loop.
    assert len([r async for r, _ in sql_keyset(engine, users, "id", batch=len(want))]) == len(want)


@pytest.mark.timeout(30)
async def test_keyset_refuses_bad_input_in_one_line(engine: AsyncEngine) -> None:
    with pytest.raises(ConfigError, match="no column 'nope'"):
        await anext(sql_keyset(engine, users, "nope"))
    with pytest.raises(ConfigError, match="batch must be"):
        await anext(sql_keyset(engine, users, "id", batch=0))
    with pytest.raises(ConfigError, match="AsyncEngine"):
        await anext(sql_keyset(object(), users, "id"))
    with pytest.raises(ConfigError, match="no column 'email'"):
        await anext(sql_keyset(engine, users, "id", columns=["email"]))


@pytest.mark.timeout(60)
async def test_a_job_over_a_table_quieted_midway_is_finished_by_another_worker(
    engine: AsyncEngine, redis_url: str, redis: aioredis.Redis
) -> None:
    app = asyncjobs.App(redis_url)
    gate = asyncio.Event()
    reached = asyncio.Event()
    want = sorted(IDS)
    stop_at = want[300]

    @app.iterable_job(name="sync_users", save_every=50)
    async def sync_users(it: Iteration[int]) -> AsyncIterator[int]:
        async for row, cursor in sql_keyset(engine, users, "id", cursor=it.cursor, batch=64):
            if row.id == stop_at and not it.resumed:
                reached.set()
                await gate.wait()
            await redis.rpush("test:rows", row.id)
            yield cursor

    try:
        jid = await sync_users.defer()
        assert jid is not None
        worker = app.worker()
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(10):
                await reached.wait()
            worker.quiet_down()
            gate.set()
            await wait_for(lambda: redis.llen("{asyncjobs}:queue:default"), timeout=10)
            cursor = json.loads(await redis.hget(f"{{asyncjobs}}:iter:{jid}", "cursor") or "null")
            assert cursor == stop_at
            worker.stop()
        async with running(app.worker()):
            await wait_for(lambda: redis.get("{asyncjobs}:stat:processed"), timeout=20)
        rows = [int(x) for x in await redis.lrange("test:rows", 0, -1)]
        assert rows == want  # every row once, in key order, across the two runs
        assert not await redis.exists(f"{{asyncjobs}}:iter:{jid}")
    finally:
        await app.aclose()
