"""The owner of the short tasks a worker spawns while it runs.

Hooks (quiet, heartbeat, beat), quiet give-backs, isolation give-backs, death handlers
and ``on_exhausted``: each is tracked until it ends, an exception is logged with its
traceback (the worker goes on), and shutdown waits for them within its timeout, then
cancels what is left, so that none is abandoned when ``run_worker()`` exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

log = logging.getLogger("asyncjobs.launcher")

# How long tasks cancelled at shutdown get to end (a task may catch the cancellation
# and clean up); after that the worker leaves without them.
DIE_GRACE = 2.0


class TaskOwner:
    """``start_soon(fn, *args)`` runs ``await fn(*args)`` in a tracked task."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(fn, args, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(
        fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], name: str | None
    ) -> None:
        try:
            await fn(*args)
        except Exception:
            log.exception("%s failed", name or getattr(fn, "__qualname__", repr(fn)))

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for every task (and those they start); True if none is left."""
        with anyio.move_on_after(timeout):
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        return not self._tasks

    async def aclose(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the tasks, then cancel the rest and give them
        :data:`DIE_GRACE` to end."""
        if await self.wait(timeout):
            return
        log.warning("cancelling %d background tasks still running at shutdown", len(self._tasks))
        for task in self._tasks:
            task.cancel()
        with anyio.move_on_after(DIE_GRACE):
            while self._tasks:
                await asyncio.wait(set(self._tasks))
