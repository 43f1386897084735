"""Stats: totals, per-day history and set sizes."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import msgspec

from ._common import _store
from ._processes import ProcessSet
from ._queues import queues

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
    history: dict[str, dict[str, int]]
    expired: int = 0  # jobs dropped unstarted by their expires_in (Sidekiq Pro's)

    @classmethod
    async def fetch(cls, app: App, *, days: int = 7) -> Stats:
        """Read the stats now, with ``days`` days of history."""
        today = dt.datetime.now(dt.UTC).date()
        day_list = [today - dt.timedelta(days=i) for i in range(days)]
        c = await (await _store(app)).counters(day_list)
        qs = await queues(app)
        procs = await ProcessSet(app).list()
        history = {
            d.isoformat(): {"processed": p, "failed": f}
            for d, (p, f) in zip(day_list, c.days, strict=True)
        }
        return cls(
            processed=c.processed,
            failed=c.failed,
            enqueued=sum(q.size for q in qs),
            scheduled=c.scheduled,
            retries=c.retries,
            dead=c.dead,
            processes=len(procs),
            busy=sum(p.busy for p in procs),
            history=history,
            expired=c.expired,
        )
