"""The curves of issue #16: how asyncjobs and its peers behave as one thing grows.

    python -m benchmarks --curves memory,payload,queues,concurrency,latency-load,burst,\
retry-storm,cores [--systems ...] [--curve-scale 1.0]

Each curve runs every chosen system in turn (asyncjobs first) at each of its points, on
the suite's private ``redis-server`` (flushed before every point), with the suite's job
bodies (``benchmarks/probe.py``) and the workers of ``Adapter.curve_worker``. A system
that cannot do a point gets an ``n/a: reason`` row. Every curve prints a table and
writes its JSON and one PNG chart under ``benchmarks/results/``.

Sizes (``--curve-scale`` multiplies them all): the "big" curves (memory, burst, retry
storm, cores) run their full size for asyncjobs (``BIG``; for memory also streaq, which
has a pipelined batch enqueue: ``BIG_MEMORY``) and a tenth of it for the peers, whose
one-by-one enqueue or slower drain would take many minutes on 2 cores; each row says its
size.

* ``memory``: ``used_memory`` of the server before and after putting jobs in, per job:
  1,000,000 waiting no-op jobs, 100,000 waiting jobs with a 1,000-byte argument, and
  100,000 jobs scheduled an hour ahead. No worker runs. For asyncjobs it also reads the
  stored payloads' length and checks the target bytes/job <= 1.2 x payload bytes + a
  fixed overhead per entry (``FIXED_OVERHEAD``).
* ``payload``: drains of jobs whose argument is a string of 100 B, 10 KB and 1 MB
  (10,000, 10,000 and 200 jobs); jobs/s at steady state and MB/s of arguments.
* ``queues``: 20,000 no-op jobs spread evenly over 1, 10, 100 and 1,000 queues, one worker
  on all of them, weighted alike where the system weighs queues; jobs/s and Redis
  commands per job. A peer whose worker takes one queue (arq, saq, streaq, taskiq) runs
  one worker process per queue up to 10 queues, and above that one worker object per
  queue in 2 processes (``adapters.base.grouped_queues``); the notes say how, per point.
* ``concurrency``: jobs that sleep 10-50 ms (30 ms on average) then ``probe.hit()``,
  with 10, 100, 1,000 and 10,000 slots (2,000 / 10,000 / 30,000 / 60,000 jobs); jobs/s
  and *slots busy*: the jobs sleeping at each probe flush (every 2 ms), summed over the
  worker's processes and averaged over the steady window, / slots.
* ``latency-load``: capacity = the system's drain rate of 20,000 no-op jobs in this
  run; then one producer sends latency jobs with Poisson arrivals at 25%, 50% and 90%
  of it, and at 500, 1,000 and 2,000 jobs/s where that is at most 90% of it (the same
  loads for all: the shares differ in rate by up to 100x between systems), without
  waiting for completions, for 2-20 s each (10,000 jobs where 20 s allow);
  p50/p99/p99.9 of (job's first line - ``time.time()`` taken before its enqueue call),
  and the rate it achieved. The
  ``floor`` system (when chosen, as by default) runs too, right after asyncjobs and at
  asyncjobs' rates: a ``BLMPOP`` loop with no framework, the latency that Redis and this
  machine allow (a reference row, not a peer). The curve starts by measuring the
  machine's idle timer jitter: the overshoot of 2,000 ``time.sleep(0.001)`` calls.
* ``burst``: 100,000 jobs scheduled for the same instant, put in before the worker
  starts; once it runs and is warm, the instant comes: lateness p50/p99 and the time
  until the last one started.
* ``retry-storm``: 100,000 jobs of which every tenth fails twice, retried 1 s after each
  failure (``probe.FLAKY_BACKOFF``, each system's own retry option); jobs/s from first
  start to last success, and lateness of the 20,000 retries p50/p99 (start - failure -
  1 s).
* ``cores``: a drain of 100,000 no-op jobs by the system's suite worker; CPU seconds
  per job of the worker's processes and of redis-server, counted from the first job to
  the last (so imports are left out); asyncjobs with 1 and ``--processes 2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import probe
from benchmarks.adapters import FLOORS, SYSTEMS, load_adapter
from benchmarks.adapters.base import Adapter, NotSupported
from benchmarks.runner import (
    Outcome,
    Runner,
    ScenarioError,
    WorkerProcs,
    percentile,
    poisson_sends,
)

CURVES = (
    "memory",
    "payload",
    "queues",
    "concurrency",
    "latency-load",
    "burst",
    "retry-storm",
    "cores",
)
#: systems the big curves run at full size (others: a tenth)
BIG = frozenset({"asyncjobs", "asyncjobs-2p"})
#: ... and the memory curve: those with a batch enqueue API (a pipeline)
BIG_MEMORY = BIG | {"streaq"}
#: the fixed overhead per job stated for the memory target (bytes/job <= 1.2 x payload
#: + this): a list entry for a waiting job, a sorted-set entry (skiplist node and dict
#: entry, Redis's encoding past 128 members) for a scheduled one
FIXED_OVERHEAD = {"waiting": 64, "waiting-1KB": 64, "scheduled": 160}
#: the latency-load curve's loads common to all systems (jobs/s): each system runs those
#: up to 90% of its capacity, so every peer meets asyncjobs at a rate both can take
COMMON_RATES = (500, 1_000, 2_000)
#: metrics charted on a log scale (they span orders of magnitude across systems)
LOG_SCALE = frozenset(
    {
        "rate",
        "mb_per_s",
        "cmds_per_job",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "all_started_s",
        "retry_p99_ms",
        "total_us",
    }
)
#: the queues curve's drain budget: seconds after the first job, then the rate of the jobs
#: done so far is reported (a peer that crawls at 1,000 queues cannot stall the run)
QUEUES_BUDGET = 20.0
#: systems the cores curve runs besides the chosen ones
CORES_EXTRA = ("asyncjobs-2p",)
#: floors the latency-load curve runs when chosen (at asyncjobs' rates), as references
LATENCY_FLOORS = ("floor",)
#: how the table names a floor's row
FLOOR_ROW = "{} (reference)"
#: idle timer jitter: the overshoot of this many ``time.sleep(0.001)``, in a subprocess
JITTER_SLEEPS = 2_000
JITTER_SCRIPT = f"""
import json, time
over = []
for _ in range({JITTER_SLEEPS}):
    t0 = time.perf_counter()
    time.sleep(0.001)
    over.append((time.perf_counter() - t0 - 0.001) * 1000)
print(json.dumps(over))
"""


@dataclass
class Point:
    """One system at one point of one curve."""

    system: str
    point: str
    outcome: Outcome


@dataclass
class Curve:
    name: str
    title: str
    points: list[str]
    #: (metric key, column header, format) shown in the table
    columns: list[tuple[str, str, str]]
    #: the metric the chart draws, and its axis label
    chart: tuple[str, str]
    #: more panels beside it
    more_charts: list[tuple[str, str]] = field(default_factory=list)
    #: the last points are not on the curve's scale: markers without a line to them
    detached: int = 0
    results: list[Point] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: measurements of the machine that go with the curve's JSON
    facts: dict[str, Any] = field(default_factory=dict)


def cpu_seconds(pid: int) -> float:
    """CPU time of a process: its threads' run time from ``/proc/PID/task/*/schedstat``
    (nanoseconds, unlike the 10 ms ticks of ``/proc/PID/stat``), plus the ticks of its
    reaped children (rq's forks)."""
    total = 0.0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    total += int(fh.read().split()[0]) / 1e9
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        fields = data[data.rindex(b")") + 2 :].split()
        total += (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return total


async def timer_jitter() -> dict[str, float]:
    """The machine's idle timer jitter: how much longer than 1 ms each of
    :data:`JITTER_SLEEPS` ``time.sleep(0.001)`` calls took, in a fresh subprocess (ms)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        JITTER_SCRIPT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err.decode(errors="replace")[-400:])
    over = [float(v) for v in json.loads(out)]
    return {
        "sleeps": len(over),
        "p50_ms": percentile(over, 50),
        "p99_ms": percentile(over, 99),
        "p999_ms": percentile(over, 99.9),
        "max_ms": max(over),
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


class Curves:
    def __init__(self, runner: Runner, systems: Sequence[str], scale: float = 1.0) -> None:
        self.runner = runner
        # the floors have no job API to drive (but the latency floor, for its curve);
        # asyncjobs-2p only matters to the cores curve
        self.systems = [s for s in systems if s not in FLOORS and s not in CORES_EXTRA]
        self.latency_floors = [s for s in systems if s in LATENCY_FLOORS]
        self.scale = scale
        self.curves: dict[str, Curve] = {}

    # -- plumbing -----------------------------------------------------------------

    def size(self, system: str, n: int, big: bool = True, full: frozenset[str] = BIG) -> int:
        """Jobs for ``system`` at a curve point of ``n`` jobs."""
        k = n * self.scale
        if big and system not in full:
            k /= 10
        return max(10, int(k))

    @contextlib.asynccontextmanager
    async def adapter(self, system: str) -> AsyncIterator[Adapter]:
        cls = load_adapter(system)
        reason = cls.missing()
        if reason:
            raise NotSupported(f"missing: {reason}")
        self.runner.labels[system] = cls.label
        adapter = cls(self.runner.context())
        await self.runner.flush()
        await adapter.open()
        try:
            yield adapter
        finally:
            with contextlib.suppress(Exception):
                await adapter.close()

    async def fresh(self, adapter: Adapter) -> None:
        await self.runner.flush()
        await adapter.reset()

    def record(self, curve: Curve, system: str, point: str, outcome: Outcome) -> None:
        curve.results.append(Point(system, point, outcome))
        status = outcome.status if outcome.status != "ok" else ""
        self.runner.progress(f"{curve.name} · {system} · {point} {status}".rstrip(), True)

    async def each_system(
        self,
        curve: Curve,
        body: Callable[[Adapter, str], Any],
        systems: Sequence[str] | None = None,
    ) -> None:
        """Run ``body(adapter, system)`` per system; it records its points. A system that
        cannot start gets one row per point with the reason."""
        for system in systems or self.systems:
            self.runner.progress(f"{curve.name} · {system}", False)
            try:
                async with self.adapter(system) as adapter:
                    await body(adapter, system)
            except NotSupported as exc:
                for point in curve.points:
                    self.record(curve, system, point, Outcome("n/a", str(exc)))
            except Exception as exc:  # a broken system must not end the run
                done = {p.point for p in curve.results if p.system == system}
                for point in curve.points:
                    if point not in done:
                        self.record(
                            curve, system, point, Outcome("error", f"{type(exc).__name__}: {exc}")
                        )

    async def guarded(self, coro: Any) -> Outcome:
        try:
            result: Outcome = await coro
            return result
        except NotSupported as exc:
            return Outcome("n/a", str(exc))
        except ScenarioError as exc:
            return Outcome("error", str(exc))
        except Exception as exc:
            return Outcome("error", f"{type(exc).__name__}: {exc}")

    async def drain(
        self,
        adapter: Adapter,
        system: str,
        n: int,
        fill: Callable[[], Any],
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        budget: float = 20.0,
    ) -> Outcome:
        """Flush, ``await fill()`` (puts ``n`` jobs in), then the suite's drain with the
        curve's worker."""
        spec = adapter.curve_worker(concurrency, queues)
        await self.fresh(adapter)
        t0 = time.perf_counter()
        await fill()
        fill_s = time.perf_counter() - t0
        self.runner.queued = n
        outcome = await self.runner.drain(adapter, system, spec=spec, jobs=n, budget=budget)
        outcome.metrics["fill_s"] = fill_s
        outcome.extra["worker"] = spec.description
        return outcome

    async def collect_stamps(self, n: int, timeout: float, stall: float = 15.0) -> list[float]:
        """Wait until ``n`` latency reports arrived (or ``timeout``, or ``stall`` seconds
        without a new one); return them all (seconds)."""
        ctrl = self.runner.ctrl_client
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while True:
            have = int(await ctrl.llen(probe.STAMPS_KEY))
            now = time.monotonic()
            if have != last:
                last, last_change = have, now
            if have >= n or now > deadline or now - last_change > stall:
                break
            await asyncio.sleep(0.05)
        raw = await ctrl.lrange(probe.STAMPS_KEY, 0, -1)
        await ctrl.delete(probe.STAMPS_KEY)
        return [float(v) for v in raw]

    async def worker_ready(self, adapter: Adapter, system: str, spec: Any) -> WorkerProcs:
        worker = self.runner.spawn(adapter, system, "curve", spec=spec)
        try:
            await self.runner.warm_up(adapter, worker)
        except BaseException:
            worker.stop()
            raise
        return worker

    # -- the curves -------------------------------------------------------------------

    async def run(self, names: Sequence[str]) -> None:
        for name in names:
            await getattr(self, "curve_" + name.replace("-", "_"))()

    async def curve_memory(self) -> None:
        n = 1_000_000
        curve = Curve(
            "memory",
            "Redis memory per job (used_memory delta / jobs; no worker)",
            ["waiting", "waiting-1KB", "scheduled"],
            [
                ("bytes_per_job", "bytes/job", ",.0f"),
                ("jobs", "jobs", ",.0f"),
                ("payload_bytes", "payload bytes", ",.0f"),
            ],
            ("bytes_per_job", "bytes per job in Redis"),
        )
        self.curves["memory"] = curve

        async def used() -> int:
            info = await self.runner.sut_admin.info("memory")
            return int(info["used_memory"])

        async def payload_len(system: str) -> float | None:
            if system not in ("asyncjobs", "asyncjobs-2p"):
                return None
            admin = self.runner.sut_admin
            keys = [k async for k in admin.scan_iter(match="*:queue:*", count=1000)]
            if not keys:
                keys = [k async for k in admin.scan_iter(match="*:schedule", count=1000)]
                items = await admin.zrange(keys[0], 0, 99) if keys else []
            else:
                items = await admin.lrange(keys[0], 0, 99)
            return sum(len(v) for v in items) / len(items) if items else None

        async def body(adapter: Adapter, system: str) -> None:
            plans: list[tuple[str, int, Callable[[int], Any]]] = [
                (
                    "waiting",
                    self.size(system, n, full=BIG_MEMORY),
                    lambda k: adapter.put_jobs("noop", [()] * k),
                ),
                (
                    "waiting-1KB",
                    self.size(system, n // 10, full=BIG_MEMORY),
                    lambda k: adapter.put_jobs("payload", [("x" * 1000,)] * k),
                ),
                (
                    "scheduled",
                    self.size(system, n // 10, full=BIG_MEMORY),
                    lambda k: adapter.schedule_jobs(
                        "stamp", [(0.0,)] * k, [time.time() + 3600 + i * 1e-3 for i in range(k)]
                    ),
                ),
            ]
            for point, k, fill in plans:

                async def measure(k: int = k, fill: Callable[[int], Any] = fill) -> Outcome:
                    await self.fresh(adapter)
                    before = await used()
                    t0 = time.perf_counter()
                    await fill(k)
                    secs = time.perf_counter() - t0
                    after = await used()
                    return Outcome(
                        "ok",
                        metrics={
                            "bytes_per_job": (after - before) / k,
                            "jobs": k,
                            "used_before": before,
                            "used_after": after,
                            "fill_rate": k / secs,
                            "payload_bytes": await payload_len(system) or math.nan,
                        },
                    )

                self.record(curve, system, point, await self.guarded(measure()))
            await self.fresh(adapter)

        await self.each_system(curve, body)
        ours = {p.point: p.outcome for p in curve.results if p.system == "asyncjobs"}
        for point, fixed in FIXED_OVERHEAD.items():
            o = ours.get(point)
            if o is None or o.status != "ok" or math.isnan(o.metrics["payload_bytes"]):
                continue
            b, pb = o.metrics["bytes_per_job"], o.metrics["payload_bytes"]
            bound = 1.2 * pb + fixed
            curve.notes.append(
                f"asyncjobs {point}: {b:,.0f} B/job for a {pb:,.0f}-byte payload "
                f"({b / pb:.2f}x, {b - pb:+,.0f} B); target <= 1.2 x payload + {fixed} B "
                f"= {bound:,.0f} B: {'met' if b <= bound else 'NOT met'}"
            )

    async def curve_payload(self) -> None:
        sizes = {"100B": 100, "10KB": 10_000, "1MB": 1_000_000}
        counts = {"100B": 10_000, "10KB": 10_000, "1MB": 200}
        curve = Curve(
            "payload",
            "Drain against argument size",
            list(sizes),
            [
                ("rate", "jobs/s", ",.0f"),
                ("mb_per_s", "MB/s", ",.1f"),
                ("cmds_per_job", "cmds/job", ".2f"),
                ("jobs", "jobs", ",.0f"),
            ],
            ("rate", "jobs/s (steady state)"),
            [("mb_per_s", "MB/s of arguments")],
        )
        self.curves["payload"] = curve

        async def body(adapter: Adapter, system: str) -> None:
            for point, size in sizes.items():
                k = self.size(system, counts[point], big=False)
                data = "x" * size
                outcome = await self.guarded(
                    self.drain(
                        adapter,
                        system,
                        k,
                        functools.partial(adapter.put_jobs, "payload", [(data,)] * k),
                    )
                )
                if outcome.status == "ok":
                    outcome.metrics["mb_per_s"] = outcome.metrics["rate"] * size / 1e6
                self.record(curve, system, point, outcome)

        await self.each_system(curve, body)

    async def curve_queues(self) -> None:
        counts = [1, 10, 100, 1000]
        n = 20_000
        curve = Curve(
            "queues",
            f"Drain of {n:,} no-op jobs spread over N queues",
            [str(c) for c in counts],
            [
                ("rate", "jobs/s", ",.0f"),
                ("cmds_per_job", "cmds/job", ".2f"),
                ("processes", "processes", ",.0f"),
                ("rss_mib", "RSS MiB", ",.0f"),
                ("redis_clients", "Redis clients", ",.0f"),
            ],
            ("rate", "jobs/s (steady state)"),
            [("cmds_per_job", "Redis commands per job")],
        )
        self.curves["queues"] = curve

        async def body(adapter: Adapter, system: str) -> None:
            if adapter.queue_order:
                curve.notes.append(f"{system}: {adapter.queue_order}")
            for count in counts:
                queues = [f"q{i}" for i in range(count)]
                k = self.size(system, n, big=False)
                outcome = await self.guarded(
                    self.drain(
                        adapter,
                        system,
                        k,
                        functools.partial(adapter.put_jobs, "noop", [()] * k, queues),
                        queues=queues,
                        budget=QUEUES_BUDGET,
                    )
                )
                at = f"{system} at {count:,} queue{'s' if count > 1 else ''}"
                if outcome.status == "ok" and outcome.metrics.get("partial"):
                    curve.notes.append(
                        f"{at}: stopped at the drain's time budget "
                        f"({QUEUES_BUDGET:.0f} s after the first job) with "
                        f"{outcome.metrics['jobs']:,.0f} of {k:,} jobs done; the rate is "
                        f"of those"
                    )
                worker = outcome.extra.get("worker")
                if adapter.one_queue_worker and worker:
                    curve.notes.append(f"{at}: {worker}")
                self.record(curve, system, str(count), outcome)

        await self.each_system(curve, body)

    async def curve_concurrency(self) -> None:
        plan = {10: 2_000, 100: 10_000, 1_000: 30_000, 10_000: 60_000}
        curve = Curve(
            "concurrency",
            "Jobs awaiting 10-50 ms of I/O (sleep), against slots",
            [str(c) for c in plan],
            [
                ("rate", "jobs/s", ",.0f"),
                ("busy_pct", "slots busy %", ".1f"),
                ("ideal_rate", "ideal jobs/s", ",.0f"),
            ],
            ("busy_pct", "slots busy while work is queued (%)"),
            [("rate", "jobs/s (steady state)")],
        )
        self.curves["concurrency"] = curve
        ms = [10 + (i * 7919) % 41 for i in range(max(plan.values()))]
        mean_ms = sum(ms) / len(ms)

        async def body(adapter: Adapter, system: str) -> None:
            for slots, jobs in plan.items():
                limit = adapter.max_concurrency
                if limit is not None and slots > limit[0]:
                    self.record(
                        curve,
                        system,
                        str(slots),
                        Outcome("n/a", f"n/a: {limit[1]}; {slots:,} slots not run"),
                    )
                    continue
                k = self.size(system, jobs, big=False)
                args = [(m,) for m in ms[:k]]
                outcome = await self.guarded(
                    self.drain(
                        adapter,
                        system,
                        k,
                        functools.partial(adapter.put_jobs, "io", args),
                        concurrency=slots,
                    )
                )
                if outcome.status == "ok":
                    busy = await self.busy_slots(outcome)
                    rate = outcome.metrics["rate"]
                    if busy is None:  # no flusher (rq's forked children): Little's law
                        busy = rate * mean_ms / 1000
                        outcome.extra["busy_from"] = "little"
                    outcome.metrics["busy_pct"] = 100 * busy / slots
                    outcome.metrics["ideal_rate"] = slots / (mean_ms / 1000)
                self.record(curve, system, str(slots), outcome)

        await self.each_system(curve, body)

    async def busy_slots(self, outcome: Outcome) -> float | None:
        """Mean jobs sleeping, summed over processes, over the steady window."""
        ctrl = self.runner.ctrl_client
        firsts = await ctrl.hgetall(probe.FIRST_KEY)
        if not firsts or len(firsts) > 64:
            return None
        tracks = {}
        for pid in firsts:
            name = _text(pid)
            raw = await ctrl.lrange(probe.SERIES_PREFIX + name, 0, -1)
            pts = [tuple(map(float, _text(item).split(","))) for item in raw]
            if not pts or len(pts[0]) < 3:
                return None
            tracks[pid] = (float(firsts[pid]), pts)
        start = max(t[0] for t in tracks.values())
        end = min(t[1][-1][0] for t in tracks.values())
        if end <= start:
            return None
        total = 0.0
        for _first, pts in tracks.values():
            inside = [p[2] for p in pts if start <= p[0] <= end]
            total += sum(inside) / len(inside) if inside else 0.0
        return total

    async def curve_latency_load(self) -> None:
        loads = (0.25, 0.5, 0.9)
        curve = Curve(
            "latency-load",
            "defer -> first line under open-loop (Poisson) load, % of the capacity"
            " (the drain rate, or what one producer can send if less), and "
            + ", ".join(f"{r:,}/s" for r in COMMON_RATES)
            + " for every system that can take them",
            [*(f"{round(f * 100)}%" for f in loads), *(f"{r:,}/s" for r in COMMON_RATES)],
            [
                ("p50_ms", "p50 ms", ".2f"),
                ("p99_ms", "p99 ms", ".2f"),
                ("p999_ms", "p99.9 ms", ".2f"),
                ("offered", "offered/s", ",.0f"),
                ("achieved", "achieved/s", ",.0f"),
                ("capacity", "drain capacity/s", ",.0f"),
                ("producer_max", "producer max/s", ",.0f"),
            ],
            ("p50_ms", "p50 latency, ms"),
            [("p99_ms", "p99 latency, ms"), ("p999_ms", "p99.9 latency, ms")],
            detached=len(COMMON_RATES),
        )
        self.curves["latency-load"] = curve
        jitter = await self.guarded_jitter()
        if jitter:
            curve.facts["timer_jitter"] = jitter
            curve.notes.append(
                f"idle timer jitter (overshoot of {jitter['sleeps']:,} time.sleep(1 ms) in a"
                f" subprocess, before the loads): p50 {jitter['p50_ms']:.3f} ms, p99"
                f" {jitter['p99_ms']:.3f}, p99.9 {jitter['p999_ms']:.3f}, max"
                f" {jitter['max_ms']:.3f}"
            )
        #: the rates asyncjobs was offered (the floors run at them)
        ours: dict[str, float] = {}

        async def body(adapter: Adapter, system: str) -> None:
            k = self.size(system, 20_000, big=False)
            cap = await self.guarded(
                self.drain(adapter, system, k, lambda: adapter.put_jobs("noop", [()] * k))
            )
            if cap.status != "ok":
                for point in curve.points:
                    self.record(
                        curve, system, point, Outcome(cap.status, f"capacity: {cap.reason}")
                    )
                return
            capacity = cap.metrics["rate"]
            await self.fresh(adapter)
            worker = await self.worker_ready(adapter, system, adapter.curve_worker(None))
            try:
                # what one producer can send at most, flat out (with the worker running):
                # a load it cannot send would measure the producer, not the system
                flat = await self.open_loop(adapter, capacity, duration=2.0)
                producer = flat.metrics["achieved"]
                basis = min(capacity, producer)
                floor = system in LATENCY_FLOORS
                for frac, point in zip(loads, curve.points[: len(loads)], strict=True):
                    rate = ours.get(point, basis * frac) if floor else basis * frac
                    outcome = await self.guarded(self.open_loop(adapter, rate))
                    outcome.metrics.update(capacity=capacity, producer_max=producer, basis=basis)
                    if system == "asyncjobs":
                        ours[point] = rate
                    self.record(curve, system, point, outcome)
                # the same loads for every system that can take them
                common = curve.points[len(loads) :]
                for rate, point in zip(COMMON_RATES, common, strict=True):
                    if rate > 0.9 * basis:
                        reason = f"n/a: {rate:,}/s is over 90% of its capacity ({basis:,.0f}/s)"
                        self.record(curve, system, point, Outcome("n/a", reason))
                        continue
                    outcome = await self.guarded(self.open_loop(adapter, rate))
                    outcome.metrics.update(capacity=capacity, producer_max=producer, basis=basis)
                    self.record(curve, system, point, outcome)
            finally:
                worker.stop()

        systems = list(self.systems)
        # the floor right after asyncjobs (the rates it runs at are known then)
        at = systems.index("asyncjobs") + 1 if "asyncjobs" in systems else 0
        systems[at:at] = self.latency_floors
        await self.each_system(curve, body, systems)
        for floor in self.latency_floors:
            curve.notes.extend(self.floor_notes(curve, floor, bool(ours)))
        curve.notes.extend(self.same_rate_notes(curve, curve.points[len(loads) :]))

    def same_rate_notes(self, curve: Curve, points: list[str]) -> list[str]:
        """At each rate common to all, asyncjobs against the peers that took it: the
        comparison at the same offered load (the shares of capacity above differ by up
        to two orders of magnitude in rate)."""
        found = {(p.system, p.point): p.outcome for p in curve.results}
        notes = []
        for point in points:
            ours = found.get(("asyncjobs", point))
            if ours is None or ours.status != "ok":
                continue
            peers = [
                (s, o)
                for (s, pt), o in found.items()
                if pt == point and s != "asyncjobs" and s not in FLOORS and o.status == "ok"
            ]
            if not peers:
                continue
            cells = []
            for key, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
                best, o = min(peers, key=lambda so: so[1].metrics[key])
                mine = ours.metrics[key]
                verdict = "lowest" if mine < o.metrics[key] else f"above {best}"
                cells.append(f"{name} {mine:.2f} vs {o.metrics[key]:.2f} ms ({best}): {verdict}")
            notes.append(
                f"at {point}, the same for all ({len(peers)} peer{'s' * (len(peers) > 1)} took"
                " it): " + "; ".join(cells)
            )
        return notes

    def floor_notes(self, curve: Curve, floor: str, at_ours: bool) -> list[str]:
        """What the floor is, and asyncjobs' latency against it at each load."""
        notes = [
            f"{FLOOR_ROW.format(floor)}: not a job runner; one BLMPOP ... COUNT 100 loop"
            " running each job inline, the producer's LPUSH on one pipelined connection:"
            " the latency Redis and this machine allow. "
            + (
                "Its loads are asyncjobs' rates (its own capacity shown for scale)."
                if at_ours
                else "Its loads are shares of its own capacity (asyncjobs did not run)."
            )
        ]
        found = {(p.system, p.point): p.outcome for p in curve.results}
        for point in curve.points:
            a, f = found.get(("asyncjobs", point)), found.get((floor, point))
            if a is None or f is None or a.status != "ok" or f.status != "ok":
                continue
            cells = []
            for key, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
                am, fm = a.metrics[key], f.metrics[key]
                cells.append(f"{name} {am:.2f} vs {fm:.2f} ms ({am - fm:+.2f})")
            notes.append(
                f"asyncjobs vs the floor at {point} ({a.metrics['achieved']:,.0f} vs"
                f" {f.metrics['achieved']:,.0f} jobs/s sent): " + ", ".join(cells)
            )
        return notes

    async def guarded_jitter(self) -> dict[str, float] | None:
        """:func:`timer_jitter`, or ``None`` (the curve runs without it) if it fails."""
        try:
            return await timer_jitter()
        except Exception as exc:
            self.runner.progress(f"timer jitter not measured: {type(exc).__name__}: {exc}", False)
            return None

    async def open_loop(
        self, adapter: Adapter, rate: float, duration: float | None = None
    ) -> Outcome:
        """Send latency jobs at Poisson arrivals of ``rate``/s, never waiting for one to
        run; a producer that falls behind sends at once (its achieved rate says so)."""
        # 10,000 jobs where 20 s allow: the p99.9 is then the 10th slowest, not one outlier
        duration = duration or min(20.0, max(2.0, 10_000 / rate))
        meter = self.runner.meter()
        stamp = adapter.enqueue_stamp
        sent, elapsed = await poisson_sends(lambda: stamp(None), rate, duration)
        achieved = sent / elapsed
        samples = [v * 1000 for v in await self.collect_stamps(sent, 30.0, stall=5.0)]
        cpu = meter.stop()
        if not samples:
            raise ScenarioError("no latency job ran")
        return Outcome(
            "ok",
            metrics={
                "p50_ms": percentile(samples, 50),
                "p99_ms": percentile(samples, 99),
                "p999_ms": percentile(samples, 99.9),
                "max_ms": max(samples),
                "offered": rate,
                "achieved": achieved,
                "sent": sent,
                "missing": sent - len(samples),
                "seconds": duration,
            },
            samples=samples,
            extra={"cpu": cpu},
        )

    async def curve_burst(self) -> None:
        n = 100_000
        curve = Curve(
            "burst",
            "Jobs all due at the same instant",
            ["burst"],
            [
                ("jobs", "jobs", ",.0f"),
                ("p50_ms", "lateness p50 ms", ",.0f"),
                ("p99_ms", "lateness p99 ms", ",.0f"),
                ("all_started_s", "all started after s", ".2f"),
                ("per_s", "jobs/s", ",.0f"),
            ],
            ("all_started_s", "seconds until all have started"),
            [("p99_ms", "lateness p99, ms")],
        )
        self.curves["burst"] = curve

        async def body(adapter: Adapter, system: str) -> None:
            k = self.size(system, n)
            self.record(curve, system, "burst", await self.guarded(self.burst(adapter, system, k)))

        await self.each_system(curve, body)

    async def burst(self, adapter: Adapter, system: str, k: int) -> Outcome:
        # how fast can this system schedule? (a trial, then a fresh server)
        await self.fresh(adapter)
        trial = min(1000, k)
        t0 = time.perf_counter()
        await adapter.schedule_jobs("stamp", [(0.0,)] * trial, [time.time() + 3600] * trial)
        per_job = (time.perf_counter() - t0) / trial
        await self.fresh(adapter)
        due = math.ceil(time.time() + 1.5 * per_job * k + 15)  # + worker start and warm-up
        t0 = time.perf_counter()
        await adapter.schedule_jobs("stamp", [(float(due),)] * k, [float(due)] * k)
        fill_s = time.perf_counter() - t0
        if time.time() > due - 3:
            raise ScenarioError(f"scheduling {k:,} jobs took {fill_s:.0f}s, past their due time")
        worker = await self.worker_ready(adapter, system, adapter.curve_worker(None))
        try:
            lead = due - time.time()
            await asyncio.sleep(max(0.0, lead))  # the stall clock starts at the due time
            samples = [v * 1000 for v in await self.collect_stamps(k, 120)]
        finally:
            worker.stop()
        if not samples:
            raise ScenarioError("no scheduled job ran")
        last = max(samples) / 1000
        return Outcome(
            "ok",
            metrics={
                "jobs": k,
                "p50_ms": percentile(samples, 50),
                "p99_ms": percentile(samples, 99),
                "min_ms": min(samples),
                "all_started_s": last,
                "per_s": len(samples) / max(last, 1e-3),
                "missing": k - len(samples),
                "fill_s": fill_s,
                "warm_lead_s": lead,
            },
            extra={"worker": adapter.curve_worker(None).description},
        )

    async def curve_retry_storm(self) -> None:
        n = 100_000
        curve = Curve(
            "retry-storm",
            "Every tenth job fails twice, retried 1 s after each failure",
            ["storm"],
            [
                ("jobs", "jobs", ",.0f"),
                ("rate", "jobs/s", ",.0f"),
                ("done_s", "all done s", ".1f"),
                ("retry_p50_ms", "retry lateness p50 ms", ",.0f"),
                ("retry_p99_ms", "retry lateness p99 ms", ",.0f"),
            ],
            ("rate", "jobs/s, first start to last success"),
            [("retry_p99_ms", "retry lateness p99, ms")],
        )
        self.curves["retry-storm"] = curve

        async def body(adapter: Adapter, system: str) -> None:
            k = self.size(system, n)
            outcome = await self.guarded(
                self.drain(
                    adapter,
                    system,
                    k,
                    lambda: adapter.put_jobs("flaky", [(i,) for i in range(k)]),
                    budget=90.0,
                )
            )
            if outcome.status == "ok":
                retries = [
                    v * 1000 for v in await self.collect_stamps(2 * ((k + 9) // 10), 5.0, stall=2.0)
                ]
                outcome.metrics.update(
                    jobs=k,
                    done_s=outcome.metrics["seconds"],
                    rate=outcome.metrics["first_to_last_rate"],
                    retries=len(retries),
                    retry_p50_ms=percentile(retries, 50),
                    retry_p99_ms=percentile(retries, 99),
                    retry_min_ms=min(retries, default=math.nan),
                )
                outcome.samples = retries
            self.record(curve, system, "storm", outcome)

        await self.each_system(curve, body)

    async def curve_cores(self) -> None:
        n = 100_000
        curve = Curve(
            "cores",
            "CPU per job of a no-op drain: the worker's processes and redis-server",
            ["drain"],
            [
                ("jobs", "jobs", ",.0f"),
                ("rate", "jobs/s", ",.0f"),
                ("worker_us", "worker CPU µs/job", ",.0f"),
                ("redis_us", "redis CPU µs/job", ",.1f"),
                ("total_us", "total CPU µs/job", ",.0f"),
                ("cores_used", "cores busy", ".2f"),
            ],
            ("total_us", "CPU µs per job (worker + redis-server)"),
            [("rate", "jobs/s")],
        )
        self.curves["cores"] = curve
        systems = list(self.systems)
        for extra in CORES_EXTRA:
            if "asyncjobs" in systems and extra not in systems:
                systems.insert(systems.index("asyncjobs") + 1, extra)

        async def body(adapter: Adapter, system: str) -> None:
            k = self.size(system, n)
            outcome = await self.guarded(self.cpu_drain(adapter, system, k))
            self.record(curve, system, "drain", outcome)

        await self.each_system(curve, body, systems)

    async def cpu_drain(self, adapter: Adapter, system: str, k: int) -> Outcome:
        """CPU of the worker's processes and of redis-server from the first job seen to
        the last."""
        runner = self.runner
        await self.fresh(adapter)
        await adapter.put_jobs("noop", [()] * k)
        spec = adapter.curve_worker(None)
        assert runner.sut.proc is not None
        sut_pid = runner.sut.proc.pid

        def worker_cpu() -> float:
            return sum(cpu_seconds(pid) for pid in worker.members())

        meter = runner.meter()
        worker = runner.spawn(adapter, system, "cores", spec=spec)
        ctrl = runner.ctrl_client
        try:
            deadline = time.monotonic() + 60
            while True:
                c0 = int(await ctrl.get(probe.COUNT_KEY) or 0)
                if c0 > 0:
                    break
                if time.monotonic() > deadline or not worker.alive():
                    raise runner.fail(worker, "no job ran within 60s")
                await asyncio.sleep(0.005)
            w0, r0, t0 = worker_cpu(), cpu_seconds(sut_pid), time.monotonic()
            count = await runner.wait_count(worker, k, 120.0)
            w1, r1, t1 = worker_cpu(), cpu_seconds(sut_pid), time.monotonic()
            cpu = meter.stop(worker)
        finally:
            worker.stop()
        jobs = max(count - c0, 1)
        worker_s, redis_s = w1 - w0, r1 - r0
        return Outcome(
            "ok",
            metrics={
                "jobs": k,
                "measured_jobs": jobs,
                "rate": jobs / max(t1 - t0, 1e-6),
                "worker_us": worker_s / jobs * 1e6,
                "redis_us": redis_s / jobs * 1e6,
                "total_us": (worker_s + redis_s) / jobs * 1e6,
                "cores_used": (worker_s + redis_s) / max(t1 - t0, 1e-6),
            },
            extra={"worker": spec.description, "cpu": cpu},
        )

    # -- output -----------------------------------------------------------------------

    def table(self, curve: Curve) -> str:
        """A markdown table: a row per system and point."""
        head = ["system", "point", *[c[1] for c in curve.columns], "other work %"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for p in curve.results:
            o = p.outcome
            if o.status != "ok":
                cells = [o.reason or o.status] + [""] * (len(curve.columns) - 1) + [""]
            else:
                cpu = o.extra.get("cpu") or {}
                noise = cpu.get("foreign_pct")
                cells = [_fmt(o.metrics.get(k), f) for k, _h, f in curve.columns]
                cells.append(_fmt(noise, ".0f") if noise is not None else "-")
            name = FLOOR_ROW.format(p.system) if p.system in FLOORS else p.system
            lines.append("| " + " | ".join([name, p.point, *cells]) + " |")
        return "\n".join(lines)

    def as_json(self, curve: Curve) -> dict[str, Any]:
        return {
            "title": curve.title,
            "points": curve.points,
            "notes": curve.notes,
            **curve.facts,
            "results": [
                {"system": p.system, "point": p.point, **p.outcome.as_json()} for p in curve.results
            ],
        }

    def chart(self, curve: Curve, path: Path, header: str) -> bool:
        """One panel per charted metric: lines over the points, or bars where the curve
        has a single point (or its points are not a scale, as memory's)."""
        try:
            import matplotlib  # type: ignore[import-not-found,unused-ignore]

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            return False
        panels = [curve.chart, *curve.more_charts]
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
        systems = list(dict.fromkeys(p.system for p in curve.results))
        found = {(p.system, p.point): p.outcome for p in curve.results}

        def value(system: str, point: str, key: str) -> float | None:
            o = found.get((system, point))
            if o is None or o.status != "ok" or key not in o.metrics:
                return None
            v = o.metrics[key]
            return None if math.isnan(v) else v

        palette = plt.get_cmap("tab10").colors
        # by position in the suite's order, the floors and asyncjobs-2p skipped: the same
        # colour for a system in every curve's chart
        order = [s for s in SYSTEMS if s not in FLOORS and s not in CORES_EXTRA]
        order += [s for s in systems if s not in order]
        color = {s: palette[order.index(s) % len(palette)] for s in systems}
        color.update({s: "black" for s in systems if s in FLOORS})
        single = len(curve.points) == 1
        bars = single or curve.name == "memory"
        for ax, (key, label) in zip(axes[0], panels, strict=True):
            if single:  # a bar per system that ran, named with its number of jobs
                point = curve.points[0]
                ran = [s for s in systems if value(s, point, key) is not None]
                ax.bar(
                    range(len(ran)),
                    [value(s, point, key) for s in ran],
                    color=[color[s] for s in ran],
                )
                names = []
                for s in ran:
                    jobs = value(s, point, "jobs")
                    names.append(f"{s}\n{jobs:,.0f} jobs" if jobs else s)
                ax.set_xticks(range(len(ran)))
                ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            else:
                width = 0.8 / max(1, len(systems))
                for si, system in enumerate(systems):
                    xs, ys = [], []
                    for pi, point in enumerate(curve.points):
                        v = value(system, point, key)
                        if v is not None:
                            xs.append(pi + si * width if bars else pi)
                            ys.append(v)
                    if not xs:
                        continue
                    if bars:
                        ax.bar(xs, ys, width, label=system, color=color[system])
                    else:
                        on = [i for i, x in enumerate(xs) if x < len(curve.points) - curve.detached]
                        off = [i for i in range(len(xs)) if i not in on]
                        ax.plot(
                            [xs[i] for i in on],
                            [ys[i] for i in on],
                            marker="o",
                            label=FLOOR_ROW.format(system) if system in FLOORS else system,
                            color=color[system],
                            linewidth=2.5 if system == "asyncjobs" else 1,
                            linestyle="--" if system in FLOORS else "-",
                        )
                        ax.plot(
                            [xs[i] for i in off],
                            [ys[i] for i in off],
                            marker="D",
                            linestyle="none",
                            color=color[system],
                        )
                ticks = [i + (0.4 - width / 2 if bars else 0) for i in range(len(curve.points))]
                ax.set_xticks(ticks)
                ax.set_xticklabels(curve.points)
            if key in LOG_SCALE:
                ax.set_yscale("log")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
        if not single:
            axes[0][0].legend(fontsize=8)
        fig.suptitle(f"{curve.title}\n{header}", fontsize=10)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return True


def replot(src: Path, dst: Path, drop: Sequence[str] = ()) -> None:
    """Redraw a curve's chart from its JSON (``drop``: systems to leave out)."""
    data = json.loads(src.read_text())
    name = data["curve"]
    shell = Curves.__new__(Curves)
    shell.curves, shell.systems, shell.latency_floors, shell.scale = {}, [], [], 1.0

    async def nothing(*_args: Any, **_kwargs: Any) -> None:
        return None

    shell.each_system = nothing  # type: ignore[method-assign]
    shell.guarded_jitter = nothing  # type: ignore[method-assign]
    asyncio.run(getattr(shell, "curve_" + name.replace("-", "_"))())  # defines the curve
    curve = shell.curves[name]
    curve.notes = []
    curve.results = [
        Point(r["system"], r["point"], Outcome(r["status"], r["reason"], r["metrics"]))
        for r in data["results"]
        if r["system"] not in drop
    ]
    machine = data["machine"]
    header = (
        f"{name} · {machine['cpu_count']} CPU · Python {machine['python'].split()[0]} · "
        f"redis-server {machine['redis_server']} · {data['started'][:16].replace('T', ' ')} UTC"
    )
    shell.chart(curve, dst, header)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.curves",
        description="Redraw a curve's chart from the JSON of its run.",
    )
    ap.add_argument("json", type=Path)
    ap.add_argument("png", type=Path, nargs="?")
    ap.add_argument("--drop", default="", help="comma-separated systems to leave out")
    ns = ap.parse_args()
    out = ns.png or ns.json.with_suffix(".png")
    replot(ns.json, out, [s for s in ns.drop.split(",") if s])
    print(out)
