"""The reads and writes of ``asyncjobs.api`` (and so of the CLI): queues, sorted sets,
processes, control commands, stats. Raw bytes out; the api decodes them."""

from __future__ import annotations

import builtins
import datetime as dt
import os
from collections.abc import Sequence
from typing import Any, cast

import msgspec
from redis.asyncio.cluster import RedisCluster

from ._base import StoreBase, mapped

__all__ = ["CLEAR_CHUNK", "CLEARING_TTL", "Admin", "Counters"]

# A clear deletes this many entries per script call (drain.lua): each call holds Redis
# for about a millisecond, whatever the size of the queue or set.
CLEAR_CHUNK = 1000
# Seconds a temporary key of a clear lives: a clear cut short leaves nothing forever.
CLEARING_TTL = 3600


class Counters(msgspec.Struct, frozen=True, kw_only=True):
    """The stats counters and sizes, read in two round trips."""

    processed: int
    failed: int
    scheduled: int
    retries: int
    dead: int
    enqueued: int = 0
    # Live processes, and the jobs they hold (their in-flight hashes).
    processes: int = 0
    busy: int = 0
    # The oldest job of the default queue (None if empty), for its latency.
    default_oldest: bytes | None = None
    # (processed, failed) per day asked for, in the order asked.
    days: builtins.list[tuple[int, int]]
    expired: int = 0  # jobs dropped unstarted by their expires_in


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Admin(StoreBase):
    """What the introspection and admin API reads and writes."""

    # -- queues ----------------------------------------------------------------------

    @mapped
    async def queue_heads(self) -> list[tuple[str, int, bytes | None]]:
        """Every known queue by name: its size and its oldest job (None if empty)."""
        client = self.client
        k = self.keys
        names = sorted(text(n) for n in await client.smembers(k.queues))
        if not names:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.llen(k.queue(n))
                pipe.lindex(k.queue(n), -1)
            res = await pipe.execute()
        return [(n, int(res[2 * i]), res[2 * i + 1]) for i, n in enumerate(names)]

    @mapped
    async def queue_entries(self, name: str, offset: int, limit: int) -> list[bytes]:
        """Jobs waiting in a queue, oldest (next to run) first."""
        key = self.keys.queue(name)
        raws: list[Any] = await self.client.lrange(key, -(offset + limit), -(offset + 1))
        raws.reverse()
        return raws

    @mapped
    async def queue_find(self, name: str, jid: str) -> bytes | None:
        """The job with this jid waiting in a queue, or None: a scan of the list, 1,000
        entries a round trip, matching the jid prefix without decoding (as Sidekiq's
        ``Queue#find_job`` walks the list)."""
        key = self.keys.queue(name)
        prefix = b'{"jid":"' + jid.encode() + b'"'
        start = 0
        while True:
            batch: list[Any] = await self.client.lrange(key, start, start + 999)
            for raw in batch:
                if raw.startswith(prefix):
                    found: bytes = raw
                    return found
            if len(batch) < 1000:
                return None
            start += len(batch)

    @mapped
    async def queue_remove(self, name: str, raw: bytes) -> bool:
        """Remove one copy of ``raw`` from a queue; False if it was not there (a worker
        took it meanwhile)."""
        removed: Any = await self.client.lrem(self.keys.queue(name), 1, raw)  # type: ignore[arg-type]
        return bool(removed)

    # -- clearing a queue or a sorted set (its jobs' unique locks released) ---------

    @mapped
    async def clear_begin(self, key: str, queue: str | None = None) -> tuple[str, int]:
        """Move every entry of a queue (``queue``: its name, ``key`` its list) or a
        sorted set (``key``) to a temporary key of the same slot, in one step
        (clear.lua; a queue is also unregistered and its wake hint dropped): a job
        pushed after this is not touched. Returns the temporary key and how many
        entries it holds (0: none, and no key); :meth:`clear_drain` empties it."""
        k = self.keys
        temp = k.clearing(os.urandom(8).hex())
        if queue is None:
            keys, args = [key, temp], ["zset", CLEARING_TTL]
        else:
            keys = [key, temp, k.wake(queue), k.queues]
            args = ["list", CLEARING_TTL, queue]
        return temp, int(await self.scripts.clear(self.fast or self.client, keys, args))

    @mapped
    async def clear_drain(
        self, temp: str, *, queue: bool, count: int = CLEAR_CHUNK
    ) -> tuple[int, list[bytes]]:
        """Delete up to ``count`` entries of a temporary key of :meth:`clear_begin`
        (drain.lua); returns how many are left, and the deleted payloads that may hold
        a unique lock (they contain ``"unique":[``; the caller decodes them)."""
        reply: list[Any] = await self.scripts.drain(
            self.fast or self.client, [temp], ["list" if queue else "zset", count]
        )
        return int(reply[0]), [bytes(r) for r in reply[1:]]

    # -- sorted sets (schedule, retry, dead) -----------------------------------------

    @mapped
    async def zset_size(self, key: str) -> int:
        return int(await self.client.zcard(key))

    @mapped
    async def zset_entries(
        self, key: str, start: int, stop: int, *, newest_first: bool = False
    ) -> list[tuple[bytes, float]]:
        """Entries ``start`` to ``stop`` (inclusive) in time order (or latest first),
        with their times."""
        rows: list[Any] = await self.client.zrange(
            key, start, stop, desc=newest_first, withscores=True
        )
        return rows

    @mapped
    async def zset_after(
        self,
        key: str,
        after: tuple[float, bytes] | None,
        count: int,
        *,
        newest_first: bool = False,
    ) -> list[tuple[bytes, float]]:
        """Up to ``count`` entries with their times, in time order (or latest first),
        that come after ``after``: a (time, member prefix) cursor, so that a page
        starts where the last one ended even when entries before it were deleted
        meanwhile (an offset would skip as many entries as were deleted). Entries with
        the same time are in member order (Redis's, bytewise), and a member starts with
        its jid: the prefix ``{"jid":"<jid>"`` places a jid among them."""
        client = self.client
        if after is None:
            rows: list[Any] = await client.zrange(
                key, 0, count - 1, desc=newest_first, withscores=True
            )
            return rows
        score, prefix = after
        bound = repr(float(score))
        out: list[tuple[bytes, float]] = []
        offset = 0
        batch: list[Any]
        while True:
            # From the cursor's time on (inclusive): the entries that share its time
            # come first, in member order, and those up to the cursor are skipped.
            if newest_first:
                batch = await client.zrange(
                    key, bound, "-inf", desc=True, byscore=True, offset=offset, num=count,
                    withscores=True,
                )  # fmt: skip
            else:
                batch = await client.zrange(
                    key, bound, "+inf", byscore=True, offset=offset, num=count, withscores=True
                )
            rows_ = cast("list[tuple[bytes, float]]", batch)
            for member, s in rows_:
                if s == score and (
                    member.startswith(prefix)
                    or (member > prefix if newest_first else member < prefix)
                ):
                    continue
                out.append((member, s))
                if len(out) == count:
                    return out
            if len(batch) < count:
                return out
            offset += len(batch)

    @mapped
    async def zset_members(self, key: str, start: int, stop: int) -> list[bytes]:
        """Entries ``start`` to ``stop`` (inclusive) in time order."""
        members: list[Any] = await self.client.zrange(key, start, stop)
        return members

    @mapped
    async def zset_find(self, key: str, jid: str) -> tuple[bytes, float] | None:
        """The entry with this jid and its time, or None (a ZSCAN on the jid prefix:
        payloads start with it)."""
        pattern = '{"jid":"' + jid.replace("[", "\\[").replace("*", "\\*") + '"*'
        async for member, score in self.client.zscan_iter(key, match=pattern, count=1000):
            return member, score
        return None

    @mapped
    async def zset_remove(self, key: str, member: bytes) -> bool:
        """Remove ``member``; False if it was not there."""
        return bool(await self.client.zrem(key, member))

    @mapped
    async def zset_clear(self, key: str) -> int:
        """Delete every entry; returns how many there were."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.delete(key)
            size, _ = await pipe.execute()
        return int(size)

    # -- processes -------------------------------------------------------------------

    @mapped
    async def process_records(self) -> list[tuple[str, dict[bytes, bytes]]]:
        """Every registered process by id, with its heartbeat record (empty once the
        record expired: the reaper cleans that process up)."""
        client = self.client
        k = self.keys
        ids = sorted(text(m) for m in await client.smembers(k.processes))
        if not ids:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(k.process(i))
            records = await pipe.execute()
        return list(zip(ids, records, strict=True))

    @mapped
    async def inflight(self, process_id: str) -> dict[bytes, bytes]:
        """The in-flight hash of a process: field to payload."""
        entries: dict[Any, Any] = await self.client.hgetall(self.keys.inflight(process_id))
        return entries

    @mapped
    async def inflight_counts(self, process_ids: Sequence[str]) -> list[int]:
        """How many jobs each process holds now (its in-flight hash: running, or fetched
        ahead); current, where the heartbeat's ``busy`` may be a beat old."""
        if not process_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for pid in process_ids:
                pipe.hlen(self.keys.inflight(pid))
            res: list[Any] = await pipe.execute()
        return [int(n) for n in res]

    @mapped
    async def inflight_job(self, process_id: str, jid: str) -> bytes | None:
        """The payload a process holds under this jid, or None."""
        raw: Any = await self.client.hget(self.keys.inflight(process_id), jid)
        return None if raw is None else bytes(raw)

    @mapped
    async def send_control(self, command: str, process_ids: Sequence[str]) -> None:
        """Queue ``command`` for each process; it reads them at its next heartbeat (an
        unread command expires after a minute)."""
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            for pid in process_ids:
                pipe.rpush(k.control(pid), command)
                pipe.expire(k.control(pid), 60)
            await pipe.execute()

    # -- stats -----------------------------------------------------------------------

    @mapped
    async def reset_counters(self, names: Sequence[str]) -> None:
        """Set the named totals (``processed``, ``failed``) to 0."""
        k = self.keys
        keys = {"processed": k.stat_processed, "failed": k.stat_failed}
        await self.client.mset({keys[n]: 0 for n in names})

    @mapped
    async def counters(self, days: Sequence[dt.date], default_queue: str = "default") -> Counters:
        """Processed and failed totals, set sizes, queue sizes, live processes and the
        jobs they hold, and the per-day counters of ``days``: two round trips whatever
        the number of queues, processes or days (as Sidekiq's stats: one pipeline for
        the fixed reads and the names of the queues and processes, one for their sizes).
        """
        k = self.keys
        client = self.client
        counters = [k.stat_processed, k.stat_failed, k.stat_expired]
        counters += [key for d in days for key in (k.stat_processed_day(d), k.stat_failed_day(d))]
        # One MGET for the counters; redis-py's cluster pipeline refuses MGET (the keys
        # share a slot, but it does not look), so a GET each there.
        one_mget = not isinstance(client, RedisCluster)
        async with client.pipeline(transaction=False) as pipe:
            pipe.zcard(k.schedule)
            pipe.zcard(k.retry)
            pipe.zcard(k.dead)
            pipe.smembers(k.queues)
            pipe.smembers(k.processes)
            pipe.lindex(k.queue(default_queue), -1)
            if one_mget:
                pipe.mget(counters)
            else:
                for key in counters:
                    pipe.get(key)
            res: list[Any] = await pipe.execute()
        scheduled, retries, dead, queue_names, process_ids, oldest = res[:6]
        values: list[Any] = res[6] if one_mget else res[6:]
        totals, per_day = values[:3], values[3:]
        names = sorted(text(n) for n in queue_names)
        ids = sorted(text(i) for i in process_ids)
        sizes: list[Any] = []
        if names or ids:
            async with client.pipeline(transaction=False) as pipe:
                for n in names:
                    pipe.llen(k.queue(n))
                for i in ids:
                    # A registered process whose heartbeat expired is not live (the
                    # reaper cleans it up); its in-flight jobs are not counted busy.
                    pipe.exists(k.process(i))
                    pipe.hlen(k.inflight(i))
                sizes = await pipe.execute()
        beats = sizes[len(names) :: 2]
        held = sizes[len(names) + 1 :: 2]
        return Counters(
            processed=int(totals[0] or 0),
            failed=int(totals[1] or 0),
            scheduled=int(scheduled),
            retries=int(retries),
            dead=int(dead),
            enqueued=sum(int(n) for n in sizes[: len(names)]),
            processes=sum(1 for b in beats if b),
            busy=sum(int(h) for b, h in zip(beats, held, strict=True) if b),
            default_oldest=oldest,
            days=[
                (int(per_day[2 * i] or 0), int(per_day[2 * i + 1] or 0)) for i in range(len(days))
            ],
            expired=int(totals[2] or 0),
        )
