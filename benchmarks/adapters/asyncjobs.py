"""asyncjobs itself, the reference of every ratio.

* client: ``await noop.defer()`` per job (arguments validated, one round trip);
  ``await noop.defer_many([()] * n)`` for bulk; a delayed job is
  ``await stamp.configure(at=datetime).defer(due)``.
* worker: ``asyncjobs worker benchmarks.jobs_asyncjobs:app -q default -c 100`` (its CLI;
  one process, uvloop when installed), or with ``--asyncjobs-launch inprocess``
  ``app.worker(queues=["default"], concurrency=100).run()`` in a subprocess.
* ``asyncjobs-2p`` is the same with ``--processes 2`` (DESIGN.md §7), for the
  cores target.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.adapters.base import Adapter, NotSupported, WorkerSpec

#: jobs per defer_many call (one round trip each) when the curves fill the queues
CHUNK = 5_000


class AsyncjobsAdapter(Adapter):
    name = "asyncjobs"
    label = "asyncjobs (1 process)"
    packages = ("asyncjobs", "redis", "hiredis", "msgspec", "uvloop", "anyio")
    modules = ("asyncjobs",)
    processes = 1

    async def open(self) -> None:
        from benchmarks import jobs_asyncjobs

        self.jobs: Any = jobs_asyncjobs
        connect = getattr(self.jobs.app, "connect", None)
        if connect is not None:
            await connect()

    async def close(self) -> None:
        aclose = getattr(self.jobs.app, "aclose", None)
        if aclose is not None:
            await aclose()

    async def enqueue_seq(self, n: int) -> None:
        defer = self.jobs.noop.defer
        for _ in range(n):
            await defer()

    async def enqueue_bulk(self, n: int) -> None:
        await self.jobs.noop.defer_many([()] * n)

    async def enqueue_stamp(self, due: float | None) -> None:
        if due is None:
            await self.jobs.stamp.defer(time.time())
        else:
            at = dt.datetime.fromtimestamp(due, tz=dt.UTC)
            await self.jobs.stamp.configure(at=at).defer(due)

    queue_order = "weighted, all weights 1 (-q NAME,1 per queue)"

    async def put_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], queues: Sequence[str] | None = None
    ) -> None:
        target = getattr(self.jobs, job)
        if not queues:
            for i in range(0, len(args), CHUNK):
                await target.defer_many(args[i : i + CHUNK])
            return
        for qi, queue in enumerate(queues):
            mine = args[qi :: len(queues)]
            deferrer = target.configure(queue=queue)
            for i in range(0, len(mine), CHUNK):
                await deferrer.defer_many(mine[i : i + CHUNK])

    async def schedule_jobs(
        self, job: str, args: Sequence[tuple[Any, ...]], dues: Sequence[float]
    ) -> None:
        target = getattr(self.jobs, job)
        for i in range(0, len(args), CHUNK):
            at = [dt.datetime.fromtimestamp(d, tz=dt.UTC) for d in dues[i : i + CHUNK]]
            await target.defer_many(args[i : i + CHUNK], at=at)

    def curve_worker(
        self, concurrency: int | None, queues: Sequence[str] | None = None
    ) -> WorkerSpec:
        c = self.ctx.concurrency if concurrency is None else concurrency
        argv = ["worker", "benchmarks.jobs_asyncjobs:app", "-c", str(c)]
        for queue in queues or ["default"]:
            argv += ["-q", f"{queue},1"]
        if self.processes != 1:
            argv += ["--processes", str(self.processes)]
        shown = argv[:4] + (
            [f"-q q0,1 … -q q{len(queues) - 1},1"] if queues and len(queues) > 2 else argv[4:]
        )
        return WorkerSpec(
            [self.python_module("asyncjobs", *argv)],
            description="asyncjobs " + " ".join(shown),
        )

    def use_cli(self) -> bool:
        mode = self.ctx.asyncjobs_launch
        if mode == "cli":
            return True
        if mode == "inprocess":
            return False
        return importlib.util.find_spec("asyncjobs.cli") is not None

    def worker(self) -> WorkerSpec:
        c = str(self.ctx.concurrency)
        if self.use_cli():
            argv = ["worker", "benchmarks.jobs_asyncjobs:app", "-q", "default", "-c", c]
            if self.processes != 1:
                if not cli_has_option("--processes"):
                    raise NotSupported("n/a: `asyncjobs worker` has no --processes option yet")
                argv += ["--processes", str(self.processes)]
            return WorkerSpec(
                [self.python_module("asyncjobs", *argv)],
                description="asyncjobs " + " ".join(argv),
            )
        if self.processes != 1:
            raise NotSupported("n/a: --processes needs the asyncjobs CLI")
        return WorkerSpec(
            [self.python_module("benchmarks.jobs_asyncjobs")],
            description=f'in-process app.worker(queues=["default"], concurrency={c}).run()',
        )


@functools.cache
def cli_has_option(option: str) -> bool:
    """Whether ``asyncjobs worker --help`` lists ``option``."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "asyncjobs", "worker", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return option in out.stdout


class AsyncjobsTwoProcessAdapter(AsyncjobsAdapter):
    name = "asyncjobs-2p"
    label = "asyncjobs (--processes 2)"
    processes = 2
    unsupported = {
        "enqueue": "n/a: same client as asyncjobs",
        "bulk": "n/a: same client as asyncjobs",
    }
