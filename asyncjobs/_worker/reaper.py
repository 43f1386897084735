"""The reaper: gives back the in-flight jobs of processes that died.

A process is dead when its heartbeat record has expired, or, on this host, when its pid
no longer runs. Its jobs go back to the head of their queues with one atomic script per
process, which moves only fields still in the hash, so racing reapers move each job once.
A job recovered ``max_recoveries`` times (it keeps killing its worker: a poison pill)
goes to the dead set instead (invariant 3).
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

from .._client import QueuePairs, trim_dead
from .._payload import DECODE_ERRORS, DECODER, ENCODER
from .._redis import Client
from .acker import after_failure
from .health import Health

if TYPE_CHECKING:
    from .._app import App

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
        app: App,
        client: Client,
        process_id: str,
        *,
        interval: float,
        max_recoveries: int = 3,
        health: Health | None = None,
    ) -> None:
        self.app = app
        self.health = health or Health()
        self.client = client
        self.process_id = process_id
        self.interval = interval
        self.max_recoveries = max_recoveries
        self.recovered = 0
        self.dead_lettered = 0
        self._rng = random.Random()
        self._script = app._scripts.reap

    async def run(self) -> None:
        while True:
            try:
                await self.reap_once()
            except Exception as exc:
                if await self.health.failed("reaper", exc, log, self.app._redis):
                    await after_failure(self.app, exc)
                    log.debug("reaper: Redis unavailable: %s", exc)
            else:
                self.health.ok("reaper")
            await asyncio.sleep(self.interval * (0.5 + self._rng.random()))

    async def reap_once(self) -> int:
        """Reap every dead process once; returns the number of jobs moved."""
        k = self.app.keys
        members = await self.client.smembers(k.processes)
        ids = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        ids = [i for i in ids if i != self.process_id]
        if not ids:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for pid_ in ids:
                pipe.exists(k.process(pid_))
            alive = await pipe.execute()
        moved = 0
        for proc, exists in zip(ids, alive, strict=True):
            if exists:
                pid = same_host_pid(proc)
                if pid is None or pid_alive(pid) or pid == os.getpid():
                    continue
                # Same host, pid gone: no need to wait for the record to expire.
                await self.client.delete(k.process(proc))
            moved += await self.reap(proc)
        return moved

    async def reap(self, proc: str) -> int:
        k = self.app.keys
        inflight = k.inflight(proc)
        # Its landing list (jobs taken by BLMOVE, not yet landed) is in flight too.
        await self.app._scripts.land(self.client, (k.landing(proc), inflight))
        entries: dict[Any, Any] = await self.client.hgetall(inflight)
        pairs = QueuePairs(k, [inflight, k.process(proc), k.processes, k.dead])
        args: list[Any] = [proc]
        now = time.time()
        dead = 0
        for field, raw in entries.items():
            try:
                p = DECODER.decode(raw)
            except DECODE_ERRORS:
                queue, data, target = "default", raw, "queue"
            else:
                n = p.recoveries + 1
                queue = p.queue
                if n >= self.max_recoveries:
                    target = "dead"
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
                else:
                    target = "queue"
                    data = ENCODER.encode(msgspec.structs.replace(p, recoveries=n))
            args.extend((field, pairs.index(queue), data, target, repr(now)))
        n = int(await self._script(self.client, pairs.keys, args))
        if dead:
            await trim_dead(self.app, self.client, now)
        if n > 0:
            log.warning("recovered %d jobs of dead process %s (%d to the dead set)", n, proc, dead)
            self.recovered += n
            self.dead_lettered += dead
        return max(n, 0)
