"""The launcher: wires a worker process together and runs its lifecycle.

Every long-lived task (fetchers, acker, scheduler, heartbeat, reaper, watchdogs) is owned
by one task group. Shutdown: quiet (stop fetching), wait up to ``timeout`` for running
jobs, cancel the rest, write outstanding outcomes and put every job still in this
process's in-flight hash back at the head of its queue (shielded), then leave.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import redis.exceptions as rexc
from anyio.abc import TaskStatus
from redis.asyncio.cluster import RedisCluster

from .._client import QueuePairs
from .._conn import FastRedis
from .._payload import DECODE_ERRORS, DECODER
from .._redis import TRANSIENT, Client, after_error
from .._settings import CapsuleSpec
from . import systemd
from .acker import Acker, Backoff
from .capsule import Capsule
from .fetcher import Fetcher
from .heartbeat import Heartbeat, new_process_id
from .isolation import Isolation
from .reaper import Reaper
from .scheduler import Scheduler

if TYPE_CHECKING:
    from .._app import App

log = logging.getLogger("asyncjobs.launcher")


class _StoppedEarly(Exception):
    """A stop was asked for before the worker had registered."""


class Worker:
    """One worker process's runtime: ``await worker.run()`` until stopped."""

    def __init__(
        self,
        app: App,
        capsules: Sequence[CapsuleSpec],
        *,
        timeout: float = 25.0,
        heartbeat_interval: float = 5.0,
        heartbeat_ttl: float = 30.0,
        scheduler_poll: float = 5.0,
        max_recoveries: int = 3,
        prefetch: int | None = None,
        handle_signals: bool = False,
    ) -> None:
        from .._errors import ConfigError

        if not capsules:
            raise ConfigError("a worker needs at least one capsule")
        seen: dict[str, str] = {}
        for spec in capsules:
            for q, _ in spec.queues:
                if q in seen:
                    raise ConfigError(
                        f"queue {q!r} is in capsules {seen[q]!r} and {spec.name!r}; "
                        "a queue belongs to one capsule"
                    )
                seen[q] = spec.name
        self.app = app
        self.specs = list(capsules)
        self.timeout = timeout
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.scheduler_poll = scheduler_poll
        self.max_recoveries = max_recoveries
        self.prefetch = prefetch
        self.handle_signals = handle_signals
        self.process_id = new_process_id()
        self.capsules: list[Capsule] = []
        self.fetchers: list[Fetcher] = []
        self.acker: Acker | None = None
        self.isolation: Isolation | None = None
        self.scheduler: Scheduler | None = None
        self.reaper: Reaper | None = None
        self.heartbeat: Heartbeat | None = None
        self.quiet = False
        self.requeued = 0
        self._stop: anyio.Event | None = None
        self._started: anyio.Event | None = None
        self._hard_stop = False
        self._stop_requested = False

    # -- control -------------------------------------------------------------------

    def stop(self, *, now: bool = False) -> None:
        """Shut down gracefully (``now=True``: cancel running jobs at once)."""
        self._stop_requested = True
        if now:
            self._hard_stop = True
        if self._stop is not None:
            self._stop.set()

    def quiet_down(self) -> None:
        """Stop fetching new jobs; running ones finish. ``SIGTSTP`` does this."""
        if not self.quiet:
            log.info("quiet: no new jobs will be fetched")
        self.quiet = True
        if self.isolation is not None:
            self.isolation.quiet = True
        for f in self.fetchers:
            f.stop()

    async def wait_started(self) -> None:
        """Wait until the worker is fetching."""
        while self._started is None:
            await anyio.sleep(0.005)
        await self._started.wait()

    async def wait_idle(self) -> None:
        """Wait until no job is running and every outcome is written."""
        for c in self.capsules:
            await c.wait_idle()
        if self.acker is not None:
            await self.acker.wait_flushed()

    def statistics(self) -> dict[str, Any]:
        """A snapshot: process id, quiet, busy, processed and failed, per capsule too."""
        return {
            "process_id": self.process_id,
            "quiet": self.quiet,
            "busy": sum(len(c.running) for c in self.capsules),
            "processed": sum(c.processed for c in self.capsules),
            "failed": sum(c.failed for c in self.capsules),
            "capsules": [c.statistics() for c in self.capsules],
        }

    def _on_command(self, cmd: str) -> None:
        if cmd == "quiet":
            self.quiet_down()
        elif cmd == "stop":
            self.stop()
        else:
            log.warning("ignoring unknown remote command %r", cmd)

    # -- lifecycle -----------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop` (or a signal, with ``handle_signals``) or cancellation."""
        self._stop = anyio.Event()
        self._started = anyio.Event()
        if self._stop_requested:
            self._stop.set()
        async with anyio.create_task_group() as signals:
            # Signals are handled from the first moment, so a SIGTERM that arrives while
            # the worker connects or registers stops it cleanly (exit 0) too.
            if self.handle_signals:
                await signals.start(self._signals)
            try:
                await self._run()
            except _StoppedEarly:
                log.info("worker %s stopped before it started", self.process_id)
            finally:
                signals.cancel_scope.cancel()

    async def _run(self) -> None:
        app = self.app
        started, stop = self._started, self._stop
        assert started is not None and stop is not None
        client = await self._connect()
        inflight = app.keys.inflight(self.process_id)
        # The hot path (fetch, ack) uses lean pipelined connections on a single server
        # (_conn.py); each fetcher has its own, as it blocks in BRPOP when idle.
        self.acker = acker = Acker(app, app._fast or client, inflight)
        self.capsules = [Capsule(app, spec, acker, prefetch=self.prefetch) for spec in self.specs]
        self.isolation = isolation = Isolation(self.requeue)
        isolation.capsules = self.capsules
        for c in self.capsules:
            c.isolation = isolation
        landing = app.keys.landing(self.process_id)
        self.fetchers = [
            Fetcher(
                c,
                client if isinstance(client, RedisCluster) else FastRedis(client.connection_pool),
                inflight,
                landing,
            )
            for c in self.capsules
        ]
        isolation.fetchers = self.fetchers
        self.scheduler = Scheduler(app, client, poll=self.scheduler_poll)
        acker.on_retry = self.scheduler.notify
        self.reaper = Reaper(
            app,
            client,
            self.process_id,
            interval=self.heartbeat_interval,
            max_recoveries=self.max_recoveries,
        )
        self.heartbeat = hb = Heartbeat(
            app,
            client,
            self.process_id,
            interval=self.heartbeat_interval,
            ttl=self.heartbeat_ttl,
            info=self._info,
            on_command=self._on_command,
        )
        hb.on_processes = lambda n: setattr(self.scheduler, "processes", n)
        hb.capsules = self.capsules
        for hook in app.on_startup:
            await hook()
        # Register before fetching anything, so a reaper can always find our jobs.
        try:
            await self._retry_until_up(hb.beat)
        except _StoppedEarly:
            await self._shutdown_hooks()
            raise
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(acker.run)
                tg.start_soon(hb.run)
                tg.start_soon(self.scheduler.run)
                tg.start_soon(self.scheduler.listen)
                tg.start_soon(self._reap_soon)
                for c in self.capsules:
                    tg.start_soon(c.watchdog)
                tg.start_soon(isolation.run)
                if (every := systemd.watchdog_interval()) is not None:
                    tg.start_soon(self._watchdog, every)
                fetch_group = anyio.create_task_group()
                async with fetch_group:
                    for f in self.fetchers:
                        fetch_group.start_soon(f.run)
                    log.info(
                        "worker %s started: %s",
                        self.process_id,
                        ", ".join(
                            f"{c.name}[{','.join(c.order.names)}]x{c.concurrency}"
                            for c in self.capsules
                        ),
                    )
                    started.set()
                    systemd.notify(f"READY=1\nSTATUS=fetching ({self.process_id})")
                    await stop.wait()
                    systemd.notify("STOPPING=1")
                    self.quiet_down()
                    for c in self.capsules:
                        c.quiet = True  # stopping: prefetched jobs are put back unstarted
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()

    async def _connect(self) -> Client:
        client: Client = await self._retry_until_up(self.app.connect)
        return client

    async def _retry_until_up(self, fn: Any) -> Any:
        backoff = Backoff(cap=2.0)
        warned = False
        while True:
            if self._stop_requested:
                raise _StoppedEarly
            try:
                return await fn()
            except TRANSIENT as exc:
                await after_error(self.app._redis, exc)
                from .._errors import RedisUnavailable

                if isinstance(exc, RedisUnavailable) and not warned:
                    log.warning("%s; retrying", exc)
                    warned = True
                elif not warned:
                    log.warning("cannot reach Redis (%s); retrying", exc)
                    warned = True
                assert self._stop is not None
                with anyio.move_on_after(backoff.next()):
                    await self._stop.wait()  # a stop while Redis is away ends the wait

    async def _watchdog(self, every: float) -> None:
        """Ping systemd's watchdog while the event loop runs (a stuck loop stops it)."""
        while True:
            systemd.notify("WATCHDOG=1")
            await anyio.sleep(every)

    async def _reap_soon(self) -> None:
        assert self.reaper is not None
        await self.reaper.run()

    def _info(self) -> dict[str, Any]:
        stats = self.statistics()
        return {
            "capsules": [
                {"name": c["name"], "queues": c["queues"], "concurrency": c["concurrency"]}
                for c in stats["capsules"]
            ],
            "concurrency": sum(c.concurrency for c in self.capsules),
            "busy": stats["busy"],
            "quiet": self.quiet,
        }

    async def _drain(self) -> None:
        """Wait up to ``timeout`` for running jobs, then cancel what is left."""
        busy = sum(len(c.running) for c in self.capsules)
        if busy and not self._hard_stop:
            log.info("waiting up to %.0fs for %d running jobs", self.timeout, busy)
            with anyio.move_on_after(self.timeout):
                for c in self.capsules:
                    await c.wait_idle()
        left = sum(len(c.running) for c in self.capsules)
        if left:
            log.warning("cancelling %d running jobs; they go back to their queues", left)
            with anyio.CancelScope(shield=True):
                for c in self.capsules:
                    await c.cancel_all()

    async def _cleanup(self) -> None:
        """Write outcomes, requeue whatever is still in flight, remove our record."""
        for c in self.capsules:
            await c.cancel_all()
        for f in self.fetchers:
            if isinstance(f.client, FastRedis):
                await f.client.aclose()
        if self.acker is None or self.app._redis is None:
            return
        deadline = time.monotonic() + max(5.0, self.timeout)
        while time.monotonic() < deadline:
            try:
                with anyio.fail_after(max(0.1, deadline - time.monotonic())):
                    await self.acker.flush()
                    self.requeued += await self._requeue_inflight()
                    if self.heartbeat is not None:
                        await self.heartbeat.clear()
                break
            except (rexc.ConnectionError, rexc.TimeoutError, OSError, TimeoutError) as exc:
                log.warning("shutdown: cannot reach Redis (%s); retrying", exc)
                await anyio.sleep(0.2)
        else:
            log.error(
                "shutdown: Redis unreachable; jobs left in %s will be recovered by another "
                "worker once this process's heartbeat expires",
                self.app.keys.inflight(self.process_id),
            )
        await self._shutdown_hooks()
        log.info("worker %s stopped (%d jobs requeued)", self.process_id, self.requeued)

    async def _shutdown_hooks(self) -> None:
        for hook in self.app.on_shutdown:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook %r failed", hook)

    async def _requeue_inflight(self) -> int:
        client = self.app._redis
        assert client is not None
        k = self.app.keys
        # Jobs an idle fetcher took with BLMOVE and never landed are in flight too.
        await self.app._scripts.land(
            client, (k.landing(self.process_id), k.inflight(self.process_id))
        )
        entries: dict[Any, Any] = await client.hgetall(self.app.keys.inflight(self.process_id))
        return await self.requeue(entries)

    async def requeue(self, entries: dict[bytes, bytes]) -> int:
        """Put these in-flight jobs (field → payload) back at the head of their queues."""
        app = self.app
        client = app._redis
        assert client is not None
        if not entries:
            return 0
        pairs = QueuePairs(app.keys, [app.keys.inflight(self.process_id)])
        args: list[Any] = []
        for field, raw in entries.items():
            try:
                queue = DECODER.decode(raw).queue
            except DECODE_ERRORS:
                queue = "default"
            args.extend((field, pairs.index(queue)))
        return int(await app._scripts.requeue(client, pairs.keys, args))

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        sigs = [signal.SIGTERM, signal.SIGINT]
        if hasattr(signal, "SIGTSTP"):
            sigs.append(signal.SIGTSTP)
        with anyio.open_signal_receiver(*sigs) as received:
            task_status.started()
            async for sig in received:
                if sig == getattr(signal, "SIGTSTP", None):
                    self.quiet_down()
                elif sig == signal.SIGINT and self._stop_requested:
                    log.warning("second SIGINT: stopping now; running jobs go back to their queues")
                    self._hard_stop = True
                    for c in self.capsules:
                        asyncio.get_running_loop().create_task(c.cancel_all())
                else:
                    log.info("%s: shutting down", signal.Signals(sig).name)
                    self.stop()
