"""A keyset cursor over a SQL table for iterable jobs, on SQLAlchemy's async engine
(the ``sql`` extra). Imported by :func:`asyncjobs.iteration.sql_keyset` only when used.

Keyset pagination (``WHERE key > :cursor ORDER BY key LIMIT :batch``) rather than
OFFSET: each query costs the same however far the iteration is, rows added or deleted
behind the cursor shift nothing, and the cursor (the last key read) is all a later run
needs. Each batch is read in its own short transaction, so a long iteration holds no
connection or snapshot between batches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ._errors import ConfigError

__all__ = ["Row", "keyset"]

Row = sa.Row[Any]


async def keyset(
    engine: AsyncEngine,
    table: sa.Table | str,
    key: str,
    *,
    cursor: Any = None,
    batch: int = 500,
    where: Any = None,
    columns: Sequence[str] | None = None,
) -> AsyncIterator[tuple[Row, Any]]:
    """See :func:`asyncjobs.iteration.sql_keyset`."""
    if not isinstance(engine, AsyncEngine):
        raise ConfigError(
            "sql_keyset needs SQLAlchemy's AsyncEngine (sqlalchemy.ext.asyncio."
            f"create_async_engine), got {type(engine).__name__}"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"sql_keyset: batch must be a whole number >= 1, got {batch!r}")
    if isinstance(table, str):
        name = table
        async with engine.connect() as conn:
            table = await conn.run_sync(
                lambda sync: sa.Table(name, sa.MetaData(), autoload_with=sync)
            )
    if not isinstance(table, sa.Table):
        raise ConfigError(f"sql_keyset: table must be a sqlalchemy Table or a name, got {table!r}")
    if key not in table.c:
        raise ConfigError(
            f"sql_keyset: table {table.name!r} has no column {key!r} "
            f"(it has {', '.join(table.c.keys())})"
        )
    col = table.c[key]
    if columns:
        unknown = [c for c in columns if c not in table.c]
        if unknown:
            raise ConfigError(
                f"sql_keyset: table {table.name!r} has no column {', '.join(map(repr, unknown))}"
            )
        cols = [table.c[c] for c in columns]
        if key not in columns:
            cols.append(col)  # the cursor is read from each row
    else:
        cols = list(table.c)
    base = sa.select(*cols).order_by(col).limit(batch)
    if where is not None:
        base = base.where(where)
    while True:
        stmt = base if cursor is None else base.where(col > cursor)
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        for row in rows:
            cursor = row._mapping[col]
            yield row, cursor
        if len(rows) < batch:
            return
