"""Stats: totals, per-day history and set sizes."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING

import msgspec

from ._common import _store, _stores
from ._queues import latency
from ._records import InvalidArgument

if TYPE_CHECKING:
    from .._app import App


# The per-day counters live five years (the acker's STATS_TTL): more days than that
# would only read keys that cannot exist.
MAX_HISTORY_DAYS = 5 * 366

COUNTERS = ("processed", "failed")


def _day_list(days: int) -> list[dt.date]:
    if isinstance(days, bool) or not isinstance(days, int):
        raise TypeError(f"days must be an int, got {days!r}")
    if not 1 <= days <= MAX_HISTORY_DAYS:
        raise InvalidArgument(
            f"days must be 1 to {MAX_HISTORY_DAYS} (five years: the per-day counters "
            f"expire after that), got {days}"
        )
    today = dt.datetime.now(dt.UTC).date()
    return [today - dt.timedelta(days=i) for i in range(days)]


async def history(app: App, days: int = 7) -> dict[str, dict[str, int]]:
    """Processed and failed counts per UTC day, today first, ``days`` days (1 to five
    years; :class:`InvalidArgument` otherwise), as Sidekiq's ``Stats::History``."""
    return (await Stats.fetch(app, days=days)).history


async def reset_stats(app: App, *counters: str) -> None:
    """Set the ``processed`` and/or ``failed`` totals to 0 (both when none is named),
    as Sidekiq's ``Stats#reset``; the per-day history is kept."""
    names = counters or COUNTERS
    unknown = [c for c in names if c not in COUNTERS]
    if unknown:
        raise InvalidArgument(
            f"cannot reset {', '.join(map(repr, unknown))}: use processed or failed"
        )
    for store in await _stores(app):
        await store.reset_counters(list(dict.fromkeys(names)))


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
    expired: int = 0  # jobs dropped unstarted by their expires_in (Sidekiq Pro's)

    @classmethod
    async def fetch(cls, app: App, *, days: int = 7) -> Stats:
        """Read the stats now, with ``days`` days of history (1 to five years;
        :class:`InvalidArgument` otherwise): two round trips to Redis
        whatever the number of queues and processes (per shard, summed; a process
        counts once, by its shard 0 record)."""
        day_list = _day_list(days)
        each = [await s.counters(day_list) for s in await _stores(app)]
        c = each[0]  # the processes (every one registers in shard 0), the expired count
        now = time.time()
        history = {
            d.isoformat(): {
                "processed": sum(x.days[i][0] for x in each),
                "failed": sum(x.days[i][1] for x in each),
            }
            for i, d in enumerate(day_list)
        }
        return cls(
            processed=sum(x.processed for x in each),
            failed=sum(x.failed for x in each),
            enqueued=sum(x.enqueued for x in each),
            scheduled=sum(x.scheduled for x in each),
            retries=sum(x.retries for x in each),
            dead=sum(x.dead for x in each),
            processes=c.processes,
            busy=sum(x.busy for x in each),
            default_queue_latency=max(latency(x.default_oldest, now) for x in each),
            history=history,
            expired=c.expired,
        )


class RedisInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The Redis server as a dashboard shows it: version, memory, clients, uptime."""

    version: str
    used_memory: int
    used_memory_human: str
    connected_clients: int
    uptime_seconds: int


async def redis_info(app: App) -> RedisInfo:
    """The Redis server's version, memory in use, connected clients and uptime (``INFO``
    server, memory and clients; one round trip each)."""
    store = await _store(app)
    server = await store.server_info("server")
    memory = await store.server_info("memory")
    clients = await store.server_info("clients")
    return RedisInfo(
        version=str(server.get("redis_version", "")),
        used_memory=int(memory.get("used_memory", 0)),
        used_memory_human=str(memory.get("used_memory_human", "")),
        connected_clients=int(clients.get("connected_clients", 0)),
        uptime_seconds=int(server.get("uptime_in_seconds", 0)),
    )
