"""The heartbeat: the process record with a TTL, and remote commands (quiet, stop).

One round trip (``store.heartbeat``) every ``interval`` seconds. While the record lives,
no reaper touches this process's in-flight hash; when it expires (the process died), a
reaper gives the jobs back (invariant 1).

A process that was alive but silent for too long (stopped, a frozen VM, Redis out of
reach) may have been presumed dead and reaped: from the moment its record may have
expired, its prefetched jobs are held back unstarted until a beat tells whether the
record was still there. If it was gone, the process says so (presumed dead, or Redis
lost its data) and drops the prefetched jobs that were given to others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .._redis import mask_url, transient
from .._version import __version__
from .backoff import after_failure
from .health import Health

if TYPE_CHECKING:
    from .._store import Store
    from .capsule import Capsule

log = logging.getLogger("asyncjobs.heartbeat")

_ENC = msgspec.json.Encoder()


def new_process_id() -> str:
    """``host:pid:random``: unique, and tells a reaper on the same host which pid to check."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def rss_kib() -> int:
    """This process's resident memory in KiB (as Sidekiq's ``rss``): current, from
    /proc on Linux; elsewhere the peak (``getrusage``); 0 if neither is available."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return 0
    return int(peak // 1024 if sys.platform == "darwin" else peak)  # macOS: bytes


class Heartbeat:
    def __init__(
        self,
        store: Store,
        process_id: str,
        *,
        interval: float,
        ttl: float,
        info: Callable[[], dict[str, Any]],
        on_command: Callable[[str], None],
        on_processes: Callable[[int], None] | None = None,
        capsules: list[Capsule] | None = None,
        health: Health | None = None,
    ) -> None:
        self.store = store
        self.process_id = process_id
        self.interval = interval
        self.ttl = ttl
        self._info = info
        self._on_command = on_command
        self.started_at = time.time()
        self.processes = 1
        # Told the number of live processes at each beat (the scheduler scales its poll).
        self.on_processes = on_processes
        self._down = False
        self.capsules = capsules or []  # whose prefetched jobs a lapse holds back
        # When the last beat that succeeded was sent (wall clock, monotonic clock): a
        # stopped process or a frozen VM advances at least one of them.
        self._last_ok: tuple[float, float] | None = None
        # No beat for this long: the record may expire before the next one lands.
        self.lapse_after = max(ttl - interval, ttl / 2)
        self._lapsed = False
        self._mine: set[bytes] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()  # beat now
        self._run_id: str | None = None
        self.presumed_dead = 0
        self.data_lost = 0
        self.health = health or Health()

    def beat_soon(self) -> None:
        """Beat now, not at the next interval (quiet shows in ``processes`` at once)."""
        self._wake.set()

    async def beat(self) -> None:
        """Write the record, read commands, count live processes. One round trip."""
        info = self._info()
        record: dict[str | bytes, Any] = {
            "info": _ENC.encode(
                {
                    "hostname": socket.gethostname(),
                    "pid": os.getpid(),
                    "started_at": self.started_at,
                    "version": __version__,
                    "rss": rss_kib(),
                    **info,
                }
            ),
            "busy": info.get("busy", 0),
            "beat": time.time(),
            "quiet": int(bool(info.get("quiet"))),
        }
        sent = (time.time(), time.monotonic())
        beat = await self.store.heartbeat(self.process_id, record, self.ttl)
        last, self._last_ok = self._last_ok, sent
        # HSET created every field (not just one newly added to the record): it was gone.
        if last is not None and beat.created == len(record):
            await self._record_was_gone(max(sent[0] - last[0], sent[1] - last[1]))
        elif self._run_id is None:
            self._run_id = await self._server_run_id()
        if self._lapsed:
            self._release()
        self.processes = beat.processes
        if self.on_processes is not None:
            self.on_processes(self.processes)
        for capsule in self.capsules:
            capsule.pause(beat.paused)
        for cmd in beat.commands:
            self._on_command(cmd)

    async def _server_run_id(self) -> str:
        try:
            info = await self.store.server_info("server")
        except Exception as exc:
            if transient(exc):
                raise
            return ""  # INFO renamed away, or a Cluster reply: no restart detection
        return str(info.get("run_id", ""))

    async def _record_was_gone(self, gap: float) -> None:
        """Say why this process's record was gone, and drop the prefetched jobs that are
        no longer ours."""
        run_id = await self._server_run_id()
        restarted = bool(self._run_id and run_id and run_id != self._run_id)
        self._run_id = run_id or self._run_id
        if not self._lapsed:
            self._hold()
        lost = gap < self.ttl  # the record cannot have expired yet
        if not lost and restarted and any(c.processed or c.failed for c in self.capsules):
            # Silent long enough for it to expire; a server that kept its data kept the
            # counters our acknowledgements wrote, though.
            lost = not await self.store.has_counters()
        if lost:
            self.data_lost += 1
            log.warning(
                "heartbeat: Redis at %s lost its data (%s): this process's record was gone "
                "%.1fs after its last beat; jobs that were queued, scheduled or in flight "
                "there may be lost",
                mask_url(self.store.url),
                "it restarted empty"
                if restarted
                else "flushed, or a failover to a replica that lacked them",
                gap,
            )
            return
        fields = await self.store.inflight_fields(self.store.keys.inflight(self.process_id))
        still = set(fields)
        mine = self._mine | {f for c in self.capsules for f in c.running}
        taken = sorted(mine - still - self._written())
        dropped = [f for c in self.capsules for f in c.release_held(still)]
        if not taken and not dropped:
            log.info(
                "heartbeat: this process's record had expired (no heartbeat for %.1fs, past "
                "heartbeat_ttl %.1fs); registered again, and none of its jobs was taken",
                gap,
                self.ttl,
            )
            return
        self.presumed_dead += 1
        log.warning(
            "heartbeat: this process was presumed dead (no heartbeat for %.1fs, past "
            "heartbeat_ttl %.1fs); its in-flight jobs were given back to their queues: %s; "
            "the %d it had fetched ahead are dropped unstarted",
            gap,
            self.ttl,
            ", ".join(f.decode(errors="replace") for f in taken) or "none",
            len(dropped),
        )

    def _written(self) -> set[bytes]:
        """Fields whose outcome this process wrote itself since it went silent."""
        written: set[bytes] = set()
        for acker in {id(c.acker): c.acker for c in self.capsules}.values():
            written |= acker.written or set()
        return written

    def _hold(self) -> None:
        """Hold back every prefetched job until a beat tells they are still ours."""
        self._lapsed = True
        # What this process held when it went silent, to name what was given back.
        self._mine = {f for c in self.capsules for f in c.running}
        for c in self.capsules:
            c.acker.written = set()
            c.hold_ready()
            self._mine.update(f for f, _ in c.held)

    def _release(self) -> None:
        self._lapsed = False
        self._mine = set()
        for c in self.capsules:
            c.acker.written = None
            c.release_held()

    def _tick(self) -> None:
        """A timer, not a task: after a pause it runs before any job task resumes (task
        steps wait for the next loop turn), so nothing prefetched starts meanwhile."""
        self._timer = asyncio.get_running_loop().call_later(
            min(1.0, self.lapse_after / 4), self._tick
        )
        if self._last_ok is None or self._lapsed:
            return
        wall, mono = self._last_ok
        if max(time.time() - wall, time.monotonic() - mono) >= self.lapse_after:
            self._hold()
            self._wake.set()

    async def run(self) -> None:
        self._tick()
        try:
            await self._run()
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def _run(self) -> None:
        import anyio

        # When the first beat of an outage failed (monotonic), to say how long it lasted.
        down_since = 0.0
        while True:
            # While Redis is away, try every second (at most): the line that says it is
            # back comes soon after it is, and tells the downtime to about a second.
            with anyio.move_on_after(min(self.interval, 1.0) if self._down else self.interval):
                await self._wake.wait()
            self._wake.clear()
            try:
                await self.beat()
            except Exception as exc:
                if not await self.health.failed("heartbeat", exc, log, self.store):
                    continue
                await after_failure(self.store, exc)
                if not self._down:
                    log.warning(
                        "heartbeat: cannot reach Redis at %s (%s)",
                        mask_url(self.store.url),
                        exc,
                    )
                    self._down = True
                    down_since = time.monotonic()
                continue
            self.health.ok("heartbeat")
            if self._down:
                log.warning(
                    "Redis is back after %.1f s (at %s; unreachable from the first failed "
                    "heartbeat to this one)",
                    time.monotonic() - down_since,
                    mask_url(self.store.url),
                )
                self._down = False

    async def clear(self) -> None:
        """Remove this process's record at a clean exit."""
        await self.store.clear_process(self.process_id)
