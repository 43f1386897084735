"""The reaper: gives back the in-flight jobs of processes that died.

A process is dead when its heartbeat record has expired, or, on this host, when its pid
no longer runs. Its jobs go back to the head of their queues with one atomic script per
process, which moves only fields still in the hash, so racing reapers move each job once.
A job recovered ``max_recoveries`` times (it keeps killing its worker: a poison pill)
goes to the dead set instead (invariant 3), and its unique lock, if it holds one, is
released (as a death in a worker releases it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from typing import TYPE_CHECKING, Any

import msgspec

from .._payload import DECODE_ERRORS, DECODER, ENCODER
from .backoff import after_failure
from .decisions import poison_pill, presumed_dead
from .health import Health

if TYPE_CHECKING:
    from .._store import Store

log = logging.getLogger("asyncjobs.reaper")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def same_host_pid(process_id: str) -> int | None:
    """The pid of ``process_id`` if it ran on this host, else None."""
    parts = process_id.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname():
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None


class Reaper:
    def __init__(
        self,
        store: Store,
        process_id: str,
        *,
        interval: float,
        max_recoveries: int = 3,
        health: Health | None = None,
    ) -> None:
        self.store = store
        self.health = health or Health()
        self.process_id = process_id
        self.interval = interval
        self.max_recoveries = max_recoveries
        self.recovered = 0
        self.dead_lettered = 0
        self._rng = random.Random()

    async def run(self) -> None:
        while True:
            try:
                await self.reap_once()
            except Exception as exc:
                if await self.health.failed("reaper", exc, log, self.store):
                    await after_failure(self.store, exc)
                    log.debug("reaper: Redis unavailable: %s", exc)
            else:
                self.health.ok("reaper")
            await asyncio.sleep(self.interval * (0.5 + self._rng.random()))

    async def reap_once(self) -> int:
        """Reap every dead process once; returns the number of jobs moved."""
        store = self.store
        ids = [i for i in await store.process_ids() if i != self.process_id]
        if not ids:
            return 0
        alive = await store.processes_alive(ids)
        own = os.getpid()
        moved = 0
        for proc, exists in zip(ids, alive, strict=True):
            pid = same_host_pid(proc) if exists else None
            dead = presumed_dead(
                record_exists=exists,
                same_host_pid=pid,
                pid_alive=pid is None or pid == own or pid_alive(pid),
                own_pid=own,
            )
            if not dead:
                continue
            if exists:
                # Same host, pid gone: no need to wait for the record to expire.
                await store.delete_process_record(proc)
            moved += await self.reap(proc)
        return moved

    async def reap(self, proc: str) -> int:
        store = self.store
        k = store.keys
        inflight = k.inflight(proc)
        # Its landing list (jobs taken by BLMOVE, not yet landed) is in flight too.
        await store.land(k.landing(proc), inflight)
        entries = await store.read_inflight(inflight)
        moves: list[tuple[bytes, str, bytes, str]] = []
        now = time.time()
        dead = 0
        deaths: list[Any] = []  # batches (#14): (field, bid) of batch jobs it kills
        for field, raw in entries.items():
            try:
                p = DECODER.decode(raw)
            except DECODE_ERRORS:
                moves.append((field, "default", raw, "queue"))
                continue
            n = p.recoveries + 1
            if poison_pill(n, self.max_recoveries):
                dead += 1
                data = ENCODER.encode(
                    msgspec.structs.replace(
                        p,
                        recoveries=n,
                        error_class="WorkerDied",
                        error_message=(
                            f"the worker running this job died {n} times "
                            f"(max_recoveries={self.max_recoveries}): a poison pill?"
                        ),
                        failed_at=now,
                    )
                )
                moves.append((field, p.queue, data, "dead"))
                if p.bid is not None:
                    deaths.extend((field, p.bid))
            else:
                data = ENCODER.encode(msgspec.structs.replace(p, recoveries=n))
                moves.append((field, p.queue, data, "queue"))
        n, locked = await store.reap(proc, moves, now, batch_deaths=deaths)
        if locked:
            # A poison pill is a death: its unique lock goes, as a death in a worker's.
            await store.release_locks(locked)
        if dead:
            await store.trim_dead(now)
        if n > 0:
            log.warning("recovered %d jobs of dead process %s (%d to the dead set)", n, proc, dead)
            self.recovered += n
            self.dead_lettered += dead
        return max(n, 0)
