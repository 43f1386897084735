"""The launcher: wires a worker process together and runs its lifecycle.

Every long-lived task (fetchers, acker, scheduler, heartbeat, reaper, watchdogs) is owned
by one task group; short ones (hooks, give-backs, death handlers) by ``Worker.tasks``.
Quiet: fetch, start and promote nothing more; jobs fetched ahead go back to the head of
their queues at once. Shutdown: quiet, wait up to ``timeout`` for running jobs, then
cancel the rest and put them back at the head of their queues *before* waiting (a few
seconds at most) for them to end; write outstanding outcomes and put back whatever is
still in this process's in-flight hash (shielded), then leave.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from .._conn import FastRedis
from .._errors import ConfigError, RedisUnavailable
from .._payload import inflight_field
from .._redis import after_error, transient
from .._seal import startup_warnings
from .._settings import CapsuleSpec
from . import preflight, systemd
from .acker import Acker
from .backoff import Backoff
from .canceller import Canceller
from .capsule import Capsule
from .fetcher import Fetcher
from .health import Health
from .heartbeat import Heartbeat, new_process_id
from .isolation import Isolation
from .memory import REPLACE_EXIT, MemoryLimit, mib
from .periodic import Periodic
from .reaper import Reaper
from .scheduler import Scheduler
from .tasks import DIE_GRACE, TaskOwner

if TYPE_CHECKING:
    from .._keys import Keys
    from .._registry import Registry
    from .._store import Store

# Connects (once) and returns the store the worker reads and writes through: the app's
# ``open_store`` (App.worker passes it).
Connect = Callable[[], Awaitable["Store"]]

log = logging.getLogger("asyncjobs.launcher")


class _StoppedEarly(Exception):
    """A stop was asked for before the worker had registered."""


class Worker:
    """One worker process's runtime: ``await worker.run()`` until stopped.

    ``app`` holds the jobs, middleware, hooks, keys and limits; ``connect`` opens the
    store (default: ``app.open_store``, which :class:`~asyncjobs.App` has).
    """

    def __init__(
        self,
        app: Registry,
        capsules: Sequence[CapsuleSpec],
        *,
        connect: Connect | None = None,
        timeout: float = 25.0,
        heartbeat_interval: float = 5.0,
        heartbeat_ttl: float = 30.0,
        scheduler_poll: float = 5.0,
        max_recoveries: int = 3,
        prefetch: int | None = None,
        handle_signals: bool = False,
        tag: str = "",
        embedded: bool = False,
        max_memory: int | None = None,
    ) -> None:
        if not capsules:
            raise ConfigError("a worker needs at least one capsule")
        if not timeout > 0:
            # 0 would cancel every running job the moment a shutdown begins.
            raise ConfigError(f"timeout must be more than 0 seconds, got {timeout!r}")
        seen: dict[str, str] = {}
        for spec in capsules:
            for q, _ in spec.queues:
                if q in seen:
                    raise ConfigError(
                        f"queue {q!r} is in capsules {seen[q]!r} and {spec.name!r}; "
                        "a queue belongs to one capsule"
                    )
                seen[q] = spec.name
        if max_memory is not None and not max_memory > 0:
            raise ConfigError(f"max_memory must be more than 0 bytes, got {max_memory!r}")
        if connect is None:
            connect = getattr(app, "open_store", None)
            if connect is None:
                raise ConfigError(
                    f"a worker needs a connection: {app!r} has no open_store(); pass "
                    "connect= (a coroutine function returning the store), or an App"
                )
        self.app = app
        self._open_store: Connect = connect
        self.store: Store | None = None
        self.specs = list(capsules)
        self.timeout = timeout
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.scheduler_poll = scheduler_poll
        self.max_recoveries = max_recoveries
        self.prefetch = prefetch
        self.handle_signals = handle_signals
        # A label for the process record (Sidekiq's tag: which app, which deploy).
        self.tag = tag
        # Runs inside someone else's program (app.run_worker()): the record says so.
        self.embedded = embedded
        # RSS in bytes over which the worker stops to be replaced (--max-memory).
        self.max_memory = max_memory
        # Stopped to be replaced (over max_memory): the CLI exits with REPLACE_EXIT.
        self.replace = False
        self.process_id = new_process_id()
        self.capsules: list[Capsule] = []
        self.fetchers: list[Fetcher] = []
        self.acker: Acker | None = None
        self.isolation: Isolation | None = None
        self.scheduler: Scheduler | None = None
        self.periodic: Periodic | None = None  # only when the app declares entries
        self.reaper: Reaper | None = None
        self.heartbeat: Heartbeat | None = None
        self.quiet = False
        self.requeued = 0
        self._stop: anyio.Event | None = None
        self._started: anyio.Event | None = None
        self._hard_stop = False
        self._stop_requested = False
        self._hurry: anyio.Event | None = None  # stop now: end the wait for running jobs
        # Short tasks spawned while the worker runs: hooks, give-backs, and the job
        # executor's death handlers and on_exhausted. Shutdown awaits them within its
        # timeout, then cancels what is left.
        self.tasks = TaskOwner()
        # Background loops that met an unexpected error (a bug), in the process record.
        self.health = Health()
        self._beats = 0
        # The ShardedWorker this one serves a shard of: remote commands and the process
        # record are the whole process's (see _worker/sharded.py).
        self.group: Any = None

    # -- control -------------------------------------------------------------------

    def stop(self, *, now: bool = False) -> None:
        """Shut down gracefully (``now=True``: cancel running jobs at once)."""
        self._stop_requested = True
        if now:
            self._hard_stop = True
            if self._hurry is not None:
                self._hurry.set()
        if self._stop is not None:
            self._stop.set()

    def quiet_down(self) -> None:
        """Fetch, start and promote nothing more; running jobs finish, jobs fetched
        ahead go back to the head of their queues at once, the quiet hooks run.
        ``SIGTSTP`` and the remote ``quiet`` command do this."""
        if self.quiet:
            return
        log.info("quiet: no new jobs will be fetched or started")
        self.quiet = True
        systemd.notify(f"STATUS=quiet ({self.process_id})")
        if self._stop is not None:  # running (else _run applies it once it has started)
            self._apply_quiet()
            self._quiet_hooks()

    def _quiet_hooks(self) -> None:
        if self.app.on_quiet:
            self.tasks.start_soon(self._run_hooks, "quiet", self.app.on_quiet[::-1])

    def _apply_quiet(self) -> None:
        if self.isolation is not None:
            self.isolation.quiet_down()
        for f in self.fetchers:
            f.stop()
        for c in self.capsules:
            c.quiet_down()
        if self.scheduler is not None:
            self.scheduler.quiet_down()
        if self.periodic is not None:
            self.periodic.quiet_down()
        if self.heartbeat is not None:
            self.heartbeat.beat_soon()  # ``asyncjobs processes`` shows it at once
        self.tasks.start_soon(self._close_fetchers, name="quiet: closing fetch connections")

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
            "unhealthy": dict(self.health.unhealthy),
        }

    def _on_command(self, cmd: str) -> None:
        if self.embedded and cmd in ("quiet", "stop"):
            # As Sidekiq's embedded mode: a worker inside someone else's program (a web
            # server) is stopped by that program, never from outside.
            log.warning(
                "remote %s refused: this worker is embedded (app.run_worker()); to stop "
                "it, leave the run_worker() block (or call worker.stop()) in the program "
                "that runs it",
                cmd,
            )
            return
        target = self.group or self
        if cmd == "quiet":
            target.quiet_down()
        elif cmd == "stop":
            target.stop()
        else:
            log.warning("ignoring unknown remote command %r", cmd)

    # -- lifecycle -----------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop` (or a signal, with ``handle_signals``) or cancellation."""
        self._stop = anyio.Event()
        self._started = anyio.Event()
        self._hurry = anyio.Event()
        if self._stop_requested:
            self._stop.set()
        if self._hard_stop:
            self._hurry.set()
        error: Exception | None = None
        async with anyio.create_task_group() as signals:
            # Signals are handled from the first moment, so a SIGTERM that arrives while
            # the worker connects or registers stops it cleanly (exit 0) too.
            if self.handle_signals:
                await signals.start(self._signals)
            try:
                await self._run()
            except _StoppedEarly:
                log.info("worker %s stopped before it started", self.process_id)
            except Exception as exc:
                error = exc  # raised as itself, not in the task group's ExceptionGroup
            finally:
                signals.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _run(self) -> None:
        app = self.app
        started, stop = self._started, self._stop
        assert started is not None and stop is not None
        watchdog = systemd.watchdog_interval()  # a bad WatchdogSec= stops us here
        self.store = store = await self._connect()
        await self._retry_until_up(lambda: preflight.check(store))
        # Encrypted jobs this worker could not open (#15): said once, at start.
        encrypted = [job.name for job in app.jobs.values() if job.encrypt]
        for warning in startup_warnings(app.packer, encrypted):
            log.warning("%s", warning)
        inflight = store.keys.inflight(self.process_id)  # this shard's (see _worker/sharded.py)
        health = self.health
        self.scheduler = Scheduler(store, poll=self.scheduler_poll, health=health)
        # The hot path (fetch, ack) uses lean pipelined connections on a single server
        # (_conn.py); each fetcher has its own, as it blocks in BRPOP when idle.
        self.acker = acker = Acker(
            store,
            store.fast or store.client,
            inflight,
            on_retry=self.scheduler.notify,
            health=health,
            metrics_key=store.keys.metrics_last(self.process_id) if app.metrics else None,
        )
        self.isolation = isolation = Isolation(self.requeue, self.tasks, health)
        self.capsules = [
            Capsule(
                app,
                spec,
                acker,
                prefetch=self.prefetch,
                tasks=self.tasks,
                isolation=isolation,
                on_give_back=self._give_back,
            )
            for spec in self.specs
        ]
        for c in self.capsules:
            c.executor.process_id = self.process_id  # a tracked job's "running" state
            if acker.metrics is not None:  # App(metrics=True)
                c.executor.measure = acker.metrics.record
        # The cancel channel (#14): a BRPOP of its own, so a cancel lands at once.
        canceller = Canceller(
            store, store.connection(), self.process_id, self.capsules, health=health
        )
        landing = store.keys.landing(self.process_id)
        self.fetchers = [
            Fetcher(c, store, store.connection(), inflight, landing, health=health)
            for c in self.capsules
        ]
        isolation.watch(self.capsules, self.fetchers)
        self.reaper = Reaper(
            store,
            self.process_id,
            interval=self.heartbeat_interval,
            max_recoveries=self.max_recoveries,
            health=health,
        )
        self.heartbeat = hb = Heartbeat(
            store,
            self.process_id,
            interval=self.heartbeat_interval,
            ttl=self.heartbeat_ttl,
            info=self._info,
            on_command=self._on_command,
            on_processes=self._after_beat,
            capsules=self.capsules,
            health=health,
        )
        for hook in app.on_startup:
            try:
                await hook()
            except Exception as exc:
                # One line (the CLI prints it, exit 2); the cause is chained for embedders.
                raise ConfigError(
                    f"startup hook {_name(hook)} failed: {type(exc).__name__}: {exc}; "
                    "the worker does not start"
                ) from exc
        if self.quiet:  # quieted before it started
            self._apply_quiet()
            self._quiet_hooks()
        # Register before fetching anything, so a reaper can always find our jobs.
        try:
            await self._retry_until_up(hb.beat)
            if app.periodic_entries:
                self.periodic = Periodic(
                    store, app.periodic_entries, app.client_middleware, health=health
                )
                if self.quiet:  # quieted before it started
                    self.periodic.quiet_down()
                await self._retry_until_up(self.periodic.reconcile)
        except _StoppedEarly:
            # A first beat whose reply was lost may have registered us all the same:
            # remove the record, or say (exit non-zero) that it stays until it expires.
            unreachable = await self._unregister(hb)
            await self.tasks.aclose(self.timeout)
            await self._shutdown_hooks()
            await self._run_hooks("exit", self.app.on_exit[::-1])
            if unreachable is not None:
                raise RedisUnavailable(unreachable) from None
            raise
        deadline: float | None = None  # of the shutdown, once asked for
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(acker.run)
                tg.start_soon(hb.run)
                tg.start_soon(self.scheduler.run)
                tg.start_soon(self.scheduler.listen)
                tg.start_soon(self._reap_soon)
                if self.periodic is not None:
                    tg.start_soon(self.periodic.run)
                for c in self.capsules:
                    tg.start_soon(c.watchdog)
                tg.start_soon(isolation.run)
                tg.start_soon(canceller.run)
                if watchdog is not None:
                    tg.start_soon(self._watchdog, watchdog)
                if self.max_memory is not None:
                    limit = MemoryLimit(
                        self.max_memory, interval=self.heartbeat_interval, over=self._over_memory
                    )
                    tg.start_soon(limit.run)
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
                    deadline = anyio.current_time() + self.timeout
                    systemd.notify("STOPPING=1")
                    self.quiet_down()  # prefetched jobs go back unstarted
                await self._drain(
                    anyio.current_time() + self.timeout if deadline is None else deadline
                )
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if isinstance(canceller.conn, FastRedis):
                    await canceller.conn.aclose()
                await self._cleanup(deadline)

    async def _connect(self) -> Store:
        store: Store = await self._retry_until_up(self._open_store)
        return store

    async def _retry_until_up(self, fn: Any) -> Any:
        backoff = Backoff(cap=2.0)
        warned = False
        while True:
            if self._stop_requested:
                raise _StoppedEarly
            try:
                return await fn()
            except Exception as exc:
                if not transient(exc):
                    raise
                await after_error(self.store.client if self.store is not None else None, exc)
                if isinstance(exc, RedisUnavailable) and not warned:
                    log.warning("%s; retrying", exc)
                    warned = True
                elif not warned:
                    log.warning("cannot reach Redis (%s); retrying", exc)
                    warned = True
                assert self._stop is not None
                with anyio.move_on_after(backoff.next()):
                    await self._stop.wait()  # a stop while Redis is away ends the wait

    def _over_memory(self, rss: int) -> None:
        """RSS passed ``max_memory``: quiet, finish the running jobs, exit to be replaced."""
        assert self.max_memory is not None
        busy = sum(len(c.running) for c in self.capsules)
        log.warning(
            "memory: RSS %s is over --max-memory (%s); quieting, finishing %d "
            "running jobs (up to %.0fs), then exiting with %d to be replaced",
            mib(rss),
            mib(self.max_memory),
            busy,
            self.timeout,
            REPLACE_EXIT,
        )
        systemd.notify(f"STATUS=over its memory limit, stopping ({self.process_id})")
        self.replace = True
        self.stop()

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
            # As Sidekiq's record: each capsule's mode and queue weights.
            "capsules": [
                {
                    "name": c["name"],
                    "queues": c["queues"],
                    "concurrency": c["concurrency"],
                    "mode": "strict" if spec.strict else "weighted",
                    "weights": dict(spec.queues),
                }
                for c, spec in zip(stats["capsules"], self.specs, strict=True)
            ],
            "tag": self.tag,
            "embedded": self.embedded,
            "concurrency": sum(c.concurrency for c in self.capsules),
            "busy": stats["busy"],
            "quiet": self.quiet,
            # Background loops that met a bug (loop → last error); empty when healthy.
            "unhealthy": stats["unhealthy"],
            # What runs now, jid → start (wall clock): ``asyncjobs processes`` lists it.
            "running": {
                rec.payload.jid: rec.started_at
                for c in self.capsules
                for rec in c.running.values()
                if rec.payload is not None
            },
        }

    async def _drain(self, deadline: float) -> None:
        """Wait until ``deadline`` for running jobs; then cancel what is left, put it
        back at the head of its queues at once, and only then wait (a few seconds at
        most) for it to end: a job slow to die can neither hold the worker past its
        timeout nor be lost to the SIGKILL a process manager sends next."""
        busy = sum(len(c.running) for c in self.capsules)
        if busy and not self._hard_stop:
            log.info("waiting up to %.0fs for %d running jobs", self.timeout, busy)
            assert self._hurry is not None
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._wait_hurry, tg.cancel_scope)
                    for c in self.capsules:
                        await c.wait_idle()
                    tg.cancel_scope.cancel()
        left = sum(len(c.running) for c in self.capsules)
        if not left:
            return
        log.warning("cancelling %d running jobs; they go back to their queues", left)
        with anyio.CancelScope(shield=True):
            entries: dict[bytes, bytes] = {}
            for c in self.capsules:
                await c.cancel_all(wait=0)
                entries.update(c.running_entries())
            # A job counted as running has reported no outcome: its field is in the
            # in-flight hash, and an outcome it reports after this is not written
            # (the ack scripts move only fields still in the hash).
            try:
                with anyio.fail_after(DIE_GRACE):
                    await self._close_fetchers()  # no BLMOVE may take them back
                    self.requeued += await self.requeue(entries)
            except Exception as exc:
                if not transient(exc) and not isinstance(exc, TimeoutError):
                    raise
                log.warning("shutdown: cannot put running jobs back now (%s); retrying", exc)
            stuck: set[Any] = set()
            for c in self.capsules:
                stuck |= await c.cancel_all(wait=DIE_GRACE)
            if stuck:
                log.warning(
                    "%d jobs did not end within %.0fs of their cancellation; leaving them "
                    "(they are back in their queues already)",
                    len(stuck),
                    DIE_GRACE,
                )

    async def _wait_hurry(self, scope: anyio.CancelScope) -> None:
        assert self._hurry is not None
        await self._hurry.wait()
        scope.cancel()

    async def _cleanup(self, deadline: float | None) -> None:
        """Write outcomes, requeue whatever is still in flight, remove our record, wait
        for the owned tasks (within the shutdown timeout), run the hooks."""
        for c in self.capsules:
            # Ended already, or given up on by _drain; else (cancelled from outside)
            # cancel now, and wait a little.
            await c.cancel_all(wait=0 if deadline is not None else DIE_GRACE)
        for f in self.fetchers:
            if isinstance(f.client, FastRedis):
                await f.client.aclose()
        if deadline is None:
            deadline = anyio.current_time() + self.timeout
        unreachable: str | None = None
        if self.acker is not None and self.store is not None:
            unreachable = await self._write_out()
        # Hooks, give-backs, death handlers: within what is left of the timeout.
        await self.tasks.aclose(max(1.0, deadline - anyio.current_time()))
        await self._shutdown_hooks()
        await self._run_hooks("exit", self.app.on_exit[::-1])
        if unreachable is not None:
            # Exit non-zero (the CLI prints this line, exit 2); the record expires.
            raise RedisUnavailable(unreachable)
        log.info("worker %s stopped (%d jobs requeued)", self.process_id, self.requeued)

    async def _write_out(self) -> str | None:
        """Flush outcomes, requeue what is in flight, remove our record; the error
        message if Redis could not be reached in time."""
        assert self.acker is not None
        until = time.monotonic() + max(5.0, self.timeout)
        while time.monotonic() < until:
            try:
                with anyio.fail_after(max(0.1, until - time.monotonic())):
                    await self.acker.flush()
                    await self.acker.flush_metrics()  # App(metrics=True): the last ones
                    self.requeued += await self._requeue_inflight()
                    if self.heartbeat is not None:
                        await self.heartbeat.clear()
                return None
            except (OSError, TimeoutError) as exc:  # RedisUnavailable is an OSError
                log.warning("shutdown: cannot reach Redis (%s); retrying", exc)
                await anyio.sleep(0.2)
        message = (
            f"shutdown: Redis unreachable; the jobs left in "
            f"{self._keys.inflight(self.process_id)} go back to their queues once this "
            f"process's record expires (in {self.heartbeat_ttl:.0f}s) and another worker "
            "reaps it"
        )
        log.error("%s", message)
        return message

    async def _unregister(self, hb: Heartbeat) -> str | None:
        """Remove the process record of a worker stopped while it registered; the
        error message if Redis could not be reached in time (no job was fetched, so
        nothing else is left behind)."""
        until = time.monotonic() + max(5.0, self.timeout)
        while time.monotonic() < until:
            try:
                with anyio.fail_after(max(0.1, until - time.monotonic())):
                    await hb.clear()
                return None
            except (OSError, TimeoutError) as exc:  # RedisUnavailable is an OSError
                log.warning("stopping: cannot reach Redis (%s); retrying", exc)
                await anyio.sleep(0.2)
        message = (
            f"stopping: Redis unreachable; this process's record may stay until it "
            f"expires (in {self.heartbeat_ttl:.0f}s); it fetched no job"
        )
        log.error("%s", message)
        return message

    async def _shutdown_hooks(self) -> None:
        await self._run_hooks("shutdown", self.app.on_shutdown[::-1])

    @staticmethod
    async def _run_hooks(kind: str, hooks: Sequence[Callable[[], Awaitable[None]]]) -> None:
        """Run ``hooks`` one after the other; one that fails is logged, the rest run."""
        for hook in hooks:
            try:
                await hook()
            except Exception:
                log.exception("%s hook %s failed", kind, _name(hook))

    def _after_beat(self, processes: int) -> None:
        """After each beat: the scheduler scales its poll; heartbeat hooks (first beat)
        and beat hooks (every beat) run as owned tasks."""
        if self.scheduler is not None:
            self.scheduler.processes = processes
        self._beats += 1
        app = self.app
        if self._beats == 1 and app.on_heartbeat:
            self.tasks.start_soon(self._run_hooks, "heartbeat", list(app.on_heartbeat))
        if app.on_beat:
            self.tasks.start_soon(self._run_hooks, "beat", list(app.on_beat))

    async def _close_fetchers(self) -> None:
        """End fetching for good: wait for the fetches on their way (their jobs are
        given back), then close the fetchers' connections, which ends a BLMOVE still
        blocked in Redis: it would take jobs we put back (or a producer pushes) into
        our landing list, to sit there until shutdown."""
        for f in self.fetchers:
            await f.settled()
            if isinstance(f.client, FastRedis):
                await f.client.aclose()

    def _give_back(self, entries: dict[bytes, bytes]) -> None:
        self.tasks.start_soon(self._put_back, entries, name="quiet give-back")

    async def _put_back(self, entries: dict[bytes, bytes]) -> None:
        """Jobs fetched ahead, held back by quiet: back to the head of their queues."""
        store = self.store
        assert store is not None
        k = self._keys
        landing = k.landing(self.process_id)
        try:
            await self._close_fetchers()
            # A BLMOVE served just before the close, whose reply is lost.
            running = {field for c in self.capsules for field in c.running}
            for raw in await store.read_landing(landing):
                field = inflight_field(raw)
                if field not in running:
                    entries.setdefault(field, raw)
            await store.land(landing, k.inflight(self.process_id))
            n = await self.requeue(entries)
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("quiet: cannot put back %d jobs now (%s); shutdown will", len(entries), exc)
            return
        log.info("quiet: %d jobs fetched ahead went back to their queues", n)

    async def _requeue_inflight(self) -> int:
        store = self.store
        assert store is not None
        k = self._keys
        inflight = k.inflight(self.process_id)
        # Jobs an idle fetcher took with BLMOVE and never landed are in flight too.
        await store.land(k.landing(self.process_id), inflight)
        return await store.requeue(inflight, await store.read_inflight(inflight))

    async def requeue(self, entries: dict[bytes, bytes]) -> int:
        """Put these in-flight jobs (field → payload) back at the head of their queues."""
        store = self.store
        assert store is not None
        return await store.requeue(self._keys.inflight(self.process_id), entries)

    @property
    def _keys(self) -> Keys:
        """The keys of the store this worker works on (its shard's)."""
        return self.store.keys if self.store is not None else self.app.keys

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
                    self.stop(now=True)  # the drain stops waiting and cancels them
                else:
                    log.info("%s: shutting down", signal.Signals(sig).name)
                    self.stop()


def _name(hook: Any) -> str:
    return str(getattr(hook, "__qualname__", None) or repr(hook))
