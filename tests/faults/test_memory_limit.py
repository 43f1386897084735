"""The memory limit (``--max-memory``, Sidekiq Enterprise's memory killer) on real worker
processes: a job that holds 200 MiB pushes its worker past a 150MB limit.

Asserted: the worker logs one WARNING with its RSS and the limit, finishes the running
job (its outcome written: done, not lost, not requeued), removes its record and exits
75; under ``--processes 2`` the supervisor starts a replacement at once (not as a
crash: no backoff) and a stream of jobs keeps flowing, each run exactly once. Bad sizes,
and a limit below what the worker needs to start, are one line, exit 2.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from asyncjobs._worker.memory import REPLACE_EXIT
from tests.apps import hungry
from tests.conftest import WORKER_CMD, subprocess_env, text, wait_for
from tests.devserver import RedisProcess
from tests.faults._support import (
    PROCESSES,
    Producer,
    client,
    counts,
    report,
    runs,
    where_are,
    write_config,
)

pytestmark = pytest.mark.faults

APP = "tests.apps.hungry:app"
HOG = 1_000_000  # the hog's job number, apart from the producer's 0, 1, 2...


def start(url: str, config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*WORKER_CMD, "worker", APP, "--config", str(config), *extra],
            env=subprocess_env(url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


async def registered(r: aioredis.Redis) -> set[int]:
    """The pids of the worker processes with a record in Redis."""
    return {int(text(m).split(":")[-2]) for m in await r.smembers(PROCESSES)}


async def defer_hog(url: str, mib: int = 200, hold: float = 2.0) -> None:
    hungry.app.redis_url = url
    try:
        await hungry.hog.defer(HOG, mib, hold)
    finally:
        await hungry.app.aclose()


@pytest.mark.timeout(60)
async def test_over_the_limit_finishes_its_job_and_exits_75(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    log = tmp_path / "worker.log"
    with RedisProcess() as server:
        r = client(server.url)
        proc = start(server.url, config, log, "--max-memory", "150MB")
        try:
            await wait_for(lambda: _has_record(r), timeout=20)
            await defer_hog(server.url)
            with anyio.fail_after(30):
                while proc.poll() is None:
                    await anyio.sleep(0.05)
            out = log.read_text()
            assert proc.returncode == REPLACE_EXIT, out
            warnings = [line for line in out.splitlines() if "over --max-memory" in line]
            assert len(warnings) == 1, out
            assert "WARNING" in warnings[0] and "RSS " in warnings[0], warnings
            assert "143.1 MiB" in warnings[0], warnings  # 150MB, the limit
            assert "finishing 1 running jobs" in warnings[0], warnings
            # The job ran to its end, once, and its outcome was written.
            assert counts(await runs(r)) == {HOG: 1}, out
            assert counts(await runs(r, "test:started")) == {HOG: 1}, out
            assert await where_are(r, {HOG}) == {}, out
            assert int(await r.get("{asyncjobs}:stat:processed") or 0) == 1, out
            assert "0 jobs requeued" in out, out
            assert await r.scard(PROCESSES) == 0, out  # a clean exit: record removed
        finally:
            stop(proc)
            await r.aclose()


async def _has_record(r: aioredis.Redis) -> bool:
    return bool(await r.scard(PROCESSES))


@pytest.mark.timeout(90)
async def test_supervisor_replaces_a_child_over_the_limit_and_jobs_keep_flowing(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    log = tmp_path / "supervisor.log"
    with RedisProcess() as server:
        r = client(server.url)
        sup = start(server.url, config, log, "--processes", "2", "--max-memory", "150MB")
        producer = Producer(job_sleep=0.05, pause=0.01)
        try:
            await wait_for(lambda: _count(r, 2), timeout=30)
            first = await registered(r)
            t0 = time.monotonic()
            async with anyio.create_task_group() as tg:
                hungry.app.redis_url = server.url
                tg.start_soon(producer.run)
                await anyio.sleep(0.5)
                await hungry.hog.defer(HOG, 200, 2.0)

                async def replaced() -> bool:
                    now = await registered(r)
                    return len(now) == 2 and len(now & first) == 1

                await wait_for(replaced, timeout=30)
                replaced_after = time.monotonic() - t0
                await anyio.sleep(1.0)  # jobs keep flowing with the new child
                producer.stop = True
            await hungry.app.aclose()
            accepted = set(producer.accepted)
            assert len(accepted) > 50, len(accepted)

            async def all_ran() -> bool:
                return set(counts(await runs(r))) >= accepted | {HOG}

            await wait_for(all_ran, timeout=30)
            out = log.read_text()
            ran, started = counts(await runs(r)), counts(await runs(r, "test:started"))
            assert ran[HOG] == 1 and started[HOG] == 1, out
            twice = {n: c for n, c in started.items() if c != 1}
            assert not twice, f"started more than once: {twice}"
            # The new child ran some of the jobs.
            new = (await registered(r)) - first
            assert any(run.pid in new for run in await runs(r)), out
            assert "exited over its memory limit; replacing it now" in out, out
            assert "restarting in" not in out, out  # not taken for a crash
            sup.send_signal(signal.SIGTERM)
            assert sup.wait(30) == 0, log.read_text()
            report(
                "memory_limit_supervisor",
                jobs=len(accepted),
                replaced_after_s=round(replaced_after, 2),
            )
        finally:
            producer.stop = True
            stop(sup)
            await r.aclose()


async def _count(r: aioredis.Redis, n: int) -> bool:
    return len(await registered(r)) >= n


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("500", "invalid --max-memory '500' (a number needs a unit)"),
        ("lots", "invalid --max-memory 'lots': a size such as 500MB"),
        ("1MB", "less than any Python worker needs"),
        ("20MiB", "is below this worker's memory with the app loaded"),
    ],
)
def test_bad_max_memory_one_line_exit_2(tmp_path: Path, value: str, needle: str) -> None:
    with RedisProcess() as server:
        res = subprocess.run(
            [*WORKER_CMD, "worker", APP, "--max-memory", value],
            env=subprocess_env(server.url),
            capture_output=True,
            timeout=30,
        )
    err = res.stderr.decode()
    assert res.returncode == 2, err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
