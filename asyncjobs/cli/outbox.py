"""asyncjobs outbox: the transactional outbox's relay, its table, and what waits in it.

Needs the ``sql`` extra; imported lazily, so the rest of the CLI runs without it.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer

from .._errors import ConfigError
from ._admin import AppOpt, NsOpt, UrlOpt, _admin_app
from ._base import _Group, _guard, app, run_async, setup_logging

if TYPE_CHECKING:
    from ..outbox import Outbox, Relay

outbox_app = typer.Typer(
    cls=_Group,
    help="The transactional outbox: run its relay, create its table, count waiting rows.",
    no_args_is_help=True,
)
app.add_typer(outbox_app, name="outbox")

DbOpt = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="ASYNCJOBS_OUTBOX_DB",
        metavar="URL",
        help="SQLAlchemy async database URL: sqlite+aiosqlite:///path.db, "
        "postgresql+asyncpg://user@host/db.",
    ),
]
TableOpt = Annotated[
    str,
    typer.Option("--table", metavar="NAME", help="The outbox table's name."),
]
SchemaOpt = Annotated[
    str | None,
    typer.Option("--schema", metavar="NAME", help="The outbox table's schema, if any."),
]

log = logging.getLogger("asyncjobs.outbox")


def _outbox(
    app_spec: str | None, redis_url: str | None, namespace: str | None, table: str, schema: Any
) -> Outbox:
    try:
        from ..outbox import Outbox
    except ImportError as exc:
        raise ConfigError(str(exc)) from None
    application = _admin_app(app_spec, redis_url, namespace)
    return Outbox(application, table_name=table, schema=schema)


def _engine(url: str) -> Any:
    """An async engine for ``url``, or a one-line error."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    try:
        return create_async_engine(url)
    except (sa.exc.ArgumentError, sa.exc.InvalidRequestError, ImportError, ValueError) as exc:
        raise ConfigError(
            f"--db {url!r}: {str(exc).splitlines()[0]}; use an async driver URL, "
            "sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
        ) from None


async def _checked(fn: Any, url: str, what: str) -> Any:
    """Run a database call; a database error is one line."""
    import sqlalchemy as sa

    try:
        return await fn()
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        raise ConfigError(f"{what} ({_masked(url)}): {type(exc.orig).__name__}: {reason}") from None
    except OSError as exc:
        raise ConfigError(f"{what} ({_masked(url)}): {exc}") from None


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the database"


@outbox_app.command("relay")
def relay_command(
    db: DbOpt,
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    table: TableOpt = "asyncjobs_outbox",
    schema: SchemaOpt = None,
    batch: Annotated[
        int, typer.Option("--batch", min=1, max=10_000, help="Rows moved per round.")
    ] = 100,
    poll: Annotated[
        float,
        typer.Option("--poll", min=0.01, metavar="SECONDS", help="Seconds between looks, idle."),
    ] = 0.5,
    once: Annotated[
        bool, typer.Option("--once", help="Move what waits now, then exit (print the count).")
    ] = False,
    log_level: Annotated[
        str, typer.Option("--log-level", "-l", envvar="ASYNCJOBS_LOG_LEVEL", help="Log level.")
    ] = "INFO",
) -> None:
    """Move committed outbox rows to Redis, each once, until SIGTERM or SIGINT."""
    _guard(lambda: setup_logging(log_level))
    ob = _guard(lambda: _outbox(app_spec, redis_url, namespace, table, schema))
    engine = _guard(lambda: _engine(db))
    relay = _guard(lambda: ob.relay(engine, batch=batch, poll=poll))
    _guard(lambda: run_async(lambda: _relay(ob, relay, engine, db, once)))
    if once:
        # Rows found in Redis already: moved by a relay that stopped before its commit.
        typer.echo(f"moved {relay.moved} rows ({relay.skipped} were in Redis already)")


async def _relay(ob: Outbox, relay: Relay, engine: Any, url: str, once: bool) -> None:
    try:
        # Fail fast, in one line, on a database out of reach or a missing table.
        await _checked(
            lambda: ob.pending(engine), url, f"cannot read the outbox table {ob.table.fullname}"
        )
        await ob.app.connect()
        if once:
            while await relay.run_once():
                pass
            return
        async with anyio.create_task_group() as tg:

            async def signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                    async for signum in received:
                        log.info("outbox relay: %s, stopping", signal.Signals(signum).name)
                        relay.stop()

            tg.start_soon(signals)
            await relay.run()
            tg.cancel_scope.cancel()
    finally:
        await engine.dispose()
        await ob.app.aclose()


@outbox_app.command("create-table")
def create_table_command(
    db: DbOpt,
    table: TableOpt = "asyncjobs_outbox",
    schema: SchemaOpt = None,
) -> None:
    """Create the outbox table in the database, if it does not exist."""
    ob = _guard(lambda: _outbox(None, None, None, table, schema))
    engine = _guard(lambda: _engine(db))

    async def run() -> None:
        try:
            await _checked(lambda: ob.create_table(engine), db, "cannot create the outbox table")
        finally:
            await engine.dispose()

    _guard(lambda: run_async(run))
    typer.echo(f"outbox table {ob.table.fullname} is ready")


@outbox_app.command("ddl")
def ddl_command(
    dialect: Annotated[
        str, typer.Option("--dialect", help="postgresql or sqlite (others SQLAlchemy knows).")
    ] = "postgresql",
    table: TableOpt = "asyncjobs_outbox",
    schema: SchemaOpt = None,
) -> None:
    """Print the outbox table's CREATE TABLE statement, for your migrations."""
    ob = _guard(lambda: _outbox(None, None, None, table, schema))
    typer.echo(_guard(lambda: ob.ddl(dialect)))


@outbox_app.command("pending")
def pending_command(
    db: DbOpt,
    table: TableOpt = "asyncjobs_outbox",
    schema: SchemaOpt = None,
) -> None:
    """Print how many committed rows wait for a relay."""
    ob = _guard(lambda: _outbox(None, None, None, table, schema))
    engine = _guard(lambda: _engine(db))

    async def run() -> int:
        try:
            n: int = await _checked(
                lambda: ob.pending(engine), db, f"cannot read the outbox table {ob.table.fullname}"
            )
            return n
        finally:
            await engine.dispose()

    typer.echo(str(_guard(lambda: run_async(run))))
