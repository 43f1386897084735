"""An iterable job (#14) for worker subprocess tests: each item done is recorded in
Redis (``test:items``, "n pid") before its cursor is yielded."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import anyio

import asyncjobs
from asyncjobs import Iteration
from asyncjobs.iteration import from_range
from tests.apps import evidence_client

app = asyncjobs.App()

SAVE_EVERY = 20


r = evidence_client(app)


@app.iterable_job(name="walk", save_every=SAVE_EVERY, save_interval=None)
async def walk(it: Iteration[int], stop: int, pause: float) -> AsyncIterator[int]:
    """Items 0 .. stop-1, ``pause`` seconds each; records the run's start cursor."""
    await r().rpush("test:runs", f"{it.runs} {it.cursor} {os.getpid()}")
    async for n, cursor in from_range(0, stop, cursor=it.cursor):
        await anyio.sleep(pause)
        await r().rpush("test:items", f"{n} {os.getpid()}")
        yield cursor
