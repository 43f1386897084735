"""Isolation of suspects: a job recovered from a dead process runs alone.

A job that was in flight when its worker died (``recoveries > 0``) may be what killed it
(a segfault, ``os._exit``, the OOM killer), or it may be an innocent bystander. Running
each suspect alone, with fetching paused and nothing else in the process, makes the next
death attributable: only the job that really kills its worker keeps counting recoveries
and reaches the dead set (invariant 3), while bystanders finish on their next, solitary
run.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .capsule import Capsule

log = logging.getLogger("asyncjobs.isolation")

SUSPECT_MARK = b'"recoveries":'  # present in a payload only when recoveries > 0


class Isolation:
    """Holds suspects back and runs them one at a time in an otherwise idle process."""

    def __init__(self) -> None:
        self.pending: collections.deque[tuple[Capsule, bytes, bytes]] = collections.deque()
        self._clear = asyncio.Event()
        self._clear.set()
        self._work = asyncio.Event()
        self.capsules: list[Capsule] = []
        self.isolated = 0

    @property
    def blocking(self) -> bool:
        """Whether fetchers must wait (a suspect is pending or running)."""
        return not self._clear.is_set()

    async def wait_clear(self) -> None:
        await self._clear.wait()

    def hold(self, capsule: Capsule, field: bytes, raw: bytes) -> None:
        self.pending.append((capsule, field, raw))
        self._clear.clear()
        self._work.set()

    async def run(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while self.pending:
                for c in self.capsules:
                    await c.wait_idle()
                capsule, field, raw = self.pending.popleft()
                log.warning(
                    "running recovered job %r alone (it was in flight when a worker died)", field
                )
                self.isolated += 1
                capsule.start([field, raw], isolate=False)
                await capsule.wait_idle()
            self._clear.set()
