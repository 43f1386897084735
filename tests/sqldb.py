"""Databases for the outbox tests: a SQLite file, or a PostgreSQL database of our own
on the machine's server (127.0.0.1:5432, user postgres), created and dropped here."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_HOST = os.environ.get("ASYNCJOBS_TEST_PGHOST", "127.0.0.1")
PG_PORT = os.environ.get("ASYNCJOBS_TEST_PGPORT", "5432")
PG_USER = os.environ.get("ASYNCJOBS_TEST_PGUSER", "postgres")
KINDS = ["sqlite", "postgresql"]


def psql(sql: str, database: str = "postgres") -> None:
    """Run one statement as the postgres user (fails the test if it fails)."""
    subprocess.run(
        ["psql", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", database, "-v",
         "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    """The async SQLAlchemy URL of a new, empty database of ``kind``; dropped after."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'outbox.sqlite'}"
        return
    assert kind == "postgresql", kind
    name = f"asyncjobs_outbox_test_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
