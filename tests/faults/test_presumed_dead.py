"""A worker that was stopped (SIGSTOP, a frozen VM) long enough to be presumed dead.

Its heartbeat expires while it is alive; another worker reaps its in-flight jobs and
runs them. When it wakes, it must say at WARNING that it was presumed dead and which
jobs were given back, and must not start the job it had fetched ahead before the pause:
that job belongs to whoever took it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tests.conftest import wait_for
from tests.devserver import RedisProcess
from tests.faults._support import (
    HEARTBEAT_TTL,
    Fleet,
    client,
    enqueue,
    held,
    runs,
    write_config,
)

pytestmark = pytest.mark.faults


@pytest.mark.timeout(60)
async def test_worker_presumed_dead_drops_its_prefetched_jobs_and_says_so(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    with RedisProcess() as server:
        r = client(server.url)
        try:
            fleet = fleets(server.url, write_config(tmp_path, concurrency=1, prefetch=1))
            a = fleet.start()
            await wait_for(lambda: a.registered(r), timeout=20)
            assert a.process_id is not None
            # Job 0 runs in A's one slot; job 1 waits in A, fetched ahead.
            jids = await enqueue(server.url, [(0, 3.0), (1, 0.0)])
            await wait_for(lambda: _started(r, 0), timeout=10)
            await wait_for(lambda: _held_by(r, a.process_id, 2), timeout=10)
            a.signal(signal.SIGSTOP)
            try:
                await anyio.sleep(HEARTBEAT_TTL)  # A's record expires meanwhile
                b = fleet.start()
                # B reaps A's jobs and runs them.
                await wait_for(lambda: _ran_by(r, 1, b.pid), timeout=20)
            finally:
                a.signal(signal.SIGCONT)
            # A wakes; its job 0 (running through the pause) ends, freeing its slot.
            await wait_for(lambda: _ran_by(r, 0, a.pid), timeout=10)
            with contextlib.suppress(TimeoutError):  # the assertions say what is missing
                await wait_for(lambda: "presumed dead" in a.output(), timeout=10)
            await anyio.sleep(0.5)  # the freed slot would have taken job 1 by now
            ran = await runs(r)
            assert [e.pid for e in ran if e.n == 1] == [b.pid], (
                "job 1, fetched ahead by A before its pause, ran again in A"
            )
            lines = [ln for ln in a.output().splitlines() if "presumed dead" in ln]
            assert len(lines) == 1, "A must say, once, that it was presumed dead"
            line = lines[0]
            assert "WARNING" in line and jids[0] in line and jids[1] in line, line
            assert a.alive()
        finally:
            await r.aclose()


async def _started(r: object, n: int) -> bool:
    return any(e.n == n for e in await runs(r, "test:started"))  # type: ignore[arg-type]


async def _ran_by(r: object, n: int, pid: int) -> bool:
    return any(e.n == n and e.pid == pid for e in await runs(r))  # type: ignore[arg-type]


async def _held_by(r: object, process_id: str, count: int) -> bool:
    return await held(r, process_id) == count  # type: ignore[arg-type]
