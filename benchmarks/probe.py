"""Job-side measurement probe, shared by every system's job module.

Every benchmarked system runs the same two job bodies:

* ``hit()``: the no-op job of the drain. It appends ``time.time()`` to a process-local
  list (an atomic operation under the GIL, so safe from worker threads too) and nothing
  else. A daemon thread flushes the count, the first and the last timestamp of this
  process to the *control* Redis every couple of milliseconds.
* ``stamp(ts)``: the latency job. It takes ``time.time()`` first thing and reports
  ``now - ts`` (``ts`` is the enqueue time, or the due time of a scheduled job).

The bookkeeping goes to a second, private ``redis-server`` (``BENCH_CTRL_URL``), never
to the server under test, so ``INFO commandstats`` of the server under test only holds
what the system itself did, and no system pays a per-job round trip for being measured.

``BENCH_PROBE_MODE=direct`` makes both calls write to the control Redis synchronously,
for systems that run each job in a short-lived forked child (rq), where a background
thread would die with the child before it flushed.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any

COUNT_KEY = "bench:count"
FIRST_KEY = "bench:first"
LAST_KEY = "bench:last"
STAMPS_KEY = "bench:stamps"
PER_PROCESS_KEY = "bench:per-process"
SERIES_PREFIX = "bench:series:"  # + pid: "time,jobs done" at each flush
FLAKY_TRIES_KEY = "bench:flaky:tries"  # hash: job number -> runs so far
FLAKY_FAILED_KEY = "bench:flaky:failed"  # hash: job number -> time of its last failure
#: the backoff every system is configured with for the retry storm's failing jobs
FLAKY_BACKOFF = 1.0
FLUSH_INTERVAL = 0.002

_DIRECT = os.environ.get("BENCH_PROBE_MODE") == "direct"

_hits: list[float] = []
#: jobs of the I/O curve sleeping right now in this process (``io_begin``/``io_end``)
_inflight = [0]
_inflight_lock = threading.Lock()
_stamps: queue.SimpleQueue[float] = queue.SimpleQueue()
_lock = threading.Lock()
_running = False  # a flusher thread runs in this process
_direct_client: Any = None


def _ctrl_client() -> Any:
    import redis  # imported lazily: job modules import this module at worker start

    return redis.Redis.from_url(os.environ["BENCH_CTRL_URL"])


def _client_for_direct() -> Any:
    global _direct_client
    if _direct_client is None:
        _direct_client = _ctrl_client()
    return _direct_client


def _after_fork_in_child() -> None:
    """A forked child has no flusher thread and none of the parent's records."""
    global _running, _direct_client, _lock, _stamps
    _running = False
    _direct_client = None
    _lock = threading.Lock()
    _stamps = queue.SimpleQueue()
    _hits.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _flusher(pid: str) -> None:
    client = _ctrl_client()
    sent = 0
    first_sent = False
    while True:
        try:
            value = _stamps.get(timeout=FLUSH_INTERVAL)
        except queue.Empty:
            value = None
        pipe = client.pipeline(transaction=False)
        pending = False
        if value is not None:
            values = [repr(value)]
            while True:  # drain what else arrived
                try:
                    values.append(repr(_stamps.get_nowait()))
                except queue.Empty:
                    break
            # one RPUSH of many values: a command per stamp would cost the worker's
            # process more GIL time than a fast runner spends on the job itself
            for i in range(0, len(values), 10_000):
                pipe.rpush(STAMPS_KEY, *values[i : i + 10_000])
            pending = True
        n = len(_hits)
        if n != sent:
            if not first_sent:
                pipe.hset(FIRST_KEY, pid, repr(_hits[0]))
                first_sent = True
            pipe.hset(LAST_KEY, pid, repr(_hits[n - 1]))
            pipe.rpush(SERIES_PREFIX + pid, f"{_hits[n - 1]!r},{n},{_inflight[0]}")
            pipe.hincrby(PER_PROCESS_KEY, pid, n - sent)
            pipe.incrby(COUNT_KEY, n - sent)
            sent = n
            pending = True
        if pending:
            try:
                pipe.execute()
            except Exception:  # the run is being torn down; nothing to report to
                return


def _ensure_flusher() -> None:
    global _running
    with _lock:
        if _running:
            return
        _running = True
        threading.Thread(
            target=_flusher, args=(str(os.getpid()),), name="bench-probe", daemon=True
        ).start()


def hit() -> None:
    """The body of the drain's no-op job."""
    now = time.time()
    if _DIRECT:
        key = str(os.getpid())
        pipe = _client_for_direct().pipeline(transaction=False)
        pipe.hsetnx(FIRST_KEY, key, repr(now))
        pipe.hset(LAST_KEY, key, repr(now))
        pipe.hincrby(PER_PROCESS_KEY, key, 1)
        pipe.incr(COUNT_KEY)
        pipe.execute()
        return
    if not _running:
        _ensure_flusher()
    _hits.append(now)


def stamp(ts: float) -> None:
    """The body of the latency job: report how long after ``ts`` it started."""
    delta = time.time() - ts
    if _DIRECT:
        _client_for_direct().rpush(STAMPS_KEY, repr(delta))
        return
    if not _running:
        _ensure_flusher()
    _stamps.put(delta)


def io_begin() -> None:
    """An I/O-curve job starts its wait: one more slot busy (sampled at each flush)."""
    with _inflight_lock:
        _inflight[0] += 1


def io_end() -> None:
    """... and ends it; then the job calls ``hit()``."""
    with _inflight_lock:
        _inflight[0] -= 1


class FlakyError(Exception):
    """The planned failure of a retry-storm job."""


def flaky(i: int) -> None:
    """The body of the retry storm's job ``i``: one in ten (``i % 10 == 0``) fails on its
    first two runs. Each retry reports, like ``stamp``, how late it started: now minus
    (its previous failure + :data:`FLAKY_BACKOFF`). Every job ends with ``hit()``, so
    the drain's count reaches the number of jobs once the last retry succeeded.

    The failing tenth keep their state in the control Redis (a shared hash: the retry
    may run in another process of the worker), three synchronous round trips per run,
    the same for every system, none on the server under test.
    """
    if i % 10:
        hit()
        return
    now = time.time()
    client = _client_for_direct()
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(FLAKY_TRIES_KEY, str(i), 1)
    pipe.hget(FLAKY_FAILED_KEY, str(i))
    tries, failed_at = pipe.execute()
    if failed_at is not None:
        client.rpush(STAMPS_KEY, repr(now - float(failed_at) - FLAKY_BACKOFF))
    if tries <= 2:
        client.hset(FLAKY_FAILED_KEY, str(i), repr(time.time()))
        raise FlakyError(f"planned failure {tries} of job {i}")
    hit()


def start() -> None:
    """Start the flusher ahead of the first job (optional; ``hit`` starts it too)."""
    if not _DIRECT:
        _ensure_flusher()
