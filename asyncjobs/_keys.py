"""Every Redis key name of a namespace (pure).

Only this module builds key strings. All keys share the hash tag ``{namespace}`` so that
every multi-key script touches one hash slot, on a single server and on Redis Cluster.

With shards (``App(shards=N)``), shard 0 is exactly that layout, and shard ``i`` is a
copy of the keys that jobs move through (queues, schedule, retry and dead sets,
in-flight hashes, process records, control and cancel lists, counters, unique locks)
under a hash tag of its own, ``{namespace:k}``, with ``k`` chosen so that the N shards
hash to slots in N different N-ths of the slot space (the ranges that
``redis-cli --cluster create`` gives to N masters). The keys of a job's status, result
and progress, of rate limiters, of periodic entries, the paused set and the expired
counter have one copy: on shard 0 (see :data:`HOME`).
"""

from __future__ import annotations

import datetime as _dt
import zlib

__all__ = ["SLOTS", "Keys", "keyslot", "shard_of", "shard_tags"]

SLOTS = 16384


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def keyslot(key: str) -> int:
    """Redis Cluster's hash slot of ``key`` (CRC16/XMODEM of its hash tag, mod 16384)."""
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc % SLOTS


def shard_of(key: str, shards: int) -> int:
    """The shard of a job, from its unique lock's key or its jid: a hash every client
    agrees on (CRC32), so that every copy of a unique job meets its lock."""
    return zlib.crc32(key.encode()) % shards


def shard_tags(namespace: str, shards: int) -> list[str]:
    """The hash tags of ``shards`` shards: ``namespace`` first (today's keys), then
    ``namespace:k`` for the smallest ``k`` whose slot falls in the next N-th of the slot
    space, so that on a cluster of N masters with evenly split slots each shard has a
    master of its own."""
    part = SLOTS / shards
    first = int(keyslot(f"{{{namespace}}}") // part)
    tags = [namespace]
    k = 0
    for i in range(1, shards):
        want = (first + i) % shards
        while int(keyslot(f"{{{namespace}:{k}}}") // part) != want:
            k += 1
        tags.append(f"{namespace}:{k}")
        k += 1
    return tags


class Keys:
    """Key names for one namespace."""

    __slots__ = (
        "dead",
        "home",
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

    def __init__(self, namespace: str = "asyncjobs", tag: str | None = None) -> None:
        if not namespace or any(c in namespace for c in "{}: \t\n"):
            from ._errors import ConfigError

            raise ConfigError(
                f"invalid namespace {namespace!r}: use letters, digits, '-' or '_' only"
            )
        self.namespace = namespace
        # The keys of shard 0 (``home``), which hold what has one copy per namespace.
        self.home = self if tag is None else Keys(namespace)
        self.prefix = f"{{{tag or namespace}}}"
        self.queues = f"{self.prefix}:queues"
        self.schedule = f"{self.prefix}:schedule"
        self.retry = f"{self.prefix}:retry"
        self.dead = f"{self.prefix}:dead"
        self.processes = f"{self.prefix}:processes"
        self.stat_processed = f"{self.prefix}:stat:processed"
        self.stat_failed = f"{self.prefix}:stat:failed"
        self.wake_scheduler = f"{self.prefix}:wake-scheduler"
        h = self.home.prefix
        self.paused = f"{h}:paused"  # the names of paused queues
        self.stat_expired = f"{h}:stat:expired"  # jobs dropped by expires_in
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

    def clearing(self, token: str) -> str:
        """A queue or sorted set being cleared, renamed out of the way (``clear.lua``)
        while its entries are deleted in chunks and their unique locks released."""
        return f"{self.prefix}:clearing:{token}"

    def periodic(self) -> str:
        """The hash of periodic entries: name -> definition (JSON), as last reconciled."""
        return f"{self.home.prefix}:periodic"

    def periodic_state(self, name: str) -> str:
        """The hash of a periodic entry's state: last tick, last jid, paused."""
        return f"{self.home.prefix}:periodic:{name}"

    def periodic_history(self, name: str) -> str:
        """The list of a periodic entry's recent runs, newest first."""
        return f"{self.home.prefix}:periodic:{name}:history"

    def periodic_removed(self) -> str:
        """Set when entries are removed by hand (``api.remove_periodic``), deleted when a
        worker writes its entries: with the entries hash gone, it tells a schedule
        emptied on purpose from one Redis lost (which a worker writes again). Not under
        ``periodic:``, where an entry's name could meet it."""
        return f"{self.home.prefix}:periodic-removed"

    def periodic_claim(self, name: str, tick: int) -> str:
        """The claim of one tick of a periodic entry (SET NX, with a TTL)."""
        return f"{self.home.prefix}:periodic:{name}:tick:{tick}"

    def status(self, jid: str) -> str:
        """A tracked job's state before it ends (JSON, with a TTL; see _status.py)."""
        return f"{self.home.prefix}:status:{jid}"

    def result(self, jid: str) -> str:
        """A tracked job's outcome, and its result (JSON, with a TTL)."""
        return f"{self.home.prefix}:result:{jid}"

    def result_ready(self, jid: str) -> str:
        """The list ``handle.result()`` blocks on (one element once the outcome is in)."""
        return f"{self.home.prefix}:result:{jid}:ready"

    def progress(self, jid: str) -> str:
        """A running tracked job's last progress report (JSON, with a TTL)."""
        return f"{self.home.prefix}:progress:{jid}"

    def iteration(self, jid: str) -> str:
        """An iterable job's state: cursor, counters, times (a hash, with a TTL; #14)."""
        return f"{self.prefix}:iter:{jid}"

    def cancel(self, process_id: str) -> str:
        """The list of jids to cancel that a process's canceller blocks on."""
        return f"{self.prefix}:cancel:{process_id}"

    def stat_processed_day(self, day: _dt.date) -> str:
        return f"{self.stat_processed}:{day.isoformat()}"

    def stat_failed_day(self, day: _dt.date) -> str:
        return f"{self.stat_failed}:{day.isoformat()}"

    def limit(self, name: str, key: str | None = None) -> str:
        """A rate limiter's state (``key``: its per-key slot, e.g. an account id)."""
        h = self.home.prefix
        return f"{h}:limit:{name}" if key is None else f"{h}:limit:{name}:{key}"

    def outbox(self, jid: str, row: int) -> str:
        """The mark of one outbox row moved into Redis (``SET NX``, with a TTL): a relay
        that moves the row again (killed before its delete committed) skips it."""
        return f"{self.prefix}:outbox:{jid}:{row}"
