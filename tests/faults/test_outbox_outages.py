"""The outbox relay through outages (#15): Redis down, then back; PostgreSQL's
connections cut under a running relay. Committed rows wait in the table meanwhile
(none lost, none pushed twice) and move once the outage ends, without a restart."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import asyncjobs
from asyncjobs._payload import DECODER
from asyncjobs.outbox import Outbox
from tests.conftest import wait_for
from tests.devserver import RedisProcess
from tests.faults._support import client
from tests.sqldb import database, psql

pytestmark = pytest.mark.faults

QUEUE = "{asyncjobs}:queue:default"


@pytest.mark.timeout(60)
async def test_relay_waits_out_a_redis_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "asyncjobs.outbox")
    with RedisProcess() as server, database("sqlite", tmp_path) as db_url:
        app = asyncjobs.App(server.url)

        @app.job(name="patient")
        async def patient(n: int) -> None:
            pass

        engine = create_async_engine(db_url)
        outbox = Outbox(app)
        r = client(server.url)
        try:
            await outbox.create_table(engine)
            relay = outbox.relay(engine, poll=0.05)
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay.run)
                await wait_for(lambda: relay.listening is False and app.store is not None)
                server.kill()
                async with AsyncSession(engine) as session, session.begin():
                    jids = [await outbox.defer(session, patient, n) for n in range(3)]
                await wait_for(lambda: "retrying" in caplog.text, timeout=10)
                assert await outbox.pending(engine) == 3  # rolled back, waiting
                server.restart()
                await wait_for(lambda: relay.moved == 3, timeout=15)
                relay.stop()
            got = [DECODER.decode(raw).jid for raw in await r.lrange(QUEUE, 0, -1)]
            assert sorted(got) == sorted(j for j in jids if j is not None)
            assert await outbox.pending(engine) == 0
            assert caplog.text.count("outbox relay: RedisUnavailable") == 1  # warned once
            assert "outbox relay: moving again" in caplog.text
        finally:
            await r.aclose()
            await engine.dispose()
            await app.aclose()


@pytest.mark.timeout(60)
async def test_relay_survives_its_postgresql_connections_cut(tmp_path: Path) -> None:
    with RedisProcess() as server, database("postgresql", tmp_path) as db_url:
        name = db_url.rsplit("/", 1)[1]
        app = asyncjobs.App(server.url)

        @app.job(name="cut")
        async def cut(n: int) -> None:
            pass

        # The test's own writes check their connection first; the relay's engine
        # does not, so it meets the cut connections.
        engine = create_async_engine(db_url, pool_pre_ping=True)
        relay_engine = create_async_engine(db_url)
        outbox = Outbox(app)
        r = client(server.url)
        try:
            await outbox.create_table(engine)
            relay = outbox.relay(relay_engine, poll=0.05)
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay.run)
                await wait_for(lambda: relay.listening, timeout=10)
                for n in range(3):
                    # Every connection of the database but psql's own: the relay's
                    # pooled one and its LISTEN connection.
                    psql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                    )
                    async with AsyncSession(engine) as session, session.begin():
                        await outbox.defer(session, cut, n)
                    await wait_for(lambda n=n: relay.moved == n + 1, timeout=15)
                await wait_for(lambda: relay.listening, timeout=10)  # listening again
                relay.stop()
            assert await r.llen(QUEUE) == 3
            assert await outbox.pending(engine) == 0
        finally:
            await r.aclose()
            await engine.dispose()
            await relay_engine.dispose()
            await app.aclose()


@pytest.mark.timeout(60)
async def test_relay_waits_while_redis_refuses_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis at maxmemory (OOM): the rows stay in the table, the relay warns once and
    moves them when Redis takes writes again."""
    caplog.set_level(logging.INFO, "asyncjobs.outbox")
    with RedisProcess() as server, database("sqlite", tmp_path) as db_url:
        app = asyncjobs.App(server.url)

        @app.job(name="full")
        async def full(n: int) -> None:
            pass

        engine = create_async_engine(db_url)
        outbox = Outbox(app)
        r = client(server.url)
        try:
            await outbox.create_table(engine)
            await r.config_set("maxmemory-policy", "noeviction")
            await r.config_set("maxmemory", "1")
            async with AsyncSession(engine) as session, session.begin():
                jids = [await outbox.defer(session, full, n) for n in range(3)]
            relay = outbox.relay(engine, poll=0.05)
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay.run)
                await wait_for(lambda: "RedisRefused" in caplog.text, timeout=10)
                assert await outbox.pending(engine) == 3
                await r.config_set("maxmemory", "0")
                await wait_for(lambda: relay.moved == 3, timeout=15)
                relay.stop()
            got = [DECODER.decode(raw).jid for raw in await r.lrange(QUEUE, 0, -1)]
            assert sorted(got) == sorted(j for j in jids if j is not None)
            assert caplog.text.count("RedisRefused") == 1
            assert "Traceback" not in caplog.text
        finally:
            await r.aclose()
            await engine.dispose()
            await app.aclose()
