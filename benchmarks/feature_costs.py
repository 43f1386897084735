"""What each feature costs per job when it is on: Redis commands, round trips and
instructions, for ``defer`` and for fetch + run + acknowledge, next to a plain job.

``python -m benchmarks.feature_costs [--jobs N] [--features plain,metrics,...]``

One Python process under ``valgrind --tool=callgrind --instr-atstart=no`` (see
``benchmarks/instructions.py`` for the method) runs every feature in turn against one
private redis-server: for each, an app and a one-argument no-op job with that feature
on; N defers counted alone; then a worker drains N queued jobs and, after it stopped,
2N, and the run figures are the difference ÷ N (the worker's start and stop cancel out).
Redis commands come from ``INFO commandstats`` (commands run inside scripts included),
round trips from ``total_writes_processed`` (one reply batch per request batch), both
taken around the same phases. Instructions are the worker's process only; the Redis
side is the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks import _uvloop
from benchmarks.instructions import Failure, run_under_callgrind

N = 1000
WARMUP = 200

#: feature -> what it is, as the table shows it
FEATURES: dict[str, str] = {
    "plain": "a plain job (the reference)",
    "metrics": "App(metrics=True)",
    "unique": "@app.job(unique=True)",
    "expires": "@app.job(expires_in=3600)",
    "limiter": "limits=[a window limiter]",
    "status": "@app.job(track_status=True)",
    "results": "@app.job(keep_result=60)",
    "batch": "deferred in app.batch()",
    "encrypt": "@app.job(encrypt=True)",
    "plain-10k": "a plain job, 10 KB argument",
    "compress": "App(compress_over=1024), 10 KB argument",
}


# ------------------------------------------------------------------- inside valgrind


async def _stats(client: Any) -> tuple[int, int]:
    cmds = await client.info("commandstats")
    stats = await client.info("stats")
    calls = sum(int(v["calls"]) for v in cmds.values())
    return calls, int(stats.get("total_writes_processed", 0))


async def _feature(url: str, shim: Any, feature: str, n: int, out: dict[str, Any]) -> None:
    import contextlib

    import redis.asyncio as aioredis

    import asyncjobs

    app_kw: dict[str, Any] = {"namespace": f"fc-{feature}"}
    job_kw: dict[str, Any] = {"retry": 0, "name": "noop"}
    arg = 0
    big = "x" * 10_000
    if feature == "metrics":
        app_kw["metrics"] = True
    elif feature == "encrypt":
        app_kw["encryption_keys"] = {1: os.urandom(32)}
        job_kw["encrypt"] = True
    elif feature == "compress":
        app_kw["compress_over"] = 1024
    elif feature == "unique":
        job_kw["unique"] = True
    elif feature == "expires":
        job_kw["expires_in"] = 3600
    elif feature == "status":
        job_kw["track_status"] = True
    elif feature == "results":
        job_kw["keep_result"] = 60
    app = asyncjobs.App(url, **app_kw)
    if feature == "limiter":
        job_kw["limits"] = [app.limiter("bench", "window", 10**9, per=1)]
    done = 0
    target = 0
    finished = asyncio.Event()

    @app.job(**job_kw)
    async def noop(n: int, data: str = "") -> None:
        nonlocal done
        done += 1
        if done >= target:
            finished.set()

    data = big if feature in ("plain-10k", "compress") else ""
    admin = aioredis.Redis.from_url(url)

    def scope() -> Any:
        return app.batch() if feature == "batch" else contextlib.nullcontext()

    async def fill(count: int) -> None:
        nonlocal arg
        async with scope():
            for _ in range(count):
                arg += 1
                await noop.defer(arg, data)

    async def drain(count: int, measure: str | None) -> None:
        nonlocal done, target
        done, target = 0, count
        finished.clear()
        await fill(count)
        worker = app.worker(queues=["default"], concurrency=100)
        before = await _stats(admin)
        gc.collect()
        if measure:
            shim.cg_zero()
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(finished.wait(), 600)
        worker.stop()
        await task
        if measure:
            shim.cg_dump(f"{feature}:{measure}".encode())
            after = await _stats(admin)
            out[f"{feature}:{measure}"] = (after[0] - before[0], after[1] - before[1])

    await drain(WARMUP, None)
    # As in benchmarks/instructions.py: the heap so far out of the collector's sight,
    # and a collection before each phase, so a full collection does not land in one.
    gc.collect()
    gc.freeze()
    # defer: N calls, counted alone.
    await admin.flushall()
    before = await _stats(admin)
    gc.collect()
    shim.cg_zero()
    async with scope():
        for _ in range(n):
            arg += 1
            await noop.defer(arg, data)
    shim.cg_dump(f"{feature}:defer".encode())
    after = await _stats(admin)
    out[f"{feature}:defer"] = (after[0] - before[0], after[1] - before[1])
    await admin.flushall()
    await drain(n, "run-1")
    await drain(2 * n, "run-2")
    await admin.flushall()
    await admin.aclose()
    await app.aclose()


def inner(url: str, shim_path: str, features: list[str], n: int) -> None:
    import ctypes

    shim = ctypes.CDLL(shim_path)
    shim.cg_dump.argtypes = [ctypes.c_char_p]
    shim.cg_start()
    out: dict[str, Any] = {}

    async def main() -> None:
        for feature in features:
            await _feature(url, shim, feature, n, out)

    _uvloop.run(main())
    print("COUNTS " + json.dumps(out), file=sys.stderr)


# ------------------------------------------------------------------- outside


def measure(features: list[str], n: int) -> dict[str, dict[str, float]]:
    totals, stderr = run_under_callgrind(
        "benchmarks.feature_costs", [",".join(features), str(n)], timeout=3600
    )
    (line,) = [line for line in stderr.splitlines() if line.startswith("COUNTS ")]
    redis_side = json.loads(line.removeprefix("COUNTS "))
    table: dict[str, dict[str, float]] = {}
    for f in features:
        d, r1, r2 = (f"{f}:defer", f"{f}:run-1", f"{f}:run-2")
        table[f] = {
            "defer_instr": totals[d] / n,
            "defer_cmds": redis_side[d][0] / n,
            "defer_rtt": redis_side[d][1] / n,
            "run_instr": (totals[r2] - totals[r1]) / n,
            "run_cmds": (redis_side[r2][0] - redis_side[r1][0]) / n,
            "run_rtt": (redis_side[r2][1] - redis_side[r1][1]) / n,
        }
    return table


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--inner":
        inner(args[1], args[2], args[3].split(","), int(args[4]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.feature_costs")
    parser.add_argument("--jobs", type=int, default=N)
    parser.add_argument("--features", default=",".join(FEATURES))
    parser.add_argument("--json", type=Path, help="write the table as JSON")
    opts = parser.parse_args(args)
    features = [f for f in opts.features.split(",") if f]
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        print(f"feature_costs: unknown feature(s) {unknown}: use {list(FEATURES)}", file=sys.stderr)
        return 2
    try:
        table = measure(features, opts.jobs)
    except Failure as exc:
        print(f"feature_costs: {exc}", file=sys.stderr)
        return 2
    base = table.get("plain")
    print(f"per job, N={opts.jobs} (instructions: the worker's process, callgrind)")
    print(
        f"{'feature':<10} {'defer cmds':>10} {'rtt':>5} {'instr':>9} "
        f"{'run cmds':>9} {'rtt':>6} {'instr':>8} {'vs plain':>9}"
    )
    for f, row in table.items():
        ref = table["plain-10k"] if f == "compress" and "plain-10k" in table else base
        vs = f"{row['run_instr'] / ref['run_instr'] - 1:+.0%}" if ref and f != "plain" else ""
        print(
            f"{f:<10} {row['defer_cmds']:>10.2f} {row['defer_rtt']:>5.2f} "
            f"{row['defer_instr']:>9,.0f} {row['run_cmds']:>9.3f} {row['run_rtt']:>6.3f} "
            f"{row['run_instr']:>8,.0f} {vs:>9}"
        )
    if opts.json:
        opts.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
