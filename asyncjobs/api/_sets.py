"""The sorted sets of jobs by time (scheduled, retry, dead) and find_job."""

from __future__ import annotations

import fnmatch
import logging
import time
from typing import TYPE_CHECKING

import msgspec

from .._job import JobContext
from .._payload import DECODE_ERRORS, DECODER, ENCODER, Payload
from ._common import _clear, _stores
from ._records import InvalidArgument, JobNotFound, JobRecord, check_jid

if TYPE_CHECKING:
    from .._app import App
    from .._keys import Keys
    from .._store import Store

log = logging.getLogger("asyncjobs.api")

# What the death handlers of a job killed through the API receive (Sidekiq passes
# RuntimeError "Job killed by API").
KILLED_BY_API = "killed by API"


JID_PREFIX = b'{"jid":"'


def cursor_of(record: JobRecord) -> str:
    """The cursor that pages on after ``record``: ``SCORE:JID`` (its time as Python
    writes a float, so that it reads back exactly)."""
    return f"{record.score!r}:{record.jid}"


def _parse_cursor(cursor: str) -> tuple[float, bytes]:
    score, sep, jid = cursor.partition(":")
    try:
        value = float(score)
    except ValueError:
        value = float("nan")
    if not sep or value != value:
        raise InvalidArgument(
            f"bad cursor {cursor!r}: give SCORE:JID, the score and jid of the last entry "
            "of a page (Page.next)"
        )
    return value, JID_PREFIX + jid.encode() + b'"'


def glob(match: str | None) -> str | None:
    """The glob a ``match=`` filter applies to a payload's JSON: as Sidekiq's
    ``JobSet#scan``, a text without ``*`` matches anywhere (``*text*``)."""
    if match is None:
        return None
    if not match:
        raise InvalidArgument("match must not be empty: give a glob such as *text*")
    return match if "*" in match else f"*{match}*"


def _keep(rec: JobRecord, job: str | None, pattern: str | None) -> bool:
    if job is not None and not (rec.job == job or rec.job.endswith("." + job)):
        return False
    if pattern is None or fnmatch.fnmatchcase(rec.raw, pattern):
        return True
    # Compressed arguments (#15) are matched decoded, as they are shown; sealed ones
    # (shown as <encrypted>) are not opened.
    return rec.compressed and fnmatch.fnmatchcase(ENCODER.encode(rec.args).decode(), pattern)


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a sorted set: its entries, and ``next``, the cursor of the page
    after it (None once the end is reached; a full page may be followed by an empty one)."""

    entries: list[JobRecord]
    next: str | None = None


class SortedSet:
    """A sorted set of jobs (schedule, retry, dead) by time."""

    kind = ""
    # The order entries() lists by default: soonest first, or (dead set) newest first.
    newest_first = False
    # Whether its unique jobs hold their locks (scheduled, retry): removing one by hand
    # releases it. A dead job holds none (its death released it).
    holds_locks = True

    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def key(self) -> str:
        """The set's key (shard 0's, with shards)."""
        return self.key_of(self.app.keys)

    def key_of(self, keys: Keys) -> str:
        raise NotImplementedError

    async def size(self) -> int:
        """How many entries the set holds (in every shard)."""
        return sum([await s.zset_size(self.key_of(s.keys)) for s in await _stores(self.app)])

    async def entries(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        job: str | None = None,
        newest_first: bool | None = None,
        match: str | None = None,
    ) -> list[JobRecord]:
        """Entries in time order, the dead set's newest first (as Sidekiq lists it;
        ``newest_first`` chooses); ``job`` keeps only that job name (a suffix match, so
        ``resize`` finds ``myapp.jobs.resize``); ``match`` keeps only the entries whose
        JSON payload matches a glob (``*`` any text, ``?`` one character, ``[abc]``; a
        text without ``*`` matches anywhere, as Sidekiq's ``scan``), read through in
        order on the client: meant for an operator. With shards, each shard's first
        ``offset + limit`` entries are merged in time order."""
        stores = await _stores(self.app)
        desc = self.newest_first if newest_first is None else newest_first
        pattern = glob(match)
        if len(stores) == 1:
            return await self._entries_on(stores[0], offset, limit, job, desc, pattern)
        merged = [
            rec
            for store in stores
            for rec in await self._entries_on(store, 0, offset + limit, job, desc, pattern)
        ]
        merged.sort(key=lambda r: (r.score or 0.0, r.jid), reverse=desc)
        return merged[offset : offset + limit]

    async def _entries_on(
        self,
        store: Store,
        offset: int,
        limit: int,
        job: str | None,
        desc: bool,
        pattern: str | None,
    ) -> list[JobRecord]:
        key = self.key_of(store.keys)
        if job is None and pattern is None:
            rows = await store.zset_entries(key, offset, offset + limit - 1, newest_first=desc)
            return [JobRecord.from_raw(m, s) for m, s in rows]
        out: list[JobRecord] = []
        skipped = 0
        start = 0
        while len(out) < limit:
            batch = await store.zset_entries(key, start, start + 499, newest_first=desc)
            if not batch:
                break
            start += len(batch)
            for m, s in batch:
                rec = JobRecord.from_raw(m, s)
                if _keep(rec, job, pattern):
                    if skipped < offset:
                        skipped += 1
                    else:
                        out.append(rec)
                        if len(out) == limit:
                            break
        return out

    async def page(
        self,
        *,
        after: str | None = None,
        limit: int = 50,
        job: str | None = None,
        newest_first: bool | None = None,
        match: str | None = None,
    ) -> Page:
        """A page of entries after the cursor ``after`` (``SCORE:JID``: the ``next`` of the page
        before; None for the first page), in the order of :meth:`entries`.

        Paging goes by time and jid, not by position: deleting, retrying or killing the
        entries of a page before asking for the next one skips nothing (with
        ``offset=``, every entry deleted would push one entry past the next page).
        ``job`` and ``match`` filter as in :meth:`entries`. With shards, each shard's
        page after the cursor is read and the pages merged in time order."""
        if limit < 1:
            raise InvalidArgument(f"limit must be 1 or more, got {limit}")
        stores = await _stores(self.app)
        desc = self.newest_first if newest_first is None else newest_first
        cursor = None if after is None else _parse_cursor(after)
        pattern = glob(match)
        pages = [await self._page_on(s, cursor, limit, job, desc, pattern) for s in stores]
        if len(pages) == 1:
            return pages[0]
        merged = [rec for p in pages for rec in p.entries]
        merged.sort(key=lambda r: (r.score or 0.0, r.jid), reverse=desc)
        more = len(merged) > limit or any(p.next is not None for p in pages)
        out = merged[:limit]
        return Page(entries=out, next=cursor_of(out[-1]) if more and out else None)

    async def _page_on(
        self,
        store: Store,
        cursor: tuple[float, bytes] | None,
        limit: int,
        job: str | None,
        desc: bool,
        pattern: str | None,
    ) -> Page:
        key = self.key_of(store.keys)
        out: list[JobRecord] = []
        batch = limit if job is None and pattern is None else max(limit, 500)
        while True:
            rows = await store.zset_after(key, cursor, batch, newest_first=desc)
            for m, s in rows:
                rec = JobRecord.from_raw(m, s)
                if _keep(rec, job, pattern):
                    out.append(rec)
                    if len(out) == limit:
                        return Page(entries=out, next=cursor_of(rec))
            if len(rows) < batch:
                return Page(entries=out)
            last_member, last_score = rows[-1]
            cursor = (last_score, last_member)

    async def _find(self, jid: str) -> tuple[Store, bytes, float]:
        check_jid(jid)
        for store in await _stores(self.app):
            found = await store.zset_find(self.key_of(store.keys), jid)
            if found is not None:
                return store, *found
        raise JobNotFound(f"no job with jid {jid} in the {self.kind} set")

    async def find(self, jid: str) -> JobRecord:
        """The entry with this jid; :class:`JobNotFound` if there is none."""
        _, member, score = await self._find(jid)
        return JobRecord.from_raw(member, score)

    async def delete(self, jid: str) -> None:
        """Remove the entry with this jid (a unique job of the scheduled or retry set
        releases its lock, if it still holds it)."""
        store, member, _ = await self._find(jid)
        if not await store.zset_remove(self.key_of(store.keys), member):
            raise JobNotFound(f"job {jid} left the {self.kind} set meanwhile")
        if self.holds_locks:
            await store.release_locks([member])

    async def retry(self, jid: str) -> None:
        """Enqueue this entry now (it leaves the set). As in Sidekiq, a retry by hand
        does not count against the job's retries: its ``retry_count`` goes down by one,
        so a dead job gets one more run, not a fresh budget."""
        store, member, _ = await self._find(jid)
        if not await store.promote(self.key_of(store.keys), [member], time.time(), by_hand=True):
            raise JobNotFound(f"job {jid} left the {self.kind} set meanwhile")

    def _killed(self, member: bytes, now: float) -> tuple[bytes, Payload | None]:
        """The dead-set entry for ``member``, and its payload (None if undecodable)."""
        try:
            p = DECODER.decode(member)
        except DECODE_ERRORS:
            return member, None
        p = msgspec.structs.replace(
            p,
            failed_at=p.failed_at or now,
            error_class=p.error_class or "Killed",
            error_message=p.error_message or f"killed by hand from the {self.kind} set",
        )
        return ENCODER.encode(p), p

    async def kill(self, jid: str, *, notify: bool = True) -> None:
        """Move this entry to the dead set now. Unless ``notify=False``, the app's
        death handlers run once, here, with a ``RuntimeError("killed by API")`` (as
        Sidekiq's ``kill``; the job's own ``on_exhausted`` does not run). A unique job
        releases its lock (if it still holds it), as a death in a worker does."""
        store, member, _ = await self._find(jid)
        now = time.time()
        new, payload = self._killed(member, now)
        if not await store.kill(self.key_of(store.keys), member, new, now):
            raise JobNotFound(f"job {jid} left the {self.kind} set meanwhile")
        await store.release_locks([member])
        if notify and payload is not None:
            await self._notify([payload])

    async def kill_all(self, *, notify: bool = False) -> int:
        """Move every entry to the dead set now; returns how many moved. The dead set
        is trimmed once, at the end. ``notify=True`` runs the death handlers for each
        (off by default, as in Sidekiq's ``kill_all``). Unique jobs release their locks
        (each only if it still holds its lock)."""
        return sum([await self._kill_all_on(s, notify) for s in await _stores(self.app)])

    async def _kill_all_on(self, store: Store, notify: bool) -> int:
        key = self.key_of(store.keys)
        total = 0
        now = time.time()
        try:
            while True:
                members = await store.zset_members(key, 0, 499)
                if not members:
                    return total
                now = time.time()
                killed = [self._killed(m, now) for m in members]
                flags = await store.kill_many(
                    key,
                    [(m, new) for m, (new, _) in zip(members, killed, strict=True)],
                    now,
                    trim=False,
                )
                total += sum(flags)
                await store.release_locks([m for f, m in zip(flags, members, strict=True) if f])
                if notify:
                    await self._notify(
                        [p for f, (_, p) in zip(flags, killed, strict=True) if f and p]
                    )
        finally:
            if total:
                await store.trim_dead(now)

    async def _notify(self, payloads: list[Payload]) -> None:
        """Run the app's death handlers for jobs killed through the API."""
        handlers = list(self.app.death_handlers)
        if not handlers:
            return
        exc = RuntimeError(KILLED_BY_API)
        for p in payloads:
            ctx = JobContext(p)
            for handler in handlers:
                try:
                    await handler(ctx, exc)
                except Exception:
                    log.exception("death handler %r failed for jid=%s", handler, p.jid)

    async def retry_all(self) -> int:
        """Enqueue every entry now; returns how many moved (each by hand, as
        :meth:`retry`)."""
        return sum([await self._retry_all_on(s) for s in await _stores(self.app)])

    async def _retry_all_on(self, store: Store) -> int:
        key = self.key_of(store.keys)
        total = 0
        while True:
            members = await store.zset_members(key, 0, 499)
            if not members:
                return total
            moved = await store.promote(key, members, time.time(), by_hand=True)
            total += moved
            if moved == 0 and len(members) < 500:
                return total

    async def clear(self) -> int:
        """Delete every entry; returns how many there were. The unique jobs of the
        scheduled and retry sets release their locks (each only if it still holds its
        lock); entries added while it runs stay."""
        stores = await _stores(self.app)
        if not self.holds_locks:
            return sum([await s.zset_clear(self.key_of(s.keys)) for s in stores])
        return sum([await _clear(s, self.key_of(s.keys)) for s in stores])


class ScheduledSet(SortedSet):
    """Jobs deferred with ``delay=`` or ``at=``, by due time."""

    kind = "scheduled"

    def key_of(self, keys: Keys) -> str:
        return keys.schedule


class RetrySet(SortedSet):
    """Failed jobs waiting for their next attempt, by due time."""

    kind = "retry"

    def key_of(self, keys: Keys) -> str:
        return keys.retry


class DeadSet(SortedSet):
    """Jobs that ran out of retries (or were killed), by time of death."""

    kind = "dead"
    newest_first = True
    holds_locks = False

    def key_of(self, keys: Keys) -> str:
        return keys.dead

    async def kill(self, jid: str, *, notify: bool = True) -> None:
        raise JobNotFound(f"job {jid} is already dead")

    async def kill_all(self, *, notify: bool = False) -> int:
        raise JobNotFound("the jobs of the dead set are already dead")


async def find_job(app: App, jid: str) -> tuple[SortedSet, JobRecord]:
    """Find a jid in the scheduled, retry or dead set."""
    check_jid(jid)
    for s in (RetrySet(app), DeadSet(app), ScheduledSet(app)):
        try:
            return s, await s.find(jid)
        except JobNotFound:
            continue
    raise JobNotFound(f"no job with jid {jid} in the scheduled, retry or dead set")
