"""The registry: the jobs of an app and everything that runs around them (pure).

What a worker needs from an app, without its connection or its client: the job
functions by name, the middleware chains, the lifecycle hooks and death handlers, the
key names and the limits. :class:`~asyncjobs.App` is a registry with a client and a
connection; the worker modules take a registry (and a store), so they never import the
app's module and the import graph runs one way.
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ._errors import ConfigError
from ._job import Job, JobContext
from ._keys import Keys
from ._middleware import Chain, ClientMiddleware, ServerMiddleware
from ._periodic import PeriodicEntry
from ._seal import Packer

__all__ = ["JOB_OPTIONS", "DeathHandler", "Hook", "Registry"]

Hook = Callable[[], Awaitable[None]]
DeathHandler = Callable[[JobContext, BaseException], Awaitable[None]]

# What default_job_options may set: every option of @app.job but the job's own name.
JOB_OPTIONS = frozenset(inspect.signature(Job.__init__).parameters) - {"self", "app", "fn", "name"}


class Registry:
    """Jobs, middleware, hooks, key names and limits of one app."""

    def __init__(
        self,
        *,
        namespace: str = "asyncjobs",
        max_payload_bytes: int = 1 << 20,
        dead_max_jobs: int = 10_000,
        dead_timeout: float | dt.timedelta = dt.timedelta(days=180),
        default_job_options: Mapping[str, Any] | None = None,
        packer: Packer | None = None,
        metrics: bool = False,
    ) -> None:
        self.keys = Keys(namespace)
        # Encryption keys and the compression threshold (#15): what defer packs
        # arguments with and the executor opens them with.
        self.packer = packer if packer is not None else Packer(None, None)
        if not isinstance(metrics, bool):
            raise ConfigError(f"metrics must be True or False, got {metrics!r}")
        # Per-job metrics (count, failures, execution time, dispatch latency), written
        # by the acknowledgement scripts (_metrics.py); off: no work at all.
        self.metrics = metrics
        # Sidekiq's default_job_options: options every job registered afterwards starts
        # from; its own @app.job options override them.
        self.default_job_options: dict[str, Any] = dict(default_job_options or {})
        self._check_defaults()
        self.max_payload_bytes = max_payload_bytes
        self.dead_max_jobs = dead_max_jobs
        self.dead_timeout = (
            dead_timeout.total_seconds()
            if isinstance(dead_timeout, dt.timedelta)
            else float(dead_timeout)
        )
        self.jobs: dict[str, Job[Any, Any]] = {}
        # Periodic entries by name (app.periodic); none: no loop, no Redis command.
        self.periodic_entries: dict[str, PeriodicEntry] = {}
        self.client_middleware: Chain[ClientMiddleware] = Chain()
        self.server_middleware: Chain[ServerMiddleware] = Chain()
        # Each capsule's own server middleware, run inside the app's.
        self.capsule_server_middleware: dict[str, Chain[ServerMiddleware]] = {}
        self.on_startup: list[Hook] = []
        self.on_shutdown: list[Hook] = []
        # Worker lifecycle hooks, as Sidekiq's events: quiet, shutdown and exit hooks
        # run in reverse order of registration, the others in order. A startup hook
        # that raises aborts the start; any other is logged and the worker goes on.
        self.on_quiet: list[Hook] = []  # on quiet (SIGTSTP, `asyncjobs quiet`), or at stop
        self.on_heartbeat: list[Hook] = []  # once, after the first heartbeat
        self.on_beat: list[Hook] = []  # after every heartbeat
        self.on_exit: list[Hook] = []  # last, after the shutdown hooks
        self.death_handlers: list[DeathHandler] = []
        # Called with the job and the CancelledError when app.cancel ended a run (#14).
        self.cancel_handlers: list[DeathHandler] = []
        # Sidekiq's backtrace_cleaner: edits a failed job's traceback lines (a list of
        # str, outermost first) before the job's ``backtrace`` option cuts them.
        self.backtrace_cleaner: Callable[[list[str]], list[str]] | None = None

    def _check_defaults(self) -> None:
        unknown = sorted(set(self.default_job_options) - JOB_OPTIONS)
        if unknown:
            raise ConfigError(
                f"default_job_options: unknown option(s) {', '.join(map(repr, unknown))}; "
                f"use {', '.join(sorted(JOB_OPTIONS))}"
            )

    def job_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options a job registers with: the app's ``default_job_options``,
        overridden by the job's own."""
        if not self.default_job_options:
            return dict(options)
        self._check_defaults()
        return {**self.default_job_options, **options}

    def capsule_middleware(self, capsule: str) -> Chain[ServerMiddleware]:
        """The server middleware of one capsule, run inside the app's chain for the
        jobs of that capsule only (Sidekiq's per-capsule middleware)."""
        chain = self.capsule_server_middleware.get(capsule)
        if chain is None:
            chain = self.capsule_server_middleware[capsule] = Chain()
        return chain
