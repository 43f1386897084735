"""Periodic ticks under SIGKILL: four worker processes enqueue a 1-second entry while
they are killed around tick times (one at a time, and three of four at once) and
replaced. Every tick is enqueued once, none twice, none skipped while any process
lives: the per-tick claim is atomic with the enqueue (periodic.lua), and no process
leads, so losing any of them loses no tick."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from tests.conftest import WORKER_CMD, subprocess_env, text
from tests.devserver import RedisProcess
from tests.faults._support import client, report, write_config

pytestmark = pytest.mark.faults

HISTORY = "{asyncjobs}:periodic:every_second:history"
ROUNDS = 10


def spawn(url: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*WORKER_CMD, "worker", "tests.apps.periodic:app", "--config", str(config)],
            env=subprocess_env(url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def until_second(offset: float) -> None:
    """Sleep until ``offset`` seconds after the next whole second of the wall clock."""
    now = time.time()
    target = int(now) + 1 + offset
    if target - now < 0.05:
        target += 1
    await anyio.sleep(target - now)


async def test_four_processes_sigkilled_around_ticks_enqueue_each_tick_once(
    tmp_path: Path,
) -> None:
    rng = random.Random(13)
    config = write_config(tmp_path, concurrency=2)
    procs: list[subprocess.Popen[bytes]] = []
    kills = 0
    with RedisProcess() as server:
        r = client(server.url)
        try:
            procs = [spawn(server.url, config, tmp_path / f"w{i}.log") for i in range(4)]
            with anyio.fail_after(30):
                while await r.llen(HISTORY) < 2:
                    await anyio.sleep(0.05)
            for round_ in range(ROUNDS):
                # Around a tick: just before, at, or just after the whole second, when
                # the processes are sleeping, claiming, or just done.
                await until_second(rng.uniform(-0.02, 0.02))
                live = [p for p in procs if p.poll() is None]
                victims = rng.sample(live, 3 if round_ % 3 == 2 else 1)
                for p in victims:
                    p.send_signal(signal.SIGKILL)
                    kills += 1
                for p in victims:
                    p.wait(10)
                    procs.remove(p)
                    procs.append(spawn(server.url, config, tmp_path / f"w{len(procs)}.log"))
                await anyio.sleep(rng.uniform(0.3, 1.5))
            await anyio.sleep(2)
            ticks = [int(text(h).split()[0]) for h in await r.lrange(HISTORY, 0, -1)]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            await r.aclose()
    ticks.reverse()
    first, last = ticks[0], ticks[-1]
    report("periodic_kills", kills=kills, ticks=len(ticks), first=first, last=last)
    dupes = sorted({t for t in ticks if ticks.count(t) > 1})
    assert not dupes, f"ticks enqueued twice: {dupes}"
    missing = sorted(set(range(first, last + 1)) - set(ticks))
    assert not missing, f"ticks skipped: {missing} (of {first}..{last})"
    assert last - first >= ROUNDS
