"""Recovery of a worker that ran on another host: by its heartbeat's expiry alone.

Scenario 1 kills workers on the reaper's own host, where the reaper may skip the wait
(the pid is gone). For a worker on another machine, only the expiry of its heartbeat
record (``heartbeat_ttl``) says it is dead: its jobs must not be taken while the record
lives, and must be back in a queue within TTL + one interval of its death (issue 5).

The other host is simulated with a UTS namespace (``unshare -u``, which needs root or
CAP_SYS_ADMIN; the test is skipped without it): the worker's process id then starts with
a host name that is not ours.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.apps import faulty
from tests.conftest import wait_for
from tests.devserver import RedisProcess
from tests.faults._support import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TTL,
    Fleet,
    client,
    counts,
    held,
    report,
    runs,
    where_are,
    write_config,
)

pytestmark = pytest.mark.faults

OTHER_HOST = "faraway"
PREFIX = ["unshare", "-u", "sh", "-c", f'hostname {OTHER_HOST} && exec "$@"', "sh"]
JOBS = 10


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run([*PREFIX, "true"], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.timeout(60)
@pytest.mark.skipif(not _can_unshare(), reason="unshare -u needs root or CAP_SYS_ADMIN")
async def test_jobs_of_a_dead_worker_on_another_host_come_back_after_its_ttl(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    with RedisProcess() as server:
        r = client(server.url)
        faulty.app.redis_url = server.url
        try:
            fleet = fleets(server.url, write_config(tmp_path, concurrency=JOBS))
            far = fleet.start(prefix=PREFIX)
            await wait_for(lambda: far.registered(r), timeout=20)
            assert far.process_id is not None and far.process_id.startswith(f"{OTHER_HOST}:")
            await faulty.record.defer_many([(n, 30.0) for n in range(JOBS)])

            async def all_started() -> bool:
                return len(counts(await runs(r, "test:started"))) >= JOBS

            await wait_for(all_started, timeout=10)
            near = fleet.start()  # the reaper, on this host
            await wait_for(lambda: near.registered(r), timeout=20)
            far_id = far.process_id
            assert await held(r, far_id) == JOBS

            far.kill()
            t_kill = time.monotonic()
            ttl_left = int(await r.pttl(f"{{asyncjobs}}:process:{far.process_id}")) / 1000

            async def recovered() -> bool:
                return not await held(r, far_id)

            await wait_for(recovered, timeout=15, interval=0.01)
            recovery = time.monotonic() - t_kill

            # Back in the queue (or already taken by the live worker), none lost or dead.
            where: dict[str, int] = {}

            async def all_found() -> bool:
                nonlocal where
                where = await where_are(r, set(range(JOBS)))
                return sum(where.values()) == JOBS

            try:
                await wait_for(all_found, timeout=5)
            except TimeoutError:
                pass
            report(
                "other_host_recovery",
                recovery_s=round(recovery, 3),
                heartbeat_ttl_left_at_kill_s=ttl_left,
                ttl=HEARTBEAT_TTL,
                interval=HEARTBEAT_INTERVAL,
                jobs_now_at=where,
            )
            # Not while the dead worker's record lived: no reaper may take for dead a
            # worker on another host before its heartbeat expires.
            assert ttl_left > 0, "the record had expired already at the kill"
            assert recovery >= ttl_left - 0.05, (recovery, ttl_left)
            assert recovery <= HEARTBEAT_TTL + HEARTBEAT_INTERVAL + 1.0
            assert sum(where.values()) == JOBS and "dead" not in where, where
            assert near.alive()
        finally:
            await faulty.app.aclose()
            await r.aclose()
