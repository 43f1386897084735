"""The ``asyncjobs`` command line, run as a subprocess against the test Redis."""

from __future__ import annotations

import anyio

import asyncjobs
from asyncjobs import api
from tests.conftest import cli, text


async def test_stop_names_unknown_process_ids_and_exits_2(
    app: asyncjobs.App, redis_url: str
) -> None:
    worker = app.worker(heartbeat_interval=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(5):
            await worker.wait_started()
        r = await cli(redis_url, "stop", worker.process_id, "nosuch:1:abc")
        err = text(r.stderr)
        assert r.returncode == 2, err
        assert "stop sent to 1 processes" in text(r.stdout)
        assert "nosuch:1:abc" in err and worker.process_id not in err
        assert len(err.strip().splitlines()) == 1, err
        with anyio.fail_after(5):  # the known process still got the command
            while worker.process_id in [p.id for p in await api.ProcessSet(app).list()]:
                await anyio.sleep(0.05)
