"""The sorted sets of jobs by time (scheduled, retry, dead) and find_job."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from .._client import promote, trim_dead
from .._payload import DECODE_ERRORS, DECODER, ENCODER
from ._common import _client
from ._records import JobNotFound, JobRecord

if TYPE_CHECKING:
    from .._app import App


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
