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
FLUSH_INTERVAL = 0.002

_DIRECT = os.environ.get("BENCH_PROBE_MODE") == "direct"

_hits: list[float] = []
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
            pipe.rpush(STAMPS_KEY, repr(value))
            while True:  # drain what else arrived
                try:
                    pipe.rpush(STAMPS_KEY, repr(_stamps.get_nowait()))
                except queue.Empty:
                    break
            pending = True
        n = len(_hits)
        if n != sent:
            if not first_sent:
                pipe.hset(FIRST_KEY, pid, repr(_hits[0]))
                first_sent = True
            pipe.hset(LAST_KEY, pid, repr(_hits[n - 1]))
            pipe.rpush(SERIES_PREFIX + pid, f"{_hits[n - 1]!r},{n}")
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


def start() -> None:
    """Start the flusher ahead of the first job (optional; ``hit`` starts it too)."""
    if not _DIRECT:
        _ensure_flusher()
