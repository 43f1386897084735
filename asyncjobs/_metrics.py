"""Per-minute job metrics (``App(metrics=True)``): what a worker counts, how it is
written, and how it is read back (pure).

A worker collects the times of the jobs it finished since its last acknowledgement in
a :class:`Recorder`, grouped by job and queue; the acker aggregates them per batch
(:meth:`Recorder.increments`: buckets, sums) and sends the increments with the
acknowledgement script it calls anyway, which makes one ``HINCRBY`` per field: metrics
add no round trip. Two hashes receive them:

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
from bisect import bisect_right
from collections.abc import Iterable

__all__ = [
    "BOUNDS_MS",
    "BUCKETS",
    "DEAD",
    "DISCARD",
    "MINUTE_TTL",
    "OK",
    "OUTCOMES",
    "RETRY",
    "Recorder",
    "minute_stamp",
    "parse_total",
    "quantile",
    "split_field",
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


def minute_stamp(t: float) -> str:
    """``YYMMDDHHMM`` of a Unix time, in UTC: the suffix of its minute hash."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%y%m%d%H%M")


class _Group:
    """The jobs of one name and queue in a batch: their times (seconds) and their
    failures by outcome."""

    __slots__ = ("failed", "job", "lats", "queue", "runs")

    def __init__(self, job: str, queue: str) -> None:
        self.job = job
        self.queue = queue
        self.runs: list[float] = []
        self.lats: list[float] = []
        self.failed = [0, 0, 0, 0]  # by outcome code: -, retried, dead, discarded


class Recorder:
    """The metrics of the jobs a worker finished since the last acknowledgement.

    Kept as cheap as Python allows on the job's path: two appends to lists (and a
    dict lookup when the job's name or queue differs from the last job's). The rest
    (buckets, sums) is done once per batch by :meth:`increments`."""

    __slots__ = ("_last", "groups")

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], _Group] = {}
        self._last: _Group | None = None

    def __bool__(self) -> bool:
        return bool(self.groups)

    def record(self, job: str, queue: str, run: float, latency: float, outcome: int) -> None:
        """One job ended: ``run`` seconds of execution, ``latency`` seconds from its entry
        into its queue to its start, ``outcome`` OK, RETRY, DEAD or DISCARD."""
        g = self._last
        if g is None or g.job != job or g.queue != queue:
            g = self.groups.get((job, queue))
            if g is None:
                g = self.groups[job, queue] = _Group(job, queue)
            self._last = g
        g.runs.append(run)
        g.lats.append(latency)
        if outcome:
            g.failed[outcome] += 1

    def take(self) -> Recorder:
        """The jobs so far, leaving this recorder empty."""
        taken = Recorder()
        taken.groups, self.groups = self.groups, {}
        self._last = None
        return taken

    def increments(self) -> tuple[dict[str, int], dict[str, int]]:
        """The ``HINCRBY`` increments of the minute hash and of the totals hash. The
        buckets are counted and the times summed here, once per acknowledgement, on the
        worker, rather than in Redis, which every process shares (measured: bucketing
        in the script cost Redis 1.3 us of CPU per job)."""
        minute: dict[str, int] = {}
        total: dict[str, int] = {}
        for g in self.groups.values():
            job, queue, n = g.job, g.queue, len(g.runs)
            failed = sum(g.failed)
            _add(minute, f"{job}|n", n)
            _add(minute, f"{job}|f", failed)
            qj = f"{queue}:{job}|"
            _add(total, qj + "n", n)
            _add(total, qj + "f", failed)
            for code, name in OUTCOMES.items():
                _add(total, qj + name, g.failed[code])
            counts, us = _histogram(g.runs)
            for i, c in counts:
                _add(minute, f"{job}|e{i}", c)
                _add(total, f":{job}|e{i}", c)
            counts, lus = _histogram(g.lats)
            for i, c in counts:
                _add(minute, f"{job}|l{i}", c)
                _add(total, f"{queue}:|l{i}", c)
            _add(minute, f"{job}|us", us)
            _add(minute, f"{job}|lus", lus)
            _add(total, f":{job}|us", us)
            _add(total, f"{queue}:|lus", lus)
        return minute, total


def _histogram(values: list[float]) -> tuple[list[tuple[int, int]], int]:
    """The non-empty buckets of ``values`` (seconds) as (index, count), and their sum in
    microseconds; a negative value (the clocks of two hosts disagree) counts as 0.
    Sorted once, then one bisection per bucket up to the largest value: C speed,
    where a bisection per value cost twice as much."""
    ordered = sorted(values)
    n = len(ordered)
    first = bisect_right(ordered, 0.0) if ordered and ordered[0] < 0 else 0
    us = int(sum(ordered[first:] if first else ordered) * 1e6)
    counts: list[tuple[int, int]] = []
    seen = 0
    for i, bound in enumerate(_BOUNDS_S):
        upto = bisect_right(ordered, bound, seen)
        if upto > seen:
            counts.append((i, upto - seen))
            seen = upto
        if seen == n:
            return counts, us
    counts.append((len(_BOUNDS_S), n - seen))
    return counts, us


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
