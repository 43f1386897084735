"""Where asyncjobs' defer-to-first-line latency goes, under open-loop load.

``python -m benchmarks.latency_split --rate 6000 --seconds 4 --rounds 3``

One worker (``asyncjobs worker ... -q default,1 -c 100``, as the suite's latency-load
curve runs it) on a private redis-server; this process sends jobs at Poisson arrivals
of ``--rate``, each send its own task, as the curve's producer does. Each job carries
``time.time()`` taken just before its ``defer``; in the worker, the capsule stamps the
moment a fetch reply hands it the job (``Capsule._start_batch``, patched in the worker
process only), and the job's first line takes the time again. Per round it prints:

* ``e2e``: the first line - the time before ``defer`` (what the curve measures);
* ``to worker``: the fetch reply - the time before ``defer``: the producer's ``defer``,
  Redis, and the wait for the fetch (or ``BLMOVE``) that takes the job;
* ``in worker``: the first line - the fetch reply: the capsule, the executor and the
  event loop;
* CPU used by the worker, redis-server and this process (the producer), in % of a core.

No probe thread and no control server (the job keeps its figures in memory and writes
them to a file when asked), so nothing but the three processes runs. Not part of the
suite's run: a tool to look into the latency-load curve's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncjobs
from benchmarks import _uvloop
from benchmarks.runner import RedisServer, percentile, poisson_sends

app = asyncjobs.App(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))

#: per job: (first line - before defer, fetch reply - before defer)
_seen: list[tuple[float, float]] = []
#: jid -> when a fetch reply handed the job to the capsule
_arrived: dict[bytes, float] = {}


def _patch_capsule() -> None:
    """Stamp each job as a fetch reply hands it to the capsule (worker process only)."""
    from asyncjobs._worker import capsule

    original = capsule.Capsule._start_batch

    def start_batch(self: Any, jobs: list[tuple[bytes, bytes]]) -> None:
        now = time.time()
        for field, _raw in jobs:
            _arrived[field] = now
        original(self, jobs)

    capsule.Capsule._start_batch = start_batch  # type: ignore[method-assign]


if os.environ.get("LATENCY_SPLIT_WORKER"):
    _patch_capsule()


@app.job(name="latency_split.stamp", retry=0)
async def stamp(ts: float) -> None:
    now = time.time()
    jid = asyncjobs.current_job().jid
    _seen.append((now - ts, _arrived.pop(jid.encode(), now) - ts))


@app.job(name="latency_split.dump", retry=0)
async def dump(path: str) -> None:
    """Write what the worker saw to ``path`` and forget it."""
    _write(Path(path), json.dumps(_seen))
    _seen.clear()


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)  # whole, or not there


def _take(path: Path) -> list[tuple[float, float]] | None:
    """The figures a ``dump`` wrote to ``path`` (removed), or None if not there yet."""
    if not path.exists():
        return None
    seen = [(float(a), float(b)) for a, b in json.loads(path.read_text())]
    path.unlink()
    return seen


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _collect(path: Path, timeout: float = 30.0) -> list[tuple[float, float]]:
    await dump.defer(str(path))
    deadline = time.monotonic() + timeout
    while (seen := _take(path)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not answer")
        await asyncio.sleep(0.05)
    return seen


async def _send() -> None:
    await stamp.defer(time.time())


async def _round(rate: float, seconds: float, worker: int, redis: int, work: Path) -> str:
    cpu0 = (_cpu(worker), _cpu(redis), time.process_time())
    sent, elapsed = await poisson_sends(_send, rate, seconds)
    cpu1 = (_cpu(worker), _cpu(redis), time.process_time())
    busy = [100 * (b - a) / elapsed for a, b in zip(cpu0, cpu1, strict=True)]
    seen = await _collect(work / "seen.json")
    e2e = [a * 1000 for a, _ in seen]
    before = [b * 1000 for _, b in seen]
    inside = [(a - b) * 1000 for a, b in seen]

    def cell(xs: list[float], *qs: float) -> str:
        return " / ".join(f"{percentile(xs, q):.3f}" for q in qs)

    return (
        f"{sent / elapsed:,.0f} jobs/s ({len(seen)} of {sent} seen): "
        f"e2e p50/p99/p99.9 {cell(e2e, 50, 99, 99.9)} ms | "
        f"to worker p50/p99 {cell(before, 50, 99)} | in worker p50/p99 {cell(inside, 50, 99)}"
        f" | CPU % worker {busy[0]:.0f}, redis {busy[1]:.0f}, producer {busy[2]:.0f}"
    )


def _start_worker(url: str) -> subprocess.Popen[bytes]:
    """The worker, as the latency-load curve starts asyncjobs' (its log discarded)."""
    return subprocess.Popen(
        [sys.executable, "-m", "asyncjobs", "worker", "benchmarks.latency_split:app"]
        + ["-q", "default,1", "-c", "100"],
        env=dict(os.environ, BENCH_REDIS_URL=url, LATENCY_SPLIT_WORKER="1"),
        stderr=subprocess.DEVNULL,
    )


async def _main(rate: float, seconds: float, rounds: int, work: Path) -> None:
    server = RedisServer(work, "redis")
    server.start()
    app.redis_url = server.url
    worker = _start_worker(server.url)
    try:
        assert server.proc is not None
        await _collect(work / "seen.json")  # the worker is up
        for _ in range(rounds):
            print(await _round(rate, seconds, worker.pid, server.proc.pid, work), flush=True)
    finally:
        await app.aclose()
        worker.send_signal(signal.SIGTERM)
        worker.wait(15)
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_split")
    parser.add_argument("--rate", type=float, default=6000.0, help="jobs/s sent (6000)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per round (4)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="asyncjobs-latency-split-") as tmp:
        _uvloop.run(_main(args.rate, args.seconds, args.rounds, Path(tmp)))


if __name__ == "__main__":
    # Run as ``python -m``, this file is ``__main__``: use the module the worker imports,
    # whose jobs have the names the worker knows.
    from benchmarks import latency_split

    latency_split.main()
