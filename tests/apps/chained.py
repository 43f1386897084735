"""A job app for the chain fault test (tests/faults/test_chain_kills.py).

``mark`` jobs are a chain's steps, on the queue ``work``, and count their runs in Redis
(``HINCRBY test:ran <name> 1``). The server middleware counts each run of a step job
(``asyncjobs.chain``, on ``default``) once it has deferred the next step
(``HINCRBY test:steps <jid> 1``); the first step job to get there then stalls, its jid
in ``test:stalled``, so that the test can SIGKILL its worker before the
acknowledgement: the reaper gives the job back and another worker runs it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

import asyncjobs
from tests.apps import evidence_client

app = asyncjobs.App()


r = evidence_client(app, socket_connect_timeout=2.0)


@app.job(queue="work")
async def mark(name: str) -> None:
    await r().hincrby("test:ran", name, 1)


async def stall_once(ctx: asyncjobs.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
    result = await call_next()
    if ctx.name == "asyncjobs.chain":
        await r().hincrby("test:steps", ctx.jid, 1)
        if await r().set("test:stalled", ctx.jid, nx=True):
            await anyio.sleep(3600)  # SIGKILLed here: the next step deferred, no ack
    return result


app.server_middleware.append(stall_once)
