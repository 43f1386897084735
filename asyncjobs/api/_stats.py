"""Stats: totals, per-day history and set sizes."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING

import msgspec

from ._common import _store
from ._queues import latency

if TYPE_CHECKING:
    from .._app import App


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """Totals and per-day history of processed and failed jobs, and set sizes."""

    processed: int
    failed: int
    enqueued: int
    scheduled: int
    retries: int
    dead: int
    processes: int
    busy: int
    # Seconds the oldest job of the "default" queue has waited; 0.0 when it is empty.
    default_queue_latency: float
    history: dict[str, dict[str, int]]

    @classmethod
    async def fetch(cls, app: App, *, days: int = 7) -> Stats:
        """Read the stats now, with ``days`` days of history: two round trips to Redis
        whatever the number of queues and processes."""
        today = dt.datetime.now(dt.UTC).date()
        day_list = [today - dt.timedelta(days=i) for i in range(days)]
        c = await (await _store(app)).counters(day_list)
        history = {
            d.isoformat(): {"processed": p, "failed": f}
            for d, (p, f) in zip(day_list, c.days, strict=True)
        }
        return cls(
            processed=c.processed,
            failed=c.failed,
            enqueued=c.enqueued,
            scheduled=c.scheduled,
            retries=c.retries,
            dead=c.dead,
            processes=c.processes,
            busy=c.busy,
            default_queue_latency=latency(c.default_oldest, time.time()),
            history=history,
        )
