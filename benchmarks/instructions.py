"""Instructions per job on the hot paths, counted by valgrind's callgrind.

Wall-clock figures on a shared 2-core machine move by ±30% from run to run; the number
of instructions the CPU retires for the same work barely moves, whatever else the
machine is doing. This counts them for asyncjobs' own process (redis-server runs
outside valgrind, so it is not counted: its share is the Redis commands per job that
the suite reports).

``python -m benchmarks.instructions``        print instructions per job
``python -m benchmarks.instructions --check benchmarks/instructions.json``
                                              the same, then exit 1 if a figure is more
                                              than ``--tolerance`` (10%) over the
                                              recorded baseline
``python -m benchmarks.instructions --record benchmarks/instructions.json``
                                              record the figures as the baseline

Method:

- The workload runs in one Python process under ``valgrind --tool=callgrind
  --instr-atstart=no``: interpreter start-up and imports are not instrumented at all.
  A tiny C shim (compiled with gcc from valgrind's own ``callgrind.h``, called through
  ctypes) switches instrumentation on after a warm-up and zeroes and dumps the counters
  around each measured phase, so each phase is counted alone.
- **defer**: N ``await noop.defer()`` calls, one after the other (each one a round trip
  to the private redis-server): instructions ÷ N.
- **run** (fetch, run and acknowledge a no-op job): the queue is filled untimed, then a
  worker (``app.worker(queues=["default"], concurrency=100)``) starts, drains it and
  stops. That is done with N and with 2N jobs, and the figure is the difference ÷ N, so
  the worker's start and stop (connecting, loading scripts, registering) cancel out.
- ``PYTHONHASHSEED=0`` so dict and set layouts do not differ between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import _uvloop

N_DEFER = 2000
N_RUN = 2000
WARMUP = 300

_SHIM = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *why) { CALLGRIND_DUMP_STATS_AT(why); }
"""


class Failure(Exception):
    """What is missing to count instructions here (printed as one line, exit 2)."""


def build_shim(directory: Path) -> Path:
    """Compile the client-request shim; its path."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise Failure("no C compiler (gcc) on PATH: it builds the callgrind shim")
    if not Path("/usr/include/valgrind/callgrind.h").exists():
        raise Failure(
            "valgrind's callgrind.h is missing: install valgrind (apt-get install valgrind)"
        )
    source = directory / "cgshim.c"
    source.write_text(_SHIM)
    out = directory / "libcgshim.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", str(out), str(source)], check=True)
    return out


# ------------------------------------------------------------------- inside valgrind


async def _workload(url: str, shim: Any, n_defer: int, n_run: int) -> None:
    import asyncjobs

    app = asyncjobs.App(url)
    done = 0
    target = 0
    finished = asyncio.Event()

    @app.job(retry=0)
    async def noop() -> None:
        nonlocal done
        done += 1
        if done >= target:
            finished.set()

    async def drain(n: int, measure: str | None) -> None:
        nonlocal done, target
        done, target = 0, n
        finished.clear()
        for start in range(0, n, 500):
            await noop.defer_many([()] * min(500, n - start))
        worker = app.worker(queues=["default"], concurrency=100)
        before = await _calls(url)
        gc.collect()
        if measure:
            shim.cg_zero()
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(finished.wait(), 600)
        worker.stop()
        await task
        if measure:
            shim.cg_dump(measure.encode())
            print(f"CALLS {measure} {await _calls(url) - before}", file=sys.stderr)

    # Warm-up, uninstrumented: connections, scripts, code paths taken once.
    for _ in range(WARMUP):
        await noop.defer()
    done, target = 0, WARMUP
    await drain(WARMUP, None)
    # The heap so far (modules, classes, the app) is frozen out of the garbage
    # collector's sight: otherwise whether a full collection, which walks all of it
    # (millions of instructions), falls inside a measured phase or not moves a figure
    # by 20% (seen: two stable values, 38k and 46k, chosen by an unrelated edit).
    gc.collect()
    gc.freeze()

    shim.cg_start()
    gc.collect()
    shim.cg_zero()
    for _ in range(n_defer):
        await noop.defer()
    shim.cg_dump(b"defer")
    # The floor of a defer: redis-py's asyncio client, one LPUSH of a payload per call.
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    payload = b'{"jid":"0123456789abcdef01234567","class":"noop","queue":"default","args":{}}'
    for _ in range(WARMUP):
        await client.lpush("floor", payload)
    shim.cg_zero()
    for _ in range(n_defer):
        await client.lpush("floor", payload)
    shim.cg_dump(b"lpush")
    await client.aclose()
    await _flush(url)  # the deferred jobs are dropped, not run
    await drain(n_run, "run-1")
    await drain(2 * n_run, "run-2")
    await app.aclose()


async def _calls(url: str) -> int:
    """Redis commands run so far (``INFO commandstats``): how the worker behaved."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return sum(int(v["calls"]) for v in stats.values())


async def _flush(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


def inner(url: str, shim_path: str, n_defer: int, n_run: int) -> None:
    import ctypes

    shim = ctypes.CDLL(shim_path)
    shim.cg_dump.argtypes = [ctypes.c_char_p]
    _uvloop.run(_workload(url, shim, n_defer, n_run))


# ------------------------------------------------------------------- outside


def _totals(out_dir: Path) -> dict[str, int]:
    """Phase name → instructions, from the dumps callgrind wrote."""
    found: dict[str, int] = {}
    for path in sorted(out_dir.glob("cg.out.*")):
        text = path.read_text(errors="replace")
        why = re.search(r"^desc: Trigger: Client Request: (.+)$", text, re.M)
        total = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
        if why and total:
            found[why.group(1).strip()] = int(total.group(1))
    return found


def run_under_callgrind(
    module: str, args: list[str], *, timeout: float
) -> tuple[dict[str, int], str]:
    """Run ``python -m MODULE --inner REDIS_URL SHIM ARGS...`` under callgrind (counting
    from the workload's first ``cg_start``), against a private redis-server; return the
    instructions of each dump by the name the workload gave it, and the workload's
    stderr (where it prints what it measured besides)."""
    if shutil.which("valgrind") is None:
        raise Failure("valgrind is not installed: apt-get install valgrind")
    from benchmarks.runner import RedisServer

    with tempfile.TemporaryDirectory(prefix="asyncjobs-callgrind-") as tmp:
        work = Path(tmp)
        shim = build_shim(work)
        server = RedisServer(work, "redis")
        server.start()
        try:
            env = dict(os.environ, PYTHONHASHSEED="0")
            root = Path(__file__).resolve().parent.parent
            env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
            cmd = [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={work}/cg.out.%p",
                sys.executable,
                "-m",
                module,
                "--inner",
                server.url,
                str(shim),
                *args,
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.splitlines()[-15:])
                raise Failure(f"the workload under valgrind exited {proc.returncode}:\n{tail}")
        finally:
            server.stop()
        return _totals(work), proc.stderr


def measure(n_defer: int = N_DEFER, n_run: int = N_RUN) -> dict[str, float]:
    """Instructions per job: ``{"defer": ..., "run": ...}``."""
    totals, stderr = run_under_callgrind(
        "benchmarks.instructions", [str(n_defer), str(n_run)], timeout=1800
    )
    calls = {
        line.split()[1]: int(line.split()[2])
        for line in stderr.splitlines()
        if line.startswith("CALLS ")
    }
    missing = {"lpush", "defer", "run-1", "run-2"} - totals.keys()
    if missing:
        raise Failure(f"callgrind wrote no dump for {sorted(missing)}")
    print(
        f"redis commands per job in the run: {(calls['run-2'] - calls['run-1']) / n_run:.3f}",
        file=sys.stderr,
    )
    return {
        "lpush": totals["lpush"] / n_defer,
        "defer": totals["defer"] / n_defer,
        "run": (totals["run-2"] - totals["run-1"]) / n_run,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--inner":
        inner(args[1], args[2], int(args[3]), int(args[4]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--check", type=Path, help="baseline JSON to compare with")
    parser.add_argument("--record", type=Path, help="write the figures as the baseline")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--jobs", type=int, default=N_RUN, help="N (defer N; run N and 2N)")
    opts = parser.parse_args(args)
    try:
        figures = measure(opts.jobs, opts.jobs)
    except Failure as exc:
        print(f"instructions: {exc}", file=sys.stderr)
        return 2
    print("instructions per job (callgrind; asyncjobs' process only)")
    for name, value in figures.items():
        print(f"  {name:6} {value:12,.0f}")
    if opts.record:
        # lpush is redis-py's, a reference: not ours to guard.
        ours = {k: round(v) for k, v in figures.items() if k != "lpush"}
        opts.record.write_text(json.dumps(ours, indent=2) + "\n")
        print(f"recorded in {opts.record}")
    if opts.check:
        baseline = json.loads(opts.check.read_text())
        worse = []
        for name, value in figures.items():
            base = baseline.get(name)
            if base is None:
                continue
            change = value / base - 1
            print(f"  {name:6} vs baseline {base:,}: {change:+.1%}")
            if change > opts.tolerance:
                worse.append(f"{name} {change:+.1%}")
        if worse:
            print(f"regression over {opts.tolerance:.0%}: {', '.join(worse)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
