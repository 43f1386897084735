"""The memory limit (``--max-memory``; Sidekiq Enterprise's memory killer).

A worker whose resident memory (RSS) passes the limit is replaced rather than left to
grow: it logs one WARNING, quiets, finishes its running jobs (up to the shutdown
timeout, as a SIGTERM would) and exits with :data:`REPLACE_EXIT`, which the
``--processes`` supervisor answers by starting a new process at once, and which
systemd's ``Restart=on-failure`` (or ``always``) restarts too.

Off by default; when on, one task reads ``/proc/self/statm`` every ``interval`` seconds
(the heartbeat interval): no Redis command, nothing on the path of a job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from .heartbeat import rss_kib

log = logging.getLogger("asyncjobs.memory")

# EX_TEMPFAIL (sysexits.h): "a temporary failure; try again". The supervisor restarts a
# child that exits with it at once, without counting it as a crash.
REPLACE_EXIT = 75


def mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


class MemoryLimit:
    """Calls ``over(rss_bytes)`` once, the first time RSS is above ``limit`` bytes."""

    def __init__(
        self,
        limit: int,
        *,
        interval: float,
        over: Callable[[int], None],
        rss: Callable[[], int] | None = None,
    ) -> None:
        self.limit = limit
        self.interval = interval
        self._over = over
        self._rss = rss or (lambda: rss_kib() * 1024)
        self.tripped = False

    def check(self) -> bool:
        """Read RSS now; True (and ``over`` called, the first time) if it is over."""
        rss = self._rss()
        if rss <= self.limit:
            return False
        if not self.tripped:
            self.tripped = True
            self._over(rss)
        return True

    async def run(self) -> None:
        while not self.check():
            await anyio.sleep(self.interval)
