"""Live worker processes, their in-flight jobs, and remote control."""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ._common import _store, _stores
from ._records import InvalidArgument, JobRecord

if TYPE_CHECKING:
    from .._app import App


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
    # Each capsule: name, queues, concurrency, mode ("weighted" or "strict") and
    # weights (queue -> weight).
    capsules: list[dict[str, Any]] = []
    # asyncjobs worker --tag (Sidekiq's tag); "" when none was given.
    tag: str = ""
    # Resident memory in KiB at the last heartbeat.
    rss: int = 0
    # A worker inside another program (app.run_worker()): it refuses remote quiet and
    # stop; leaving its run_worker() block stops it.
    embedded: bool = False
    # Background loops whose last run met an unexpected error: loop name -> that error.
    unhealthy: dict[str, str] = {}


class WorkItem(msgspec.Struct, frozen=True, kw_only=True):
    """A job a live process holds now, from its in-flight hash: running, or fetched
    ahead and about to start. ``started_at`` is known when the worker's heartbeat lists
    its running jobs (``info.running``: jid -> start time); else None."""

    process: str
    record: JobRecord
    started_at: float | None = None


class ProcessSet:
    """Live worker processes, their in-flight jobs, and remote control."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def list(self) -> builtins.list[ProcessInfo]:
        """Processes whose heartbeat is alive, by id (with shards, a process's busy
        count and concurrency summed over its shards; the rest from shard 0's record)."""
        stores = await _stores(self.app)
        store = stores[0]
        records = [(i, rec) for i, rec in await store.process_records() if rec]
        # busy is counted from the in-flight hashes, which are current: the heartbeat's
        # own count is as old as its last beat (up to heartbeat_interval).
        held = await store.inflight_counts([i for i, _ in records])
        extra: dict[str, int] = {}
        for other in stores[1:]:
            ids = [i for i, _ in records]
            for i, n in zip(ids, await other.inflight_counts(ids), strict=True):
                held[ids.index(i)] += n
            for i, rec in await other.process_records():
                if rec:
                    extra[i] = extra.get(i, 0) + json.loads(rec.get(b"info", b"{}")).get(
                        "concurrency", 0
                    )
        out = []
        for (i, rec), busy in zip(records, held, strict=True):
            info = json.loads(rec.get(b"info", b"{}"))
            out.append(
                ProcessInfo(
                    id=i,
                    hostname=info.get("hostname", ""),
                    pid=info.get("pid", 0),
                    started_at=info.get("started_at", 0.0),
                    version=info.get("version", ""),
                    concurrency=info.get("concurrency", 0) + extra.get(i, 0),
                    busy=busy,
                    quiet=rec.get(b"quiet", b"0") == b"1",
                    beat=float(rec.get(b"beat", 0)),
                    capsules=info.get("capsules", []),
                    tag=info.get("tag", ""),
                    rss=info.get("rss", 0),
                    embedded=bool(info.get("embedded", False)),
                    unhealthy=dict(info.get("unhealthy") or {}),
                )
            )
        return out

    async def work(self) -> builtins.list[WorkItem]:
        """What every live process holds now, by process, then oldest job first (with
        shards, from every shard)."""
        out: builtins.list[WorkItem] = []
        for store in await _stores(self.app):
            for pid, rec in await store.process_records():
                if not rec:
                    continue
                running = json.loads(rec.get(b"info", b"{}")).get("running") or {}
                jobs = [JobRecord.from_raw(v) for v in (await store.inflight(pid)).values()]
                jobs.sort(key=lambda r: r.enqueued_at or r.created_at)
                out.extend(
                    WorkItem(process=pid, record=r, started_at=running.get(r.jid)) for r in jobs
                )
        if len(await _stores(self.app)) > 1:
            out.sort(key=lambda w: w.process)  # by process, each one's oldest first
        return out

    async def inflight(self, process_id: str) -> builtins.list[JobRecord]:
        """The jobs a process holds right now (in every shard)."""
        out: builtins.list[JobRecord] = []
        for store in await _stores(self.app):
            out.extend(JobRecord.from_raw(v) for v in (await store.inflight(process_id)).values())
        return out

    async def send(self, command: str, process_ids: Sequence[str]) -> int:
        """Send ``quiet`` or ``stop`` to processes; they act on their next heartbeat."""
        if command not in ("quiet", "stop"):
            raise InvalidArgument(f"unknown command {command!r}: use quiet or stop")
        await (await _store(self.app)).send_control(command, process_ids)
        return len(process_ids)
