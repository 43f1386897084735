"""asyncjobs top: one view with --once; a live view refreshed until Ctrl-C."""

from __future__ import annotations

import signal
import subprocess

import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from tests.conftest import WORKER_CMD, cli, subprocess_env, wait_for

pytestmark = pytest.mark.timeout(60)


async def test_top_once_shows_processes_queues_and_jobs(
    redis_url: str, redis: aioredis.Redis
) -> None:
    app = asyncjobs.App(redis_url, metrics=True)

    @app.job(name="resize")
    async def resize() -> None:
        pass

    try:
        for _ in range(3):
            await resize.defer()
        async with app.run_worker(concurrency=7):

            async def done() -> bool:
                return await redis.get("{asyncjobs}:stat:processed") == b"3"

            await wait_for(done)

            async def measured() -> bool:  # written within 0.1 s of going idle
                return [j.runs for j in (await api.job_metrics(app, 1)).jobs] == [3]

            await wait_for(measured)
            await resize.configure(queue="waiting").defer()
            r = await cli(redis_url, "top", "--once")
    finally:
        await app.aclose()
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "namespace asyncjobs" in out and "processed 3" in out
    assert "Processes (1)" in out and "0/7" in out and "running" in out
    assert "Queues (2)" in out and "waiting" in out
    assert "Jobs, last hour" in out and "resize" in out


def _top(redis_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*WORKER_CMD, "top", "--interval", "0.2"],
        env=subprocess_env(redis_url, COLUMNS="120"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_top_refreshes_until_ctrl_c(redis_url: str, redis: aioredis.Redis) -> None:
    proc = _top(redis_url)
    try:
        # It reads Redis again and again: count the clients' commands on the server.
        async def calls() -> int:
            stats = await redis.info("commandstats")
            return int(stats.get("cmdstat_smembers", {}).get("calls", 0))

        await wait_for(lambda: proc.poll() is None)
        first = 0

        async def started() -> bool:
            nonlocal first
            first = await calls()
            return first > 0

        await wait_for(started, timeout=20)

        async def refreshed() -> bool:
            return await calls() >= first + 4

        await wait_for(refreshed, timeout=20)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


async def test_top_refuses_a_bad_interval(redis_url: str) -> None:
    r = await cli(redis_url, "top", "--interval", "0")
    assert r.returncode == 2
    assert b"Traceback" not in r.stderr
