"""Live worker processes, their in-flight jobs, and remote control."""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ._common import _store
from ._records import JobRecord

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
    capsules: list[dict[str, Any]] = []


class ProcessSet:
    """Live worker processes, their in-flight jobs, and remote control."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def list(self) -> builtins.list[ProcessInfo]:
        """Processes whose heartbeat is alive, by id."""
        records = await (await _store(self.app)).process_records()
        out = []
        for i, rec in records:
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
        entries = await (await _store(self.app)).inflight(process_id)
        return [JobRecord.from_raw(v) for v in entries.values()]

    async def send(self, command: str, process_ids: Sequence[str]) -> int:
        """Send ``quiet`` or ``stop`` to processes; they act on their next heartbeat."""
        if command not in ("quiet", "stop"):
            raise ValueError(f"unknown command {command!r}: use quiet or stop")
        await (await _store(self.app)).send_control(command, process_ids)
        return len(process_ids)
