"""Shutdown of a worker process, as a process manager drives it (issue 10).

A job slow to die after its cancellation must hold the worker neither past its timeout
nor, after a second SIGINT, past a few seconds; it is back at the head of its queue
before the worker waits for it. A worker that cannot reach Redis at shutdown says so
and exits non-zero; its process record expires.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from tests.apps import lifecycle
from tests.conftest import WORKER_CMD, subprocess_env, text, wait_for
from tests.devserver import RedisProcess
from tests.faults._support import PROCESSES, QUEUE, client, write_config
from tests.proxy import ThreadedTcpProxy

pytestmark = pytest.mark.faults

APP = "tests.apps.lifecycle:app"


def start_worker(url: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*WORKER_CMD, "worker", APP, "--config", str(config)],
            env=subprocess_env(url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    with anyio.fail_after(timeout):
        while proc.poll() is None:
            await anyio.sleep(0.02)
    return proc.returncode


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["timeout", "second SIGINT"])
async def test_job_slow_to_die_holds_the_worker_neither_past_its_timeout_nor_is_lost(
    tmp_path: Path, how: str
) -> None:
    with RedisProcess() as server:
        r = client(server.url)
        timeout = 1.0 if how == "timeout" else 20.0
        # How soon the job must be back in its queue, and the worker gone: a second
        # SIGINT cuts the 20 s timeout short.
        soon = timeout + 1 if how == "timeout" else 2.0
        config = write_config(tmp_path, timeout=timeout)
        log = tmp_path / "worker.log"
        proc = start_worker(server.url, config, log)
        try:
            lifecycle.app.redis_url = server.url
            await lifecycle.stubborn.defer(1)
            await lifecycle.app.aclose()
            await wait_for(lambda: r.exists("test:started"), timeout=15)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT if how == "second SIGINT" else signal.SIGTERM)
            if how == "second SIGINT":
                await wait_for(lambda: b"waiting up to" in log.read_bytes())
                proc.send_signal(signal.SIGINT)
            # Back at the head of its queue while it still cleans up.
            await wait_for(lambda: r.llen(QUEUE), timeout=soon)
            assert await r.exists("test:cleaning")
            code = await wait_exit(proc, soon + 4)
            elapsed = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            print(log.read_text(errors="replace"))  # noqa: T201
        assert code == 0
        assert elapsed < soon + 3  # and the grace of 2 s for the job to end
        assert await r.llen(QUEUE) == 1
        assert not await r.keys("{asyncjobs}:inflight:*")
        await r.aclose()


@pytest.mark.timeout(60)
async def test_redis_unreachable_at_shutdown_exits_non_zero_and_the_record_expires(
    tmp_path: Path,
) -> None:
    with RedisProcess() as server, ThreadedTcpProxy("127.0.0.1", server.port) as proxy:
        r = client(server.url)
        config = write_config(tmp_path, timeout=0.5)
        log = tmp_path / "worker.log"
        proc = start_worker(proxy.url, config, log)
        try:
            await wait_for(lambda: r.scard(PROCESSES), timeout=15)
            # Started, not only registered: a cut during registration is the early
            # stop's case (it fetched nothing), not a shutdown's.
            await wait_for(
                lambda: _started(log),
                timeout=15,
            )
            (process_id,) = [text(m) for m in await r.smembers(PROCESSES)]
            # Every connection reset, and each new one as it comes: a server gone
            # away. (stop() would close the listener while the worker reconnects in
            # a tight loop, and asyncio can leave a connection it accepted just then
            # open: a ResourceWarning at this test's teardown, seen on CI.)
            proxy.refuse()
            proc.send_signal(signal.SIGTERM)
            code = await wait_exit(proc, 20)
        except BaseException:
            await r.aclose()
            raise
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        output = log.read_text(errors="replace")
        print(output)  # noqa: T201
        try:
            await _check_unreachable_exit(r, code, output, process_id)
        finally:
            await r.aclose()


async def _check_unreachable_exit(
    r: aioredis.Redis, code: int, output: str, process_id: str
) -> None:
    assert code == 2
    assert "ERROR" in output and "shutdown: Redis unreachable" in output
    assert any(
        line.startswith("asyncjobs: error:") and "shutdown: Redis unreachable" in line
        for line in output.splitlines()
    )
    key = "{asyncjobs}:process:" + process_id
    assert await r.pttl(key) in range(-2, 2001) and await r.pttl(key) != -1
    await wait_for(lambda: _gone(r, key), timeout=4)


def _started(log: Path) -> bool:
    return log.exists() and " started: " in log.read_text(errors="replace")


async def _gone(r: object, key: str) -> bool:
    return not await r.exists(key)  # type: ignore[attr-defined]
