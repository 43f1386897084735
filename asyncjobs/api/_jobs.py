"""Finding a job wherever it is: waiting in a queue, scheduled, retrying, running, dead."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec

from ._common import _stores
from ._records import JobNotFound, JobRecord, check_jid
from ._sets import DeadSet, RetrySet, ScheduledSet

if TYPE_CHECKING:
    from .._app import App


class JobLocation(msgspec.Struct, frozen=True, kw_only=True):
    """Where a job is now, and the job as stored there.

    ``state`` is ``scheduled``, ``retry``, ``dead``, ``running`` (held by ``process``:
    running, or fetched ahead and about to start) or ``queued`` (waiting in
    ``record.queue``). ``started_at`` is known for a running job when its worker lists
    its running jobs in its heartbeat.
    """

    state: str
    record: JobRecord
    process: str | None = None
    started_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape of ``asyncjobs job --json`` (see docs/cli.md)."""
        return {
            "state": self.state,
            "process": self.process,
            "started_at": self.started_at,
            "job": self.record.to_dict(),
        }


async def locate_job(app: App, jid: str) -> JobLocation:
    """Find a job by jid in the sets, the live processes' in-flight hashes and the
    queues, in that order; :class:`JobNotFound` if it is in none (it ran and is done,
    or never was). Each place is read in turn, so a job that moves meanwhile can be
    missed: ask again. The queues are read through: meant for an operator."""
    check_jid(jid)
    for s in (RetrySet(app), DeadSet(app), ScheduledSet(app)):
        try:
            return JobLocation(state=s.kind, record=await s.find(jid))
        except JobNotFound:
            continue
    stores = await _stores(app)
    for store in stores:
        for pid, rec in await store.process_records():
            raw = await store.inflight_job(pid, jid) if rec else None
            if raw is not None:
                running = json.loads(rec.get(b"info", b"{}")).get("running") or {}
                return JobLocation(
                    state="running",
                    record=JobRecord.from_raw(raw),
                    process=pid,
                    started_at=running.get(jid),
                )
    for store in stores:
        for name, size, _ in await store.queue_heads():
            raw = await store.queue_find(name, jid) if size else None
            if raw is not None:
                return JobLocation(state="queued", record=JobRecord.from_raw(raw))
    raise JobNotFound(
        f"no job with jid {jid}: not queued, scheduled, retrying, running or dead "
        "(a job that succeeded leaves no trace)"
    )
