"""Per-minute job metrics (``App(metrics=True)``): what a worker counts, how it is
written, and how it is read back (pure).

A worker aggregates the jobs it finished since its last acknowledgement in a
:class:`Recorder`; the acker turns the aggregate into ``HINCRBY`` increments
(:meth:`Recorder.take`) sent with the acknowledgement script it calls anyway, so
metrics add no round trip. Two hashes receive them:

- ``{ns}:m:<YYMMDDHHMM>``, one per UTC minute (TTL :data:`MINUTE_TTL`), per job name:
  ``<job>|n`` runs, ``<job>|f`` failures, ``<job>|us`` execution time (microseconds),
  ``<job>|lus`` dispatch latency, ``<job>|e<i>`` and ``<job>|l<i>`` histogram buckets of
  execution time and dispatch latency;
- ``{ns}:m:total``, cumulative, for Prometheus: ``<queue>:<job>|n`` (runs), ``|f``
  (failed), ``|r`` (retried), ``|d`` (dead), ``|x`` (discarded); ``:<job>|e<i>`` and
  ``:<job>|us`` (execution time by job); ``<queue>:|l<i>`` and ``<queue>:|lus``
  (dispatch latency by queue). A queue name has no colon, so the first colon splits.

Histograms have :data:`BOUNDS_MS` buckets (log-spaced, about x1.6, as Sidekiq 8's) and
one more for longer; percentiles are read from them (:func:`quantile`).
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from collections.abc import Iterable, Mapping

__all__ = [
    "BOUNDS_MS",
    "BUCKETS",
    "MINUTE_TTL",
    "OUTCOMES",
    "Recorder",
    "minute_stamp",
    "parse_total",
    "quantile",
]

# Upper bounds (milliseconds, inclusive) of the histogram buckets; a last bucket holds
# anything longer. 1 ms to 130 s in 26 steps of about x1.6.
BOUNDS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 8, 13, 20, 30, 50, 80, 130, 200, 300, 500, 800,
    1300, 2000, 3000, 5000, 8000, 13000, 20000, 30000, 50000, 80000, 130000,
)  # fmt: skip
BUCKETS = len(BOUNDS_MS) + 1
_BOUNDS_S = tuple(b / 1000 for b in BOUNDS_MS)

# Minute hashes live 72 hours (the longest window read) and one more.
MINUTE_TTL = 73 * 3600

# Outcome codes of Recorder.record, and the totals field each one counts in.
OK, RETRY, DEAD, DISCARD = 0, 1, 2, 3
OUTCOMES = {RETRY: "r", DEAD: "d", DISCARD: "x"}

# Row layout: n, f, retried, dead, discarded, exec us, latency us, then the
# execution-time buckets, then the latency buckets.
_N, _F, _EUS, _LUS, _E = 0, 1, 5, 6, 7
_L = _E + BUCKETS
_ROW = _L + BUCKETS


def minute_stamp(t: float) -> str:
    """``YYMMDDHHMM`` of a Unix time, in UTC: the suffix of its minute hash."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%y%m%d%H%M")


def bucket(seconds: float) -> int:
    """The histogram bucket of a duration in seconds."""
    return bisect_left(_BOUNDS_S, seconds)


class Recorder:
    """The metrics of the jobs a worker finished since the last acknowledgement."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[int]] = {}

    def __bool__(self) -> bool:
        return bool(self.rows)

    def record(self, job: str, queue: str, run: float, latency: float, outcome: int) -> None:
        """One job ended: ``run`` seconds of execution, ``latency`` seconds from its due
        or enqueue time to its start, ``outcome`` OK, RETRY, DEAD or DISCARD."""
        key = (job, queue)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [0] * _ROW
        row[_N] += 1
        if outcome:
            row[_F] += 1
            row[1 + outcome] += 1
        row[_EUS] += int(run * 1e6)
        row[_E + bisect_left(_BOUNDS_S, run)] += 1
        if latency < 0:
            latency = 0.0  # clocks of two hosts disagree: no negative waits
        row[_LUS] += int(latency * 1e6)
        row[_L + bisect_left(_BOUNDS_S, latency)] += 1

    def merge(self, other: Recorder) -> None:
        """Add ``other``'s counts back (a write that failed is tried again)."""
        for key, row in other.rows.items():
            mine = self.rows.get(key)
            if mine is None:
                self.rows[key] = row
            else:
                for i, v in enumerate(row):
                    mine[i] += v

    def take(self) -> Recorder:
        """The counts so far, leaving this recorder empty."""
        taken = Recorder()
        taken.rows, self.rows = self.rows, {}
        return taken

    def increments(self) -> tuple[dict[str, int], dict[str, int]]:
        """The ``HINCRBY`` increments of the minute hash and of the totals hash."""
        minute: dict[str, int] = {}
        total: dict[str, int] = {}
        for (job, queue), row in self.rows.items():
            _add(minute, f"{job}|n", row[_N])
            _add(minute, f"{job}|f", row[_F])
            _add(minute, f"{job}|us", row[_EUS])
            _add(minute, f"{job}|lus", row[_LUS])
            qj = f"{queue}:{job}|"
            _add(total, qj + "n", row[_N])
            _add(total, qj + "f", row[_F])
            for code, name in OUTCOMES.items():
                _add(total, qj + name, row[1 + code])
            _add(total, f":{job}|us", row[_EUS])
            _add(total, f"{queue}:|lus", row[_LUS])
            for i in range(BUCKETS):
                e, lat = row[_E + i], row[_L + i]
                if e:
                    _add(minute, f"{job}|e{i}", e)
                    _add(total, f":{job}|e{i}", e)
                if lat:
                    _add(minute, f"{job}|l{i}", lat)
                    _add(total, f"{queue}:|l{i}", lat)
        return minute, total


def _add(d: dict[str, int], field: str, n: int) -> None:
    if n:
        d[field] = d.get(field, 0) + n


def quantile(buckets: Iterable[int], q: float) -> float | None:
    """The ``q`` quantile (0 to 1), in milliseconds, of a histogram's bucket counts,
    interpolated linearly inside its bucket (as Prometheus's ``histogram_quantile``);
    None without any count. In the last bucket (beyond the bounds) it is the last bound."""
    counts = list(buckets)
    n = sum(counts)
    if n == 0:
        return None
    rank = q * n
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            if i >= len(BOUNDS_MS):
                return BOUNDS_MS[-1]
            lower = BOUNDS_MS[i - 1] if i else 0.0
            return lower + (BOUNDS_MS[i] - lower) * (rank - seen) / c
        seen += c
    return BOUNDS_MS[-1]


def parse_total(field: str) -> tuple[str, str, str] | None:
    """A totals field as ``(queue, job, kind)`` (queue or job empty for the by-job and
    by-queue histograms); None for a field this version does not know."""
    queue, sep, rest = field.partition(":")
    job, bar, kind = rest.rpartition("|")
    if not sep or not bar or not kind:
        return None
    return queue, job, kind


def split_field(field: str) -> tuple[str, str] | None:
    """A minute-hash field as ``(job, kind)``; None if malformed."""
    job, bar, kind = field.rpartition("|")
    if not bar or not job:
        return None
    return job, kind


def histogram(fields: Mapping[str, int], prefix: str) -> list[int]:
    """The bucket counts ``<prefix><i>`` of a hash read back (0 where absent)."""
    return [int(fields.get(f"{prefix}{i}", 0)) for i in range(BUCKETS)]
