"""Health of the worker's background loops, shown in the process record.

A background loop (scheduler, reaper, heartbeat, fetcher, acker, isolation) outlives
Redis going away by backing off, quietly. Any other error is a bug: the loop logs it at
ERROR with its traceback, backs off and goes on, and is listed as unhealthy (loop name:
last error) until it next succeeds; the heartbeat writes the list into the process
record's ``info`` as ``unhealthy``, where ``asyncjobs processes`` and ``check`` read it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._redis import after_error, transient

if TYPE_CHECKING:
    from .._store import Store


class Health:
    """The loops whose last run failed with an unexpected error: name → error."""

    def __init__(self) -> None:
        self.unhealthy: dict[str, str] = {}

    async def failed(
        self, loop: str, exc: Exception, log: logging.Logger, store: Store | None
    ) -> bool:
        """Handle ``exc`` met by ``loop``. True when Redis is away (the pool is reset;
        the caller logs it its own way); else logs the bug and marks the loop unhealthy."""
        if transient(exc):
            await after_error(store.client if store is not None else None, exc)
            return True
        self.mark(loop, exc, log)
        return False

    def mark(self, loop: str, exc: BaseException, log: logging.Logger) -> None:
        log.error(
            "%s: unexpected error, backing off and going on: %s: %s",
            loop,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        self.unhealthy[loop] = f"{type(exc).__name__}: {exc}"[:500]

    def ok(self, loop: str) -> None:
        """``loop`` ran without error."""
        if self.unhealthy:
            self.unhealthy.pop(loop, None)


async def failed(
    health: Health | None, loop: str, exc: Exception, log: logging.Logger, store: Store | None
) -> bool:
    """:meth:`Health.failed`, for a loop that may run without one (logs the bug all the same)."""
    return await (health or Health()).failed(loop, exc, log, store)
