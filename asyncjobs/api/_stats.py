"""Stats: totals, per-day history and set sizes."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import msgspec

from ._common import _client
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

    @classmethod
    async def fetch(cls, app: App, *, days: int = 7) -> Stats:
        """Read the stats now, with ``days`` days of history."""
        client = await _client(app)
        k = app.keys
        today = dt.datetime.now(dt.UTC).date()
        day_list = [today - dt.timedelta(days=i) for i in range(days)]
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(k.stat_processed)
            pipe.get(k.stat_failed)
            pipe.zcard(k.schedule)
            pipe.zcard(k.retry)
            pipe.zcard(k.dead)
            for d in day_list:
                pipe.get(k.stat_processed_day(d))
                pipe.get(k.stat_failed_day(d))
            res = await pipe.execute()
        qs = await queues(app)
        procs = await ProcessSet(app).list()
        history = {
            d.isoformat(): {
                "processed": int(res[5 + 2 * i] or 0),
                "failed": int(res[6 + 2 * i] or 0),
            }
            for i, d in enumerate(day_list)
        }
        return cls(
            processed=int(res[0] or 0),
            failed=int(res[1] or 0),
            enqueued=sum(q.size for q in qs),
            scheduled=int(res[2]),
            retries=int(res[3]),
            dead=int(res[4]),
            processes=len(procs),
            busy=sum(p.busy for p in procs),
            history=history,
        )
