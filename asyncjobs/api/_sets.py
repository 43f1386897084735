"""The sorted sets of jobs by time (scheduled, retry, dead) and find_job."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from .._payload import DECODE_ERRORS, DECODER, ENCODER
from ._common import _store
from ._records import JobNotFound, JobRecord

if TYPE_CHECKING:
    from .._app import App


class SortedSet:
    """A sorted set of jobs (schedule, retry, dead) by time."""

    kind = ""
    # The order entries() lists by default: soonest first, or (dead set) newest first.
    newest_first = False

    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def key(self) -> str:
        raise NotImplementedError

    async def size(self) -> int:
        """How many entries the set holds."""
        return await (await _store(self.app)).zset_size(self.key)

    async def entries(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        job: str | None = None,
        newest_first: bool | None = None,
    ) -> list[JobRecord]:
        """Entries in time order, the dead set's newest first (as Sidekiq lists it;
        ``newest_first`` chooses); ``job`` keeps only that job name (a suffix match, so
        ``resize`` finds ``myapp.jobs.resize``)."""
        store = await _store(self.app)
        desc = self.newest_first if newest_first is None else newest_first
        if job is None:
            rows = await store.zset_entries(self.key, offset, offset + limit - 1, newest_first=desc)
            return [JobRecord.from_raw(m, s) for m, s in rows]
        out: list[JobRecord] = []
        skipped = 0
        start = 0
        while len(out) < limit:
            batch = await store.zset_entries(self.key, start, start + 499, newest_first=desc)
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
        found = await (await _store(self.app)).zset_find(self.key, jid)
        if found is not None:
            return found
        raise JobNotFound(f"no job with jid {jid} in the {self.kind} set")

    async def find(self, jid: str) -> JobRecord:
        """The entry with this jid; :class:`JobNotFound` if there is none."""
        member, score = await self._find(jid)
        return JobRecord.from_raw(member, score)

    async def delete(self, jid: str) -> None:
        """Remove the entry with this jid."""
        member, _ = await self._find(jid)
        if not await (await _store(self.app)).zset_remove(self.key, member):
            raise JobNotFound(f"job {jid} left the {self.kind} set meanwhile")

    async def retry(self, jid: str) -> None:
        """Enqueue this entry now (it leaves the set)."""
        member, _ = await self._find(jid)
        if not await (await _store(self.app)).promote(self.key, [member], time.time()):
            raise JobNotFound(f"job {jid} left the {self.kind} set meanwhile")

    async def kill(self, jid: str) -> None:
        """Move this entry to the dead set now."""
        member, _ = await self._find(jid)
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
        if not await (await _store(self.app)).kill(self.key, member, new, now):
            raise JobNotFound(f"job {jid} left the {self.kind} set meanwhile")

    async def retry_all(self) -> int:
        """Enqueue every entry now; returns how many moved."""
        store = await _store(self.app)
        total = 0
        while True:
            members = await store.zset_members(self.key, 0, 499)
            if not members:
                return total
            moved = await store.promote(self.key, members, time.time())
            total += moved
            if moved == 0 and len(members) < 500:
                return total

    async def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        return await (await _store(self.app)).zset_clear(self.key)


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
    newest_first = True

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
