"""Transactional enqueue for SQLAlchemy's async engine (#15): the outbox and its relay,
and the lighter ``defer_after_commit``.

``outbox.defer(session, job, ...)`` writes the job's payload (the same bytes ``defer``
would push, after the same client middleware) to an outbox table in the caller's
transaction: a rolled-back transaction enqueues nothing, a committed one always does.
A :class:`Relay` (in the worker, or ``asyncjobs outbox relay``) deletes committed rows
and moves them to Redis in one database transaction: the rows are deleted (and locked)
first, then moved by one script call that marks each row in Redis (``SET NX``, with a
TTL), then the delete commits. A relay killed after the move and before the commit
leaves the rows in the table, and the next relay finds their marks and does not push
them again; so every committed row reaches Redis once.

Needs the ``sql`` extra: ``pip install 'asyncjobs-redis[sql]'`` (SQLAlchemy with
asyncio, aiosqlite, asyncpg). The core of asyncjobs never imports this module.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import anyio

try:
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import (
        AsyncConnection,
        AsyncEngine,
        AsyncSession,
        create_async_engine,
    )
    from sqlalchemy.orm import Session, SessionTransaction
    from sqlalchemy.util import await_only
except ImportError as exc:  # pragma: no cover - the extra is installed in tests
    raise ImportError(
        "asyncjobs.outbox needs SQLAlchemy's asyncio support: pip install 'asyncjobs-redis[sql]'"
    ) from exc

from ._app import App
from ._errors import ConfigError, RedisRefused
from ._job import Deferrer, Job, JobHandle, _Options
from ._middleware import run_client
from ._payload import Payload
from ._redis import transient
from ._store import OutboxRow
from ._worker.backoff import Backoff

__all__ = ["DEFAULT_TABLE", "Outbox", "Relay", "defer_after_commit"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TABLE = "asyncjobs_outbox"
# How long a moved row's mark lives in Redis if its relay died before the delete
# committed (the marks of committed deletes are removed at once). A relay that comes
# back later than this after such a crash may push those rows a second time.
DEFAULT_MARK_TTL = 7 * 86400

log = logging.getLogger("asyncjobs.outbox")


def _split(job: Job[P, R] | Deferrer[P, R], what: str) -> tuple[Job[P, R], _Options]:
    if isinstance(job, Deferrer):
        return job._job, job._opts
    if isinstance(job, Job):
        return job, job._opts
    raise ConfigError(
        f"{what} takes a job (@app.job) or job.configure(...), got {type(job).__name__}"
    )


def _seconds(value: float | dt.timedelta, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ConfigError(f"{what} must be more than 0 seconds, got {value!r}")
    return float(seconds)


class Outbox:
    """An outbox table for ``app``'s jobs.

    Args:
        app: the :class:`~asyncjobs.App` whose jobs go through this outbox (its client
            middleware runs at ``defer``, its Redis and namespace receive the jobs).
        table_name: the table's name (``schema`` its schema, if any).
        metadata: a SQLAlchemy ``MetaData`` to declare the table in (yours, so that
            Alembic's autogenerate sees it); a private one by default.
    """

    def __init__(
        self,
        app: App,
        *,
        table_name: str = DEFAULT_TABLE,
        schema: str | None = None,
        metadata: sa.MetaData | None = None,
    ) -> None:
        if not isinstance(app, App):
            raise ConfigError(f"Outbox(app): an asyncjobs.App, got {type(app).__name__}")
        if not table_name or not isinstance(table_name, str):
            raise ConfigError(f"Outbox: invalid table_name {table_name!r}")
        self.app = app
        self.table = sa.Table(
            table_name,
            metadata if metadata is not None else sa.MetaData(),
            # Never reused (SQLite's AUTOINCREMENT; a sequence elsewhere): a row's id and
            # jid name its mark in Redis.
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                primary_key=True,
                autoincrement=True,
            ),
            sa.Column("jid", sa.String(64), nullable=False),
            sa.Column("queue", sa.Text(), nullable=False),
            sa.Column("at", sa.Float(), nullable=True),  # due time, for a scheduled job
            sa.Column("payload", sa.LargeBinary(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            schema=schema,
            sqlite_autoincrement=True,
        )

    def __repr__(self) -> str:
        return f"<Outbox {self.table.fullname} {self.app!r}>"

    # -- the table ---------------------------------------------------------------

    @property
    def channel(self) -> str:
        """The PostgreSQL ``NOTIFY`` channel that wakes relays when rows commit."""
        return self.table.name

    def _notify_ddl(self, dialect: sa.engine.Dialect) -> list[str]:
        """PostgreSQL: a statement trigger that notifies :attr:`channel` after inserts
        (delivered at commit, once per transaction; no round trip of its own)."""
        q = dialect.identifier_preparer
        table = q.format_table(self.table)
        name = f"{self.table.name}_notify"
        fn = (
            q.quote(name)
            if self.table.schema is None
            else f"{q.quote_schema(self.table.schema)}.{q.quote(name)}"
        )
        literal = self.channel.replace("'", "''")
        return [
            f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_notify('{literal}', ''); RETURN NULL; END $$",
            f"DROP TRIGGER IF EXISTS {q.quote(name)} ON {table}",
            f"CREATE TRIGGER {q.quote(name)} AFTER INSERT ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
        ]

    async def create_table(self, engine: AsyncEngine | AsyncConnection) -> None:
        """Create the table if it does not exist (or use :meth:`ddl` in a migration);
        on PostgreSQL, with the trigger that wakes relays at commit."""
        if isinstance(engine, AsyncConnection):
            await engine.run_sync(self._create)
            return
        async with engine.begin() as conn:
            await conn.run_sync(self._create)

    def _create(self, conn: sa.Connection) -> None:
        self.table.create(conn, checkfirst=True)
        if conn.dialect.name == "postgresql":
            for statement in self._notify_ddl(conn.dialect):
                conn.exec_driver_sql(statement)

    async def drop_table(self, engine: AsyncEngine | AsyncConnection) -> None:
        """Drop the table if it exists (rows not yet relayed are lost)."""
        if isinstance(engine, AsyncConnection):
            await engine.run_sync(self.table.drop, checkfirst=True)
            return
        async with engine.begin() as conn:
            await conn.run_sync(self.table.drop, checkfirst=True)

    def ddl(self, dialect: str = "postgresql") -> str:
        """The ``CREATE TABLE`` statement for ``dialect`` (``postgresql``, ``sqlite``);
        on PostgreSQL, followed by the trigger that wakes relays at commit."""
        from sqlalchemy.schema import CreateTable

        try:
            d = sa.engine.url.URL.create(dialect).get_dialect()()
        except Exception as exc:
            raise ConfigError(f"unknown SQL dialect {dialect!r}: {exc}") from None
        statements = [str(CreateTable(self.table).compile(dialect=d)).strip()]
        if d.name == "postgresql":
            statements.extend(self._notify_ddl(d))
        return ";\n".join(statements) + ";"

    async def pending(self, engine: AsyncEngine | AsyncConnection) -> int:
        """How many rows wait for a relay (committed, not yet moved)."""
        stmt = sa.select(sa.func.count()).select_from(self.table)
        if isinstance(engine, AsyncConnection):
            return int((await engine.execute(stmt)).scalar_one())
        async with engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    # -- defer -------------------------------------------------------------------

    async def defer(
        self,
        conn: AsyncSession | AsyncConnection,
        job: Job[P, R] | Deferrer[P, R],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> JobHandle[R] | None:
        """Write one run of ``job`` (or of ``job.configure(...)``) to the outbox, in the
        transaction of ``conn`` (an ``AsyncSession`` or ``AsyncConnection``): one
        ``INSERT``, no Redis call. It reaches Redis once that transaction commits and a
        relay moves it; never if it rolls back. Returns its jid as ``defer`` does
        (``None`` when a client middleware stopped it)."""
        j, opts = _split(job, "outbox.defer")
        self._check_app(j)
        payload = j._build(opts, args, kwargs, time.time())
        self._check_unique(j, [payload])
        rows: list[dict[str, Any]] = []
        jid = await self._through_chain(payload, rows)
        if rows:
            await conn.execute(sa.insert(self.table), rows)
        return None if jid is None else JobHandle(jid, j)

    async def defer_many(
        self,
        conn: AsyncSession | AsyncConnection,
        job: Job[Any, Any] | Deferrer[Any, Any],
        items: Iterable[tuple[Any, ...] | Mapping[str, Any]],
        *,
        at: Sequence[dt.datetime | None] | None = None,
    ) -> list[str | None]:
        """Write many runs of ``job`` to the outbox in the transaction of ``conn``, in
        one ``INSERT`` (as ``job.defer_many``: items are tuples of positional arguments
        or mappings of keyword arguments, ``at`` a due time per item; all are validated
        before anything is written). Returns their jids (``None`` for a job a client
        middleware stopped)."""
        j: Job[Any, Any]
        j, opts = _split(job, "outbox.defer_many")
        self._check_app(j)
        payloads = Deferrer(j, opts)._payloads(items, at)
        self._check_unique(j, payloads)
        rows: list[dict[str, Any]] = []
        jids = [await self._through_chain(p, rows) for p in payloads]
        if rows:
            await conn.execute(sa.insert(self.table), rows)
        return jids

    def _check_app(self, job: Job[Any, Any]) -> None:
        if job.app is not self.app:
            raise ConfigError(
                f"outbox.defer: job {job.name} belongs to another app than this outbox's"
            )

    @staticmethod
    def _check_unique(job: Job[Any, Any], payloads: Sequence[Payload]) -> None:
        for payload in payloads:
            lock = payload.unique
            if lock is not None and lock.until != "executing":
                raise ConfigError(
                    f"job {job.name}: unique jobs cannot go through the outbox (their lock "
                    "is taken as they are pushed); use unique=Unique(until='executing') or "
                    "defer after commit (asyncjobs.outbox.defer_after_commit)"
                )

    async def _through_chain(self, payload: Payload, rows: list[dict[str, Any]]) -> str | None:
        """The client middleware chain, whose last step adds the job's row to ``rows``
        (encoded as ``defer`` encodes it) instead of pushing it."""
        app = self.app

        async def write(p: Payload) -> str | None:
            rows.append(
                {
                    "jid": p.jid,
                    "queue": p.queue,
                    "at": p.at,
                    "payload": app._encode(p),
                    "created_at": p.created_at,
                }
            )
            return p.jid

        chain = app.client_middleware
        if chain.entries:
            return await run_client(chain.entries, payload, write)
        return await write(payload)

    # -- relaying ----------------------------------------------------------------

    def relay(
        self,
        db: AsyncEngine | str,
        *,
        batch: int = 100,
        poll: float | dt.timedelta = 0.5,
        mark_ttl: float | dt.timedelta = DEFAULT_MARK_TTL,
    ) -> Relay:
        """A :class:`Relay` of this outbox on ``db`` (an ``AsyncEngine`` or a URL)."""
        return Relay(self, db, batch=batch, poll=poll, mark_ttl=mark_ttl)

    def relay_in_worker(
        self,
        db: AsyncEngine | str,
        *,
        batch: int = 100,
        poll: float | dt.timedelta = 0.5,
        mark_ttl: float | dt.timedelta = DEFAULT_MARK_TTL,
    ) -> Relay:
        """Run a relay inside every worker of this app (``asyncjobs worker``,
        ``app.run_worker()``): it starts with the worker's startup hooks and stops
        with its shutdown hooks. Several workers relay the same table safely."""
        relay = self.relay(db, batch=batch, poll=poll, mark_ttl=mark_ttl)
        task: asyncio.Task[None] | None = None

        async def start() -> None:
            nonlocal task
            relay.reset()
            relay.engine  # noqa: B018 - a bad URL stops the worker's start, in one line
            task = asyncio.get_running_loop().create_task(relay.run(), name="outbox relay")

        async def stop() -> None:
            nonlocal task
            relay.stop()
            if task is not None:
                running, task = task, None
                try:
                    await asyncio.wait_for(running, timeout=10.0)
                except TimeoutError:
                    log.warning("outbox relay: did not stop within 10s; cancelled")

        self.app.on_startup.append(start)
        self.app.on_shutdown.append(stop)
        return relay


class Relay:
    """Moves committed outbox rows to Redis, each once, and deletes them.

    ``await relay.run()`` until :meth:`stop`; ``await relay.run_once()`` moves one
    batch. Per batch: one ``DELETE ... RETURNING`` (rows locked with ``FOR UPDATE SKIP
    LOCKED`` on PostgreSQL, the database's write lock on SQLite), one script call to
    Redis, the commit, then one ``UNLINK`` of the batch's marks. Idle, it looks every
    ``poll`` seconds (one ``DELETE`` that finds nothing).
    """

    def __init__(
        self,
        outbox: Outbox,
        db: AsyncEngine | str,
        *,
        batch: int = 100,
        poll: float | dt.timedelta = 0.5,
        mark_ttl: float | dt.timedelta = DEFAULT_MARK_TTL,
    ) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
            raise ConfigError(f"outbox relay: batch must be from 1 to 10000, got {batch!r}")
        self.outbox = outbox
        self.batch = batch
        self.poll = _seconds(poll, "outbox relay: poll")
        self.mark_ttl = max(1, int(_seconds(mark_ttl, "outbox relay: mark_ttl")))
        self._url: str | None = None
        self._engine: AsyncEngine | None = None
        if isinstance(db, AsyncEngine):
            self._engine = db
        elif isinstance(db, str):
            self._url = db
        else:
            raise ConfigError(
                f"outbox relay: db is an AsyncEngine or a database URL, got {type(db).__name__}"
            )
        self.moved = 0  # rows pushed to Redis by this relay
        self.skipped = 0  # rows found moved already (a relay died before its commit)
        self._stopped = False
        # Set by stop() and, on PostgreSQL, by a notification that rows committed.
        self._wake: asyncio.Event | None = None
        self.listening = False  # whether a LISTEN connection is up (PostgreSQL)

    def __repr__(self) -> str:
        return f"<Relay {self.outbox.table.fullname}>"

    @property
    def engine(self) -> AsyncEngine:
        """The engine (made from the URL at first use, and disposed by :meth:`aclose`)."""
        if self._engine is None:
            assert self._url is not None
            try:
                self._engine = create_async_engine(self._url)
            except (sa.exc.ArgumentError, sa.exc.InvalidRequestError, ImportError) as exc:
                raise ConfigError(
                    f"outbox relay: bad database URL ({str(exc).splitlines()[0]}); use an "
                    "async driver: sqlite+aiosqlite:///path.db, postgresql+asyncpg://..."
                ) from None
        return self._engine

    async def aclose(self) -> None:
        """Dispose of the engine if the relay made it from a URL."""
        if self._url is not None and self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    def reset(self) -> None:
        """Ready to :meth:`run` again after a :meth:`stop`."""
        self._stopped = False

    def stop(self) -> None:
        """End :meth:`run` after the batch in progress."""
        self._stopped = True
        if self._wake is not None:
            self._wake.set()

    async def run_once(self) -> int:
        """Move one batch (up to ``batch`` rows, oldest first); returns how many rows
        left the table."""
        store = await self.outbox.app.open_store()
        t = self.outbox.table
        engine = self.engine
        oldest = sa.select(t.c.id).order_by(t.c.id).limit(self.batch)
        if engine.dialect.name == "postgresql":
            oldest = oldest.with_for_update(skip_locked=True)
        claim = (
            sa.delete(t)
            .where(t.c.id.in_(oldest.scalar_subquery()))
            .returning(t.c.id, t.c.jid, t.c.queue, t.c.at, t.c.payload)
        )
        async with engine.begin() as conn:
            result = await conn.execute(claim)
            rows = sorted(
                (OutboxRow(int(r[0]), r[1], r[2], r[3], bytes(r[4])) for r in result),
                key=lambda r: r.id,
            )
            if not rows:
                return 0
            # Marked and pushed in one step: if the commit below never happens, the
            # rows come back, and the marks keep the next relay from pushing them again.
            moved = await store.outbox_move(rows, self.mark_ttl)
        self.moved += moved
        self.skipped += len(rows) - moved
        if moved < len(rows):
            log.info(
                "outbox relay: %d rows were moved to Redis before (a relay stopped before "
                "its delete committed); deleted without pushing them again",
                len(rows) - moved,
            )
        try:
            await store.outbox_forget(rows)
        except Exception as exc:  # the marks expire with their TTL
            log.warning("outbox relay: cannot delete the marks of moved rows now (%s)", exc)
        return len(rows)

    async def run(self) -> None:
        """Move batches until :meth:`stop`: at once while rows wait, then every
        ``poll`` seconds, or as soon as a PostgreSQL notification says rows committed.
        Database or Redis outages are waited out with backoff."""
        wake = self._wake = asyncio.Event()
        if self._stopped:
            wake.set()
        backoff = Backoff(base=0.1, cap=5.0)
        warned = False
        listener: _Listener | None = None
        log.info("outbox relay: moving %s to Redis", self.outbox.table.fullname)
        try:
            while not self._stopped:
                if listener is None or listener.closed():
                    if listener is not None:
                        await listener.aclose()
                    listener = await _Listener.open(self, wake)
                    self.listening = listener is not None
                wake.clear()
                try:
                    n = await self.run_once()
                except Exception as exc:
                    if isinstance(exc, ConfigError):  # a denied command, say: say it
                        if not warned:
                            log.error("outbox relay: %s; retrying", exc)
                            warned = True
                    elif _passing(exc):
                        if not warned:
                            log.warning("outbox relay: %s; retrying", _one_line(exc))
                            warned = True
                    else:
                        log.exception("outbox relay: unexpected error; retrying")
                    await self._sleep(wake, backoff.next())
                    continue
                if warned:
                    log.info("outbox relay: moving again")
                    warned = False
                backoff.reset()
                if n == 0:
                    await self._sleep(wake, self.poll)
        finally:
            self.listening = False
            # Shielded: a cancelled relay still gives its connections back.
            with anyio.move_on_after(5, shield=True):
                if listener is not None:
                    await listener.aclose()
                await self.aclose()

    @staticmethod
    async def _sleep(wake: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(wake.wait(), timeout=seconds)
        except TimeoutError:
            pass


class _Listener:
    """A PostgreSQL connection that LISTENs on the outbox's channel and sets the
    relay's wake event on each notification (the trigger of ``create_table`` sends
    one per committed transaction that wrote rows). Without the trigger it never
    fires, and the relay polls."""

    def __init__(self, conn: AsyncConnection, driver: Any, channel: str, wake: asyncio.Event):
        self.conn = conn
        self.driver = driver
        self.channel = channel
        self.wake = wake

    @classmethod
    async def open(cls, relay: Relay, wake: asyncio.Event) -> _Listener | None:
        engine = relay.engine
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "asyncpg":
            return None
        conn: AsyncConnection | None = None
        try:
            conn = await engine.connect()
            raw = await conn.get_raw_connection()
            listener = cls(conn, raw.driver_connection, relay.outbox.channel, wake)
            await listener.driver.add_listener(listener.channel, listener._notified)
        except Exception as exc:
            log.debug("outbox relay: cannot LISTEN (%s); polling", _one_line(exc))
            if conn is not None:
                await _quietly(conn.invalidate())
            return None
        return listener

    def _notified(self, *_: Any) -> None:
        self.wake.set()

    def closed(self) -> bool:
        return bool(self.driver.is_closed())

    async def aclose(self) -> None:
        if not self.closed():
            await _quietly(self.driver.remove_listener(self.channel, self._notified))
        await _quietly(self.conn.close())


async def _quietly(step: Any) -> None:
    try:
        await step
    except Exception as exc:  # a connection that is gone already
        log.debug("outbox relay: %s", _one_line(exc))


def _passing(exc: BaseException) -> bool:
    """A database or Redis outage (wait and retry), not a bug."""
    if transient(exc) or isinstance(exc, RedisRefused):  # OOM, a replica: Redis refuses writes
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError)
    return isinstance(exc, OSError | TimeoutError | sa.exc.TimeoutError)


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- defer after commit -----------------------------------------------------------

_PENDING = "asyncjobs.after_commit"


def defer_after_commit(
    session: AsyncSession,
    job: Job[P, R] | Deferrer[P, R],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> JobHandle[R]:
    """Defer one run of ``job`` once ``session``'s transaction commits; drop it if the
    transaction (or the savepoint it was collected in) rolls back.

    The arguments are checked now (an error raises here); the job is deferred by
    ``await session.commit()``, after the database committed, with the client
    middleware run then. The guarantee is weaker than the outbox's: a crash, or Redis
    out of reach, between the commit and the defer loses the job (the error is raised
    from ``commit()``, the data stays committed). Returns the jid it will have.
    """
    j, opts = _split(job, "defer_after_commit")
    if not isinstance(session, AsyncSession):
        raise ConfigError(f"defer_after_commit takes an AsyncSession, got {type(session).__name__}")
    payload = j._build(opts, args, kwargs, time.time())
    sync = session.sync_session
    pending: list[tuple[Job[Any, Any], Payload, SessionTransaction | None]] | None = sync.info.get(
        _PENDING
    )
    if pending is None:
        pending = sync.info[_PENDING] = []
        if not event.contains(sync, "after_commit", _after_commit):
            event.listen(sync, "after_commit", _after_commit)
            event.listen(sync, "after_soft_rollback", _after_soft_rollback)
    # Tagged with the innermost transaction: a savepoint that rolls back drops its jobs.
    pending.append((j, payload, sync.get_transaction() and _innermost(sync)))
    return JobHandle(payload.jid, j)


def _innermost(sync: Session) -> SessionTransaction | None:
    return sync.get_nested_transaction() or sync.get_transaction()


def _after_soft_rollback(sync: Session, previous: SessionTransaction) -> None:
    pending = sync.info.get(_PENDING)
    if not pending:
        return
    if previous.parent is None:  # the whole transaction
        sync.info.pop(_PENDING, None)
        return

    def within(t: SessionTransaction | None) -> bool:
        while t is not None:
            if t is previous:
                return True
            t = t.parent
        return False

    pending[:] = [entry for entry in pending if not within(entry[2])]


def _after_commit(sync: Session) -> None:
    pending = sync.info.pop(_PENDING, None)
    if pending:
        # Runs inside AsyncSession.commit()'s greenlet: await_only waits for the
        # defers, so commit() returns once they are in Redis (or raises).
        await_only(_defer_all(pending))


async def _defer_all(pending: Sequence[tuple[Job[Any, Any], Payload, Any]]) -> None:
    error: BaseException | None = None
    for job, payload, _ in pending:
        try:
            await job._handle(payload)
        except Exception as exc:
            log.error(
                "defer after commit: job %s jid=%s was not deferred (%s); the "
                "transaction is committed",
                payload.job,
                payload.jid,
                _one_line(exc),
            )
            error = error or exc
    if error is not None:
        raise error
