"""Jobs that fail awkwardly still get an outcome: the retry set, with the error.

A job's exception is stored with the failed payload (``error_class``, ``error_message``,
``error_backtrace``). Two exceptions that are hard to store: one whose message holds a
lone surrogate (a file name that is not UTF-8, as ``os.fsdecode`` gives it, cannot be
encoded as UTF-8 JSON as it is), and one whose ``str()`` raises.

Asserted: each failed job lands in the retry set with its error class; nothing is left
in the worker's in-flight hash (where it would sit, neither retried nor dead, until the
worker stops); the worker stays up and exits 0.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tests.apps import faulty
from tests.conftest import loads, wait_for
from tests.devserver import RedisProcess
from tests.faults._support import RETRY, Fleet, client, held, report, write_config

pytestmark = pytest.mark.faults


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["surrogate", "unprintable"])
async def test_awkward_failure_is_retried(
    how: str, tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    t_start = time.monotonic()
    with RedisProcess() as server:
        r = client(server.url)
        faulty.app.redis_url = server.url
        try:
            worker = fleets(server.url, write_config(tmp_path)).start()
            await wait_for(lambda: worker.registered(r), timeout=20)
            pid = worker.process_id
            assert pid is not None
            jid = await faulty.fail.defer(how)

            async def settled() -> bool:
                return bool(await r.zcard(RETRY)) and not await held(r, pid)

            try:
                await wait_for(settled, timeout=5)
            except TimeoutError:
                pass  # the assertions below say where the job is
            retry = [loads(m) for m in await r.zrange(RETRY, 0, -1)]
            stuck = await held(r, pid)
            alive = worker.alive()
            worker.signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(worker.popen.wait, 15)
            report(
                f"awkward_failure_{how}",
                in_retry=len(retry),
                stuck_in_flight=stuck,
                worker_exit=code,
                runtime_s=round(time.monotonic() - t_start, 1),
            )
            assert alive, worker.output()[-3000:]
            assert stuck == 0, "the failed job is stuck in flight (no outcome written)"
            assert [p["jid"] for p in retry] == [jid]
            assert retry[0]["error_class"] in ("ValueError", "Unprintable")
            assert retry[0]["retry_count"] == 0  # Sidekiq: no retry made yet
            assert code == 0
        finally:
            await faulty.app.aclose()
            await r.aclose()
