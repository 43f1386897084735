"""Every Redis key name of a namespace (pure).

Only this module builds key strings. All keys share the hash tag ``{namespace}`` so that
every multi-key script touches one hash slot, on a single server and on Redis Cluster.
"""

from __future__ import annotations

import datetime as _dt

__all__ = ["Keys"]


class Keys:
    """Key names for one namespace."""

    __slots__ = (
        "dead",
        "metrics_total",
        "namespace",
        "paused",
        "prefix",
        "processes",
        "queues",
        "retry",
        "schedule",
        "stat_expired",
        "stat_failed",
        "stat_processed",
        "wake_scheduler",
    )

    def __init__(self, namespace: str = "asyncjobs") -> None:
        if not namespace or any(c in namespace for c in "{}: \t\n"):
            from ._errors import ConfigError

            raise ConfigError(
                f"invalid namespace {namespace!r}: use letters, digits, '-' or '_' only"
            )
        self.namespace = namespace
        self.prefix = f"{{{namespace}}}"
        self.queues = f"{self.prefix}:queues"
        self.schedule = f"{self.prefix}:schedule"
        self.retry = f"{self.prefix}:retry"
        self.dead = f"{self.prefix}:dead"
        self.processes = f"{self.prefix}:processes"
        self.stat_processed = f"{self.prefix}:stat:processed"
        self.stat_failed = f"{self.prefix}:stat:failed"
        self.wake_scheduler = f"{self.prefix}:wake-scheduler"
        self.paused = f"{self.prefix}:paused"  # the names of paused queues
        self.stat_expired = f"{self.prefix}:stat:expired"  # jobs dropped by expires_in
        # Per-job metrics since the beginning (App(metrics=True), _metrics.py).
        self.metrics_total = f"{self.prefix}:m:total"

    def metrics_minute(self, stamp: str) -> str:
        """The per-job metrics of one UTC minute, ``stamp`` as ``YYMMDDHHMM``."""
        return f"{self.prefix}:m:{stamp}"

    def metrics_last(self, process_id: str) -> str:
        """The token of the last metrics a process wrote (a repeated call counts once)."""
        return f"{self.prefix}:m:last:{process_id}"

    def queue(self, name: str) -> str:
        """The list of payloads waiting in queue ``name``."""
        return f"{self.prefix}:queue:{name}"

    def wake(self, name: str) -> str:
        """The list of wake-up hints for fetchers idle on queue ``name``."""
        return f"{self.prefix}:wake:{name}"

    def inflight(self, process_id: str) -> str:
        """The hash jid → payload of jobs held by a process."""
        return f"{self.prefix}:inflight:{process_id}"

    def landing(self, process_id: str) -> str:
        """The list where an idle fetcher's ``BLMOVE`` puts a job, until it is landed in
        the in-flight hash (one round trip pickup; see _worker/fetcher.py)."""
        return f"{self.prefix}:landing:{process_id}"

    def process(self, process_id: str) -> str:
        """The heartbeat hash of a process."""
        return f"{self.prefix}:process:{process_id}"

    def control(self, process_id: str) -> str:
        """The list of remote commands (quiet, stop) for a process."""
        return f"{self.prefix}:control:{process_id}"

    def unique(self, lock: str) -> str:
        """A unique job's lock (``Lock.key``: the job's name and a digest)."""
        return f"{self.prefix}:unique:{lock}"

    def periodic(self) -> str:
        """The hash of periodic entries: name -> definition (JSON), as last reconciled."""
        return f"{self.prefix}:periodic"

    def periodic_state(self, name: str) -> str:
        """The hash of a periodic entry's state: last tick, last jid, paused."""
        return f"{self.prefix}:periodic:{name}"

    def periodic_history(self, name: str) -> str:
        """The list of a periodic entry's recent runs, newest first."""
        return f"{self.prefix}:periodic:{name}:history"

    def periodic_claim(self, name: str, tick: int) -> str:
        """The claim of one tick of a periodic entry (SET NX, with a TTL)."""
        return f"{self.prefix}:periodic:{name}:tick:{tick}"

    def status(self, jid: str) -> str:
        """A tracked job's state before it ends (JSON, with a TTL; see _status.py)."""
        return f"{self.prefix}:status:{jid}"

    def result(self, jid: str) -> str:
        """A tracked job's outcome, and its result (JSON, with a TTL)."""
        return f"{self.prefix}:result:{jid}"

    def result_ready(self, jid: str) -> str:
        """The list ``handle.result()`` blocks on (one element once the outcome is in)."""
        return f"{self.prefix}:result:{jid}:ready"

    def progress(self, jid: str) -> str:
        """A running tracked job's last progress report (JSON, with a TTL)."""
        return f"{self.prefix}:progress:{jid}"

    def cancel(self, process_id: str) -> str:
        """The list of jids to cancel that a process's canceller blocks on."""
        return f"{self.prefix}:cancel:{process_id}"

    def stat_processed_day(self, day: _dt.date) -> str:
        return f"{self.stat_processed}:{day.isoformat()}"

    def stat_failed_day(self, day: _dt.date) -> str:
        return f"{self.stat_failed}:{day.isoformat()}"

    def limit(self, name: str, key: str | None = None) -> str:
        """A rate limiter's state (``key``: its per-key slot, e.g. an account id)."""
        return f"{self.prefix}:limit:{name}" if key is None else f"{self.prefix}:limit:{name}:{key}"
