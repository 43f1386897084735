"""A concurrent limiter under SIGKILL (#13): a limit of 3 never has a 4th holder, even
when processes holding slots are killed; their leases (1.5 s, renewed while held) run
out and the other processes proceed.

Evidence: each ``hold`` job counts itself in ``test:holders`` when it starts and out
when it ends (tests/apps/limited.py), and records the count it saw. The test takes a
killed process's holders out of the count right after the kill, well inside their
leases, so the count is never below the true number of live holders."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from tests.apps import limited
from tests.conftest import WORKER_CMD, subprocess_env, text
from tests.devserver import RedisProcess
from tests.faults._support import client, report, write_config

pytestmark = pytest.mark.faults

JOBS = 40
HOLD = 0.3


def spawn(url: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*WORKER_CMD, "worker", "tests.apps.limited:app", "--config", str(config)],
            env=subprocess_env(url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def open_holders(r: aioredis.Redis, pid: int) -> int:
    """Jobs of process ``pid`` that started and did not end."""
    started = [text(e).split() for e in await r.lrange("test:started", 0, -1)]
    ran = [text(e).split() for e in await r.lrange("test:ran", 0, -1)]
    mine = str(pid)
    return sum(1 for _, p in started if p == mine) - sum(1 for _, p in ran if p == mine)


async def kill_a_holder(r: aioredis.Redis, procs: list[subprocess.Popen[bytes]]) -> int:
    """SIGKILL a live process that holds a slot now; take its holders out of the count.
    Returns how many it held."""
    with anyio.fail_after(20):
        while True:
            for p in procs:
                if p.poll() is None and await open_holders(r, p.pid) > 0:
                    p.send_signal(signal.SIGKILL)
                    p.wait(5)
                    held = await open_holders(r, p.pid)
                    await r.decrby("test:holders", held)
                    return held
            await anyio.sleep(0.01)


async def test_concurrent_limit_of_3_never_has_a_4th_holder_under_sigkill(
    tmp_path: Path,
) -> None:
    with RedisProcess() as server:
        r = client(server.url)
        app = asyncjobs.App(server.url)

        @app.job(name=limited.hold.name)
        async def hold(n: int, seconds: float) -> None: ...

        procs: list[subprocess.Popen[bytes]] = []
        try:
            await hold.defer_many([{"n": n, "seconds": HOLD} for n in range(JOBS)])
            config = write_config(tmp_path, concurrency=5, scheduler_poll=0.2)
            procs = [spawn(server.url, config, tmp_path / f"w{i}.log") for i in range(4)]
            t0 = time.monotonic()
            killed = [await kill_a_holder(r, procs)]
            # Someone else takes the freed slots once the leases run out.
            after = await r.llen("test:started")
            with anyio.fail_after(10):
                while await r.llen("test:started") < after + 3:
                    await anyio.sleep(0.02)
            killed.append(await kill_a_holder(r, procs))
            survivors = [p for p in procs if p.poll() is None]
            assert len(survivors) == 2
            # Every job ends: the survivors run the rest (the killed ones' jobs come back
            # through the reaper once their heartbeats are gone).
            with anyio.fail_after(60):
                while len({text(e).split()[0] for e in await r.lrange("test:ran", 0, -1)}) < JOBS:
                    await anyio.sleep(0.1)
            elapsed = time.monotonic() - t0
            levels = [int(x) for x in await r.lrange("test:levels", 0, -1)]
            report(
                "concurrent 3 under SIGKILL",
                jobs=JOBS,
                killed_holders=killed,
                most_holders=max(levels),
                starts=len(levels),
                seconds=round(elapsed, 1),
            )
            assert max(levels) <= 3
            assert max(levels) == 3  # the limit was reached, not merely respected
            assert sum(killed) >= 2
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            await app.aclose()
            await r.aclose()
