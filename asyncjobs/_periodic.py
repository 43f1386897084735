"""Periodic jobs: cron expressions, time zones and the ticks they yield (pure).

A *tick* is one instant (Unix seconds, whole) at which a periodic entry is due. Cron
fields are read by croniter on the wall clock of the entry's time zone; this module maps
wall times to instants, one way through daylight saving time changes (Vixie cron's):

- a wall time skipped by a spring-forward change (02:30 in Paris on the last Sunday of
  March) runs once, shifted forward by the change (at 03:30), unless the entry runs
  every hour (its hour field is ``*``), whose ticks go on in the hour that exists;
- a wall time repeated by a fall-back change runs at its first occurrence only, unless
  the entry runs every hour, which keeps ticking through both.

So a daily 02:30 job runs once on either day, and ``*/5 * * * *`` ticks every five
minutes of real time. Everything here takes the time as an argument: no clock, no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import croniter

from ._errors import ConfigError
from ._job import Job
from ._payload import Payload, new_jid

__all__ = [
    "CATCH_UP",
    "MISSED_POLICIES",
    "Cron",
    "ENTRY_DECODER",
    "EntrySpec",
    "Missed",
    "PeriodicEntry",
    "check_entry",
    "due_ticks",
    "start_cursor",
]

Missed = Literal["skip", "latest"]
MISSED_POLICIES: tuple[str, ...] = ("skip", "latest")

# A running worker still enqueues a tick it wakes up to at most this late (an event loop
# blocked a while, a VM paused, every process restarting at once); older ticks are
# *missed* and follow the entry's policy. Also how long a tick's claim key lives (twice).
CATCH_UP = 60.0

_EPOCH = dt.datetime(1970, 1, 1)
_WEEK = 7 * 86400
# Where to look back for the latest tick at or before a time: widening windows, so a
# dense schedule finds it in the first and a yearly one in a later, in few steps.
_WINDOWS = (1, 60, 3600, 86400, 8 * 86400, 32 * 86400, 367 * 86400, 5 * 366 * 86400)
# A name goes into key names: no ':' (it separates a key's parts), braces (the hash
# tag) or white space.
_NAME = re.compile(r"^[^:{}\s]{1,200}$")


def _naive(seconds: float) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=seconds)


def _seconds(naive: dt.datetime) -> float:
    return (naive - _EPOCH).total_seconds()


class Cron:
    """A cron expression (5 fields, or 6 with seconds first) in a time zone."""

    def __init__(self, expression: str, tz: str = "UTC") -> None:
        fields = expression.split() if isinstance(expression, str) else []
        if len(fields) not in (5, 6) or not croniter.is_valid(expression, second_at_beginning=True):
            raise ConfigError(
                f"invalid cron expression {expression!r}: use 5 fields (minute hour day "
                "month weekday) or 6 with seconds first, as '*/5 * * * *' or '*/10 * * * * *'"
            )
        try:
            self.zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigError(
                f"unknown time zone {tz!r}: use an IANA name such as 'UTC' or 'Europe/Paris'"
            ) from None
        self.expression = " ".join(fields)
        self.tz = tz
        self._iter = croniter(self.expression, _EPOCH, second_at_beginning=True)
        # Runs every hour (hour field '*'): ticks follow real time through DST changes.
        self.every_hour = self._iter.expanded[1] == ["*"]

    def __repr__(self) -> str:
        return f"<Cron {self.expression!r} {self.tz}>"

    def _offset(self, instant: float) -> float:
        off = dt.datetime.fromtimestamp(instant, self.zone).utcoffset()
        return off.total_seconds() if off is not None else 0.0

    def _next_wall(self, wall: float) -> float:
        """The first wall time the fields match strictly after ``wall`` (naive seconds)."""
        self._iter.set_current(_naive(wall), force=True)
        nxt: dt.datetime = self._iter.get_next(dt.datetime)
        return _seconds(nxt)

    def _change(self, lower: float, upper: float, off: float) -> float | None:
        """The first whole second in (lower, upper] whose offset is not ``off``, or None.
        Offsets are sampled a week apart (no zone changes twice within a week), then the
        change is found by bisection."""
        points = [lower + k * _WEEK for k in range(1, int((upper - lower) // _WEEK) + 1)]
        points.append(upper)
        prev = lower
        for p in points:
            if self._offset(p) != off:
                lo, hi = int(prev), int(p)  # offset(lo) == off, offset(hi) != off
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self._offset(mid) == off:
                        lo = mid
                    else:
                        hi = mid
                return float(hi)
            prev = p
        return None

    def _repeat(self, wall: float, off: float) -> bool:
        """Whether ``wall`` at offset ``off`` is the second occurrence of a repeated
        wall time (after a fall-back change)."""
        naive = _naive(wall).replace(tzinfo=self.zone)
        first = naive.utcoffset()
        second = naive.replace(fold=1).utcoffset()
        return (
            first is not None
            and second is not None
            and first > second
            and off == second.total_seconds()
        )

    def next_after(self, after: float) -> float:
        """The first tick strictly after the instant ``after`` (Unix seconds)."""
        lower = float(after)
        off = self._offset(lower)
        wall = lower + off
        shifted: float | None = None  # a skipped wall time, run shifted forward
        for _ in range(10_000):
            n = self._next_wall(wall)
            u = n - off
            change = self._change(lower, u, off) if u - lower > 0 else None
            if change is None:
                if self._repeat(n, off) and not self.every_hour:
                    wall = n  # ran at its first occurrence
                    continue
                return u if shifted is None else min(shifted, u)
            new = self._offset(change)
            if new > off and not self.every_hour and n < change + new and shifted is None:
                shifted = n - off  # in the gap: e.g. 02:30 runs at 03:30
            # Go on in the period after the change, from its first second.
            lower, off = change - 1, new
            wall = lower + off
        raise ConfigError(f"cron {self.expression!r}: no tick found after {after}")

    def latest_at_or_before(self, moment: float) -> float | None:
        """The last tick at or before ``moment``; None if none in five years."""
        for w in _WINDOWS:
            tick = self.next_after(moment - w)
            if tick <= moment:
                for _ in range(100_000):
                    nxt = self.next_after(tick)
                    if nxt > moment:
                        break
                    tick = nxt
                return tick
        return None


class EntrySpec(msgspec.Struct, frozen=True, kw_only=True):
    """A periodic entry as declared in code, stored as JSON in Redis at worker start
    (what ``asyncjobs periodic list`` shows and ``run`` enqueues, without the code)."""

    name: str
    job: str
    cron: str
    tz: str = "UTC"
    queue: str
    args: msgspec.Raw = msgspec.Raw(b"{}")
    missed: str = "skip"
    history: int = 10
    retry: int = 25
    timeout: float | None = None
    dead: bool = True

    def payload(self, now: float, jid: str | None = None) -> Payload:
        """One run of this entry, enqueued at ``now``."""
        return Payload(
            jid=jid or new_jid(),
            job=self.job,
            queue=self.queue,
            args=self.args,
            created_at=now,
            enqueued_at=now,
            retry=self.retry,
            timeout=self.timeout,
            dead=self.dead,
        )


ENTRY_ENCODER = msgspec.json.Encoder()
ENTRY_DECODER = msgspec.json.Decoder(EntrySpec)


class PeriodicEntry:
    """An entry declared in code: its stored definition, its parsed cron, its job."""

    __slots__ = ("cron", "definition", "job", "spec")

    def __init__(
        self,
        job: Job[Any, Any],
        cron: str,
        *,
        tz: str = "UTC",
        args: Mapping[str, Any] | None = None,
        queue: str | None = None,
        name: str | None = None,
        missed: str = "skip",
        history: int = 10,
    ) -> None:
        name = job.name if name is None else name
        check_entry(name, missed, history)
        parsed = Cron(cron, tz)
        if args is not None and not isinstance(args, Mapping):
            raise ConfigError(
                f"periodic {name!r}: args must be a mapping of keyword arguments, "
                f"got {type(args).__name__}"
            )
        if args and job.encrypt:
            # The entry's arguments are stored in Redis as its definition, in plain.
            raise ConfigError(
                f"periodic {name!r}: job {job.name} has encrypt=True, and a periodic "
                "entry's args are stored unencrypted; give it no args (read secrets in "
                "the job) or defer it yourself"
            )
        # Validated now, at import time: a bad argument fails the deploy, not a tick.
        raw = job.encode_args((), dict(args or {}))
        # The queue name is checked as configure() checks it.
        q = job.configure(queue=queue)._opts.queue if queue is not None else job.queue
        self.job = job
        self.cron = parsed
        self.spec = EntrySpec(
            name=name,
            job=job.name,
            cron=parsed.expression,
            tz=tz,
            queue=q,
            args=msgspec.Raw(raw),
            missed=missed,
            history=history,
            retry=job.retry,
            timeout=job.timeout,
            dead=job.dead,
        )
        self.definition = ENTRY_ENCODER.encode(self.spec)

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"<PeriodicEntry {self.name} {self.cron.expression!r} {self.cron.tz}>"


def check_entry(name: str, missed: str, history: int) -> None:
    """Refuse an invalid entry name, missed policy or history length, in one line."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"invalid periodic entry name {name!r}: use 1-200 characters, none of ':', "
            "'{', '}' or white space"
        )
    if missed not in MISSED_POLICIES:
        raise ConfigError(f"missed={missed!r}: use 'skip' (the default) or 'latest'")
    if isinstance(history, bool) or not isinstance(history, int) or not 0 <= history <= 1000:
        raise ConfigError(f"history={history!r}: use a whole number from 0 to 1000")


def start_cursor(cron: Cron, now: float, last: float | None) -> float:
    """The first tick a starting loop considers: after the last enqueued tick if that
    is recent (a tick within ``CATCH_UP`` that no process enqueued is still due), else
    the first after ``now - CATCH_UP``; for a new entry, the first after ``now``."""
    if last is None:
        return cron.next_after(now)
    return cron.next_after(max(last, now - CATCH_UP))


def due_ticks(cron: Cron, cursor: float, now: float) -> tuple[list[float], float | None, float]:
    """What a loop awake at ``now`` does for ticks from ``cursor`` on.

    Returns the ticks to enqueue now (at most ``CATCH_UP`` old), the latest *missed*
    tick (older than that, for the ``latest`` policy) or None, and the next cursor.
    """
    ticks: list[float] = []
    missed: float | None = None
    if cursor > now:
        return ticks, missed, cursor
    if now - cursor > CATCH_UP:
        # Jump over the missed ticks without walking them one by one.
        missed = cron.latest_at_or_before(now - CATCH_UP)
        cursor = cron.next_after(now - CATCH_UP)
    while cursor <= now:
        ticks.append(cursor)
        cursor = cron.next_after(cursor)
    return ticks, missed, cursor
