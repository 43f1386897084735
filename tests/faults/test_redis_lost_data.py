"""Redis comes back empty: restarted without persistence while a worker runs.

Queued, scheduled and in-flight jobs are gone with the data; the worker cannot bring
them back, but it must say so (at WARNING, once for the event) instead of logging that
its acknowledgements were written and going on as if nothing happened, and it must
carry on with the jobs enqueued afterwards.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tests.conftest import wait_for
from tests.devserver import RedisProcess
from tests.faults._support import (
    HEARTBEAT_INTERVAL,
    Fleet,
    client,
    counts,
    enqueue,
    runs,
    write_config,
)

pytestmark = pytest.mark.faults

LOST = "lost its data"


@pytest.mark.timeout(60)
async def test_worker_warns_once_when_redis_comes_back_empty(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    with RedisProcess() as server:  # no RDB, no AOF: a restart loses everything
        r = client(server.url)
        try:
            worker = fleets(server.url, write_config(tmp_path)).start()
            await wait_for(lambda: worker.registered(r), timeout=20)
            await enqueue(server.url, [(0, 0.0)])
            await wait_for(lambda: _ran(r, 0), timeout=10)

            server.kill()
            await anyio.to_thread.run_sync(server.restart)
            try:
                await wait_for(lambda: LOST in worker.output(), timeout=10)
            except TimeoutError:
                pass  # the assertions below say what is missing
            await enqueue(server.url, [(1, 0.0)])
            await wait_for(lambda: _ran(r, 1), timeout=10)
            await anyio.sleep(4 * HEARTBEAT_INTERVAL)  # more beats: no second warning
            out = worker.output()
            lines = [ln for ln in out.splitlines() if LOST in ln]
            assert len(lines) == 1, f"expected one warning that Redis lost its data:\n{out}"
            assert "WARNING" in lines[0]
            assert worker.alive()
            worker.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(worker.popen.wait, 15) == 0
            assert "Traceback" not in worker.output()
        finally:
            await r.aclose()


async def _ran(r: object, n: int) -> bool:
    return n in counts(await runs(r))  # type: ignore[arg-type]
