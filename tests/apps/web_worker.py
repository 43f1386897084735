"""The example jobs (``examples/tasks.py``) plus a server middleware that counts each
finished run in Redis, so that tests/integration/test_web.py can check that every job
deferred by a web request ran exactly once.

Worker subprocesses load it as ``tests.apps.web_worker:app``. Importing it installs
:func:`count_runs` on the example app (once), in-process too (embedded worker tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncjobs
from examples.tasks import app

RUNS = "test:runs"  # hash: jid -> number of finished runs


async def count_runs(ctx: asyncjobs.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
    """Run the job, then add one to its jid's count (with the app's own pool)."""
    result = await call_next()
    client = await app.connect()
    await client.hincrby(RUNS, ctx.jid, 1)
    return result


if count_runs not in app.server_middleware:
    app.server_middleware.append(count_runs)

__all__ = ["RUNS", "app", "count_runs"]
