"""The common interface of every benchmarked system.

An adapter drives one system from the benchmark process (the client side: enqueueing)
and says how to start that system's worker as a subprocess (the server side). The job
side lives in ``benchmarks/jobs_<system>.py``: a no-op job whose body is
``probe.hit()`` and a latency job whose body is ``probe.stamp(ts)``, so completion and
latency are measured the same way for all.

Contract of the client methods (all ``async``; a synchronous client just blocks, the
benchmark process does nothing else meanwhile):

* ``enqueue_seq(n)``: enqueue ``n`` no-op jobs one by one, each call waiting for the
  previous one, through the system's normal API. The runner times the whole call.
* ``enqueue_bulk(n)``: enqueue ``n`` no-op jobs with the system's batch API, or raise
  :class:`NotSupported`.
* ``prefill(n)``: put ``n`` no-op jobs in the queue for the drain (untimed); bulk where
  the system has it, else one by one.
* ``enqueue_stamp(due)``: enqueue one latency job. With ``due=None`` it runs now and its
  argument is ``time.time()`` taken right before the enqueue call; with a due time
  (epoch seconds) it is scheduled for then (or raises :class:`NotSupported`) and its
  argument is the due time the system was actually asked for.
* ``reset()``: called after the runner flushed Redis between scenarios, for systems
  that keep state they need in Redis (a stream's consumer group).

The curves (``benchmarks/curves.py``) drive three more methods, which raise
:class:`NotSupported` unless the system can do what they ask:

* ``put_jobs(job, args, queues)``: enqueue ``job(*a)`` for each ``a`` of ``args``, the
  i-th on ``queues[i % len(queues)]`` (or the job's usual queue when ``queues`` is
  ``None``), bulk where the system has a batch API. Untimed. The jobs are the ones of
  every job module: ``noop()``, ``stamp(ts)``, ``io(ms)`` (sleeps ``ms`` then
  ``probe.hit()``), ``payload(data)`` and ``flaky(i)`` (``probe.flaky``: one in ten
  fails twice, retried after ``probe.FLAKY_BACKOFF``).
* ``schedule_jobs(job, args, dues)``: the same, each job due at its epoch time.
* ``curve_worker(concurrency, queues)``: the worker with that many slots in all
  (``None``: the suite's setting for the system), on those queues (weighted alike where
  the system weighs queues).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


class NotSupported(Exception):
    """The system cannot do what a scenario asks; the message says why."""


@dataclass
class Context:
    """What an adapter knows about the run."""

    redis_url: str
    redis_host: str
    redis_port: int
    ctrl_url: str
    concurrency: int
    repo_root: Path
    python: str = sys.executable
    #: how to start the asyncjobs worker: "auto" (its CLI if present), "cli", "inprocess"
    asyncjobs_launch: str = "auto"


@dataclass
class WorkerSpec:
    """How to start a system's worker: one or more processes (each its own session)."""

    commands: list[list[str]]
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""


class Adapter:
    """Base class; subclasses set the class attributes and override the methods."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    #: distributions whose versions go into the results
    packages: ClassVar[tuple[str, ...]] = ()
    #: modules that must import for the system to run
    modules: ClassVar[tuple[str, ...]] = ()
    #: scenario name -> reason, for what the system cannot do at all
    unsupported: ClassVar[dict[str, str]] = {}

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- availability ---------------------------------------------------------------

    @classmethod
    def missing(cls) -> str | None:
        """A reason the system cannot run here, or ``None``."""
        for mod in cls.modules:
            if mod in sys.modules:  # imported already (celery swaps in a module proxy)
                continue
            try:
                if importlib.util.find_spec(mod) is None:
                    return f"not installed: {mod}"
            except (ImportError, ValueError) as exc:
                return f"not importable: {mod}: {exc}"
        return None

    # -- client side ----------------------------------------------------------------

    async def open(self) -> None:
        """Connect the client (called once per round, before the scenarios)."""

    async def close(self) -> None:
        """Disconnect the client."""

    async def reset(self) -> None:
        """Re-create what the system needs in Redis after a flush."""

    async def enqueue_seq(self, n: int) -> None:
        raise NotSupported("no enqueue API driven here")

    async def enqueue_bulk(self, n: int) -> None:
        raise NotSupported("no bulk enqueue API")

    async def prefill(self, n: int) -> None:
        try:
            await self.enqueue_bulk(n)
        except NotSupported:
            await self.enqueue_seq(n)

    async def enqueue_stamp(self, due: float | None) -> None:
        raise NotSupported("no latency job driven here")

    # -- curves (benchmarks/curves.py) ------------------------------------------------

    #: the most slots ``curve_worker`` gives (None: any number), and why not more
    max_concurrency: ClassVar[tuple[int, str] | None] = None
    #: how the system orders its queues in the queues curve
    queue_order: ClassVar[str] = ""
    #: its worker takes one queue (``curve_worker`` runs one per queue: ``grouped_queues``)
    one_queue_worker: ClassVar[bool] = False

    async def put_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str] | None = None
    ) -> None:
        raise NotSupported("n/a: not driven here")

    async def schedule_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], dues: Sequence[float]
    ) -> None:
        raise NotSupported("n/a: no delayed jobs")

    def curve_worker(
        self, concurrency: int | None, queues: Sequence[str] | None = None
    ) -> WorkerSpec:
        raise NotSupported("n/a: no worker")

    # -- server side ----------------------------------------------------------------

    def worker(self) -> WorkerSpec:
        raise NotSupported("no worker")

    def one_queue_curve_worker(
        self,
        concurrency: int | None,
        queues: Sequence[str] | None,
        *,
        slots_option: str,
        job_module: str,
    ) -> WorkerSpec:
        """:meth:`curve_worker` for a system whose worker takes one queue: its suite
        worker with ``concurrency`` slots (``BENCH_CONCURRENCY``, read by the job
        module; ``slots_option`` is how its description names them), spread over
        ``queues`` by :func:`grouped_queues`."""
        spec = self.worker()
        c = self.ctx.concurrency if concurrency is None else concurrency
        spec.env["BENCH_CONCURRENCY"] = str(c)
        spec.description = spec.description.replace(
            f"{slots_option}={self.ctx.concurrency}", f"{slots_option}={c}"
        )
        return grouped_queues(spec, queues, c, self.ctx.python, job_module)

    def python_module(self, module: str, *args: str) -> list[str]:
        """argv for ``python -m module args...`` with the benchmark's interpreter."""
        return [self.ctx.python, "-m", module, *args]


def per_queue(spec: WorkerSpec, queues: Sequence[str] | None, concurrency: int) -> WorkerSpec:
    """For a system whose worker takes one queue: one process per queue (its name in
    ``BENCH_QUEUE``, read by the job module), the slots split between them."""
    if not queues:
        return spec
    (argv,) = spec.commands
    each = max(1, concurrency // len(queues))
    return WorkerSpec(
        [["env", f"BENCH_QUEUE={q}", f"BENCH_CONCURRENCY={each}", *argv] for q in queues],
        env=spec.env,
        description=f"{len(queues)} × ({spec.description}, one queue each, {each} slots)",
    )


#: the queues curve: up to this many queues a one-queue peer runs one worker process per
#: queue (as it would be deployed; the figures at 1 and 10 queues stay comparable) ...
PER_PROCESS_QUEUES = 10
#: ... and above it, one worker object per queue in this many processes: one per core of
#: the 2-core machine the published figures come from (100 or 1,000 processes would
#: only fight over those two cores)
GROUP_PROCESSES = 2


def one_queue_order(why: str) -> str:
    """The queues curve's note for a system whose worker takes one queue (``why``)."""
    return (
        f"one queue per worker ({why}): up to {PER_PROCESS_QUEUES} "
        f"queues one worker process per queue; above that one worker object per queue, "
        f"all in one event loop per process, in {GROUP_PROCESSES} processes; the slots "
        f"split between the queues (at least 1 each)"
    )


def grouped_queues(
    spec: WorkerSpec,
    queues: Sequence[str] | None,
    concurrency: int,
    python: str,
    job_module: str,
) -> WorkerSpec:
    """For a system whose worker takes one queue: :func:`per_queue` up to
    ``PER_PROCESS_QUEUES`` queues; above it, one worker *object* per queue, run
    concurrently in one event loop, in ``GROUP_PROCESSES`` processes
    (``python -m benchmarks.many_queues JOB_MODULE``, which calls the job module's
    ``serve_queues(queues, slots)``; the process's queues in ``BENCH_QUEUES``), the slots
    split between the queues (at least 1 each)."""
    if not queues or len(queues) <= PER_PROCESS_QUEUES:
        return per_queue(spec, queues, concurrency)
    each = max(1, concurrency // len(queues))
    nproc = min(GROUP_PROCESSES, len(queues))
    groups = [list(queues[i::nproc]) for i in range(nproc)]
    argv = [python, "-m", "benchmarks.many_queues", job_module]
    sizes = " or ".join(f"{k:,}" for k in sorted({len(g) for g in groups}, reverse=True))
    return WorkerSpec(
        [
            ["env", f"BENCH_QUEUES={','.join(g)}", f"BENCH_CONCURRENCY={each}", *argv]
            for g in groups
        ],
        env=spec.env,
        description=(
            f"{len(queues):,} worker objects (one per queue, {each} slot{'s' if each > 1 else ''} "
            f"each) in {nproc} "
            f"processes ({sizes} each): python -m benchmarks.many_queues "
            f"{job_module}"
        ),
    )


def load_module(name: str) -> object:
    """Import ``name`` (used by adapters to import their job module lazily)."""
    return importlib.import_module(name)
