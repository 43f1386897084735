"""The introspection and admin API: queues, scheduled, retries, dead, processes, stats.

The CLI and any dashboard use this module, never raw keys. Every call takes an
:class:`asyncjobs.App` (only its Redis URL and namespace matter: no job code is needed).

```python
from asyncjobs import api

stats = await api.Stats.fetch(app)
for q in await api.queues(app):
    print(q.name, q.size, q.latency)
dead = api.DeadSet(app)
for entry in await dead.entries(limit=20):
    print(entry.jid, entry.error_class, entry.error_message)
await dead.retry(entry.jid)
```
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ._client import promote, trim_dead
from ._errors import AsyncJobsError
from ._payload import DECODE_ERRORS, DECODER, ENCODER

if TYPE_CHECKING:
    from ._app import App
    from ._redis import Client

__all__ = [
    "DeadSet",
    "JobNotFound",
    "JobRecord",
    "ProcessInfo",
    "ProcessSet",
    "QueueInfo",
    "RetrySet",
    "ScheduledSet",
    "SortedSet",
    "Stats",
    "clear_queue",
    "find_job",
    "queue_entries",
    "queues",
]


class JobNotFound(AsyncJobsError, LookupError):
    """No entry with this jid in the set."""


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One job as stored, decoded for reading. ``score`` is its due/death time."""

    jid: str
    job: str
    queue: str
    args: Any
    created_at: float
    enqueued_at: float | None = None
    score: float | None = None
    retry: int = 0
    retry_count: int = 0
    error_class: str | None = None
    error_message: str | None = None
    error_backtrace: list[str] | None = None
    failed_at: float | None = None
    recoveries: int = 0
    meta: dict[str, Any] = {}
    raw: str = ""

    @classmethod
    def from_raw(cls, raw: bytes, score: float | None = None) -> JobRecord:
        try:
            p = DECODER.decode(raw)
        except DECODE_ERRORS as exc:
            return cls(
                jid="",
                job="<undecodable>",
                queue="",
                args=None,
                created_at=0.0,
                score=score,
                error_class="PayloadError",
                error_message=str(exc),
                raw=raw.decode(errors="replace"),
            )
        return cls(
            jid=p.jid,
            job=p.job,
            queue=p.queue,
            args=json.loads(bytes(p.args)),
            created_at=p.created_at,
            enqueued_at=p.enqueued_at,
            score=score,
            retry=p.retry,
            retry_count=p.retry_count,
            error_class=p.error_class,
            error_message=p.error_message,
            error_backtrace=p.error_backtrace,
            failed_at=p.failed_at,
            recoveries=p.recoveries,
            meta=p.meta,
            raw=raw.decode(errors="replace"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape used by ``--json`` (see docs/cli.md)."""
        d: dict[str, Any] = msgspec.structs.asdict(self)
        d.pop("raw")
        return d


async def _client(app: App) -> Client:
    return app._redis or await app.connect()


# -- queues -----------------------------------------------------------------------------


class QueueInfo(msgspec.Struct, frozen=True):
    """A queue's size and latency (age in seconds of its oldest job)."""

    name: str
    size: int
    latency: float


async def queues(app: App) -> list[QueueInfo]:
    """Every known queue, by name."""
    client = await _client(app)
    k = app.keys
    names = sorted(_text(n) for n in await client.smembers(k.queues))
    if not names:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for n in names:
            pipe.llen(k.queue(n))
            pipe.lindex(k.queue(n), -1)
        res = await pipe.execute()
    now = time.time()
    out = []
    for i, n in enumerate(names):
        size, oldest = int(res[2 * i]), res[2 * i + 1]
        latency = 0.0
        if oldest is not None:
            try:
                p = DECODER.decode(oldest)
                latency = max(0.0, now - (p.enqueued_at or p.created_at))
            except DECODE_ERRORS:
                pass
        out.append(QueueInfo(n, size, round(latency, 3)))
    return out


async def queue_entries(app: App, name: str, offset: int = 0, limit: int = 50) -> list[JobRecord]:
    """Jobs waiting in a queue, oldest (next to run) first."""
    client = await _client(app)
    key = app.keys.queue(name)
    raws: list[Any] = await client.lrange(key, -(offset + limit), -(offset + 1))
    return [JobRecord.from_raw(r) for r in reversed(raws)]


async def clear_queue(app: App, name: str) -> int:
    """Delete every job waiting in a queue; returns how many there were."""
    client = await _client(app)
    k = app.keys
    async with client.pipeline(transaction=False) as pipe:
        pipe.llen(k.queue(name))
        pipe.delete(k.queue(name), k.wake(name))
        pipe.srem(k.queues, name)
        size, _, _ = await pipe.execute()
    return int(size)


# -- sorted sets ------------------------------------------------------------------------


class SortedSet:
    """A sorted set of jobs (schedule, retry, dead) by time."""

    kind = ""

    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def key(self) -> str:
        raise NotImplementedError

    async def size(self) -> int:
        """How many entries the set holds."""
        client = await _client(self.app)
        return int(await client.zcard(self.key))

    async def entries(
        self, *, offset: int = 0, limit: int = 50, job: str | None = None
    ) -> list[JobRecord]:
        """Entries in time order; ``job`` keeps only that job name (a suffix match, so
        ``resize`` finds ``myapp.jobs.resize``)."""
        client = await _client(self.app)
        if job is None:
            rows: list[Any] = await client.zrange(
                self.key, offset, offset + limit - 1, withscores=True
            )
            return [JobRecord.from_raw(m, s) for m, s in rows]
        out: list[JobRecord] = []
        skipped = 0
        start = 0
        while len(out) < limit:
            batch: list[Any] = await client.zrange(self.key, start, start + 499, withscores=True)
            if not batch:
                break
            start += len(batch)
            for m, s in batch:
                rec = JobRecord.from_raw(m, s)
                if rec.job == job or rec.job.endswith("." + job):
                    if skipped < offset:
                        skipped += 1
                    else:
                        out.append(rec)
                        if len(out) == limit:
                            break
        return out

    async def _find(self, jid: str) -> tuple[bytes, float]:
        client = await _client(self.app)
        pattern = '{"jid":"' + jid.replace("[", "\\[").replace("*", "\\*") + '"*'
        async for member, score in client.zscan_iter(self.key, match=pattern, count=1000):
            return member, score
        raise JobNotFound(f"no job with jid {jid} in the {self.kind} set")

    async def find(self, jid: str) -> JobRecord:
        """The entry with this jid; :class:`JobNotFound` if there is none."""
        member, score = await self._find(jid)
        return JobRecord.from_raw(member, score)

    async def delete(self, jid: str) -> None:
        """Remove the entry with this jid."""
        member, _ = await self._find(jid)
        client = await _client(self.app)
        if not await client.zrem(self.key, member):
            raise JobNotFound(f"job {jid} left the {self.kind} set meanwhile")

    async def retry(self, jid: str) -> None:
        """Enqueue this entry now (it leaves the set)."""
        member, _ = await self._find(jid)
        client = await _client(self.app)
        if not await promote(self.app, client, self.key, [member], time.time()):
            raise JobNotFound(f"job {jid} left the {self.kind} set meanwhile")

    async def kill(self, jid: str) -> None:
        """Move this entry to the dead set now."""
        member, _ = await self._find(jid)
        client = await _client(self.app)
        now = time.time()
        try:
            p = DECODER.decode(member)
            new = ENCODER.encode(
                msgspec.structs.replace(
                    p,
                    failed_at=p.failed_at or now,
                    error_class=p.error_class or "Killed",
                    error_message=p.error_message or f"killed by hand from the {self.kind} set",
                )
            )
        except DECODE_ERRORS:
            new = member
        k = self.app.keys
        moved = await self.app._scripts.move(client, (self.key, k.dead), (member, new, repr(now)))
        if not moved:
            raise JobNotFound(f"job {jid} left the {self.kind} set meanwhile")
        await trim_dead(self.app, client, now)

    async def retry_all(self) -> int:
        """Enqueue every entry now; returns how many moved."""
        client = await _client(self.app)
        total = 0
        while True:
            members: list[Any] = await client.zrange(self.key, 0, 499)
            if not members:
                return total
            moved = await promote(self.app, client, self.key, members, time.time())
            total += moved
            if moved == 0 and len(members) < 500:
                return total

    async def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        client = await _client(self.app)
        async with client.pipeline(transaction=False) as pipe:
            pipe.zcard(self.key)
            pipe.delete(self.key)
            size, _ = await pipe.execute()
        return int(size)


class ScheduledSet(SortedSet):
    """Jobs deferred with ``delay=`` or ``at=``, by due time."""

    kind = "scheduled"

    @property
    def key(self) -> str:
        return self.app.keys.schedule


class RetrySet(SortedSet):
    """Failed jobs waiting for their next attempt, by due time."""

    kind = "retry"

    @property
    def key(self) -> str:
        return self.app.keys.retry


class DeadSet(SortedSet):
    """Jobs that ran out of retries (or were killed), by time of death."""

    kind = "dead"

    @property
    def key(self) -> str:
        return self.app.keys.dead

    async def kill(self, jid: str) -> None:
        raise JobNotFound(f"job {jid} is already dead")


async def find_job(app: App, jid: str) -> tuple[SortedSet, JobRecord]:
    """Find a jid in the scheduled, retry or dead set."""
    for s in (RetrySet(app), DeadSet(app), ScheduledSet(app)):
        try:
            return s, await s.find(jid)
        except JobNotFound:
            continue
    raise JobNotFound(f"no job with jid {jid} in the scheduled, retry or dead set")


# -- processes --------------------------------------------------------------------------


class ProcessInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A live worker process, from its heartbeat."""

    id: str
    hostname: str = ""
    pid: int = 0
    started_at: float = 0.0
    version: str = ""
    concurrency: int = 0
    busy: int = 0
    quiet: bool = False
    beat: float = 0.0
    capsules: list[dict[str, Any]] = []


class ProcessSet:
    """Live worker processes, their in-flight jobs, and remote control."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def list(self) -> builtins.list[ProcessInfo]:
        """Processes whose heartbeat is alive, by id."""
        client = await _client(self.app)
        k = self.app.keys
        ids = sorted(_text(m) for m in await client.smembers(k.processes))
        if not ids:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(k.process(i))
            records = await pipe.execute()
        out = []
        for i, rec in zip(ids, records, strict=True):
            if not rec:
                continue  # heartbeat expired: the reaper will clean it up
            info = json.loads(rec.get(b"info", b"{}"))
            out.append(
                ProcessInfo(
                    id=i,
                    hostname=info.get("hostname", ""),
                    pid=info.get("pid", 0),
                    started_at=info.get("started_at", 0.0),
                    version=info.get("version", ""),
                    concurrency=info.get("concurrency", 0),
                    busy=int(rec.get(b"busy", 0)),
                    quiet=rec.get(b"quiet", b"0") == b"1",
                    beat=float(rec.get(b"beat", 0)),
                    capsules=info.get("capsules", []),
                )
            )
        return out

    async def inflight(self, process_id: str) -> builtins.list[JobRecord]:
        """The jobs a process holds right now."""
        client = await _client(self.app)
        entries: dict[Any, Any] = await client.hgetall(self.app.keys.inflight(process_id))
        return [JobRecord.from_raw(v) for v in entries.values()]

    async def send(self, command: str, process_ids: Sequence[str]) -> int:
        """Send ``quiet`` or ``stop`` to processes; they act on their next heartbeat."""
        if command not in ("quiet", "stop"):
            raise ValueError(f"unknown command {command!r}: use quiet or stop")
        client = await _client(self.app)
        k = self.app.keys
        async with client.pipeline(transaction=False) as pipe:
            for pid in process_ids:
                pipe.rpush(k.control(pid), command)
                pipe.expire(k.control(pid), 60)
            await pipe.execute()
        return len(process_ids)


# -- stats ------------------------------------------------------------------------------


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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
