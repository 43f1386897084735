"""A job app for the fault suite (tests/faults): every run leaves evidence in Redis.

Each run of ``record`` gets a fresh run id and writes ``HSET test:started RUN "n pid ts"``
when it starts and ``HSET test:ran RUN "n pid ts"`` when it finishes. Keyed by run id,
the writes are idempotent, so a write retried after a lost reply (a Redis restart, a
connection reset) never looks like a second run. The writes are retried across short
Redis outages, so a job that was running when Redis went away still finishes (instead
of failing into the retry set, with its long first backoff) once Redis is back.

``poison`` writes ``HSET test:poison RUN ts`` and then kills its worker with
``os._exit(1)``: a poison pill.
"""

from __future__ import annotations

import os
import time

import anyio
import redis.exceptions as rexc

import asyncjobs
from tests.apps import evidence_client

app = asyncjobs.App()

# How long a job keeps retrying one evidence write while Redis is unreachable.
WRITE_PATIENCE = 60.0


r = evidence_client(app, socket_connect_timeout=2.0)


async def _hset(key: str, field: str, value: str) -> None:
    deadline = time.monotonic() + WRITE_PATIENCE
    while True:
        try:
            await r().hset(key, field, value)
            return
        except (rexc.ConnectionError, rexc.TimeoutError, OSError, RuntimeError):
            # RuntimeError: what redis-py raises on uvloop (the worker's loop) when it
            # writes to a pooled connection that was reset ("unable to perform operation
            # on <TCPTransport closed=True>"), where asyncio raises ConnectionError.
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.05)


@app.job(queue="default")
async def record(n: int, sleep: float = 0.0) -> None:
    """Record the start and the end of a run of job ``n``, ``sleep`` seconds apart."""
    run = os.urandom(8).hex()
    pid = os.getpid()
    await _hset("test:started", run, f"{n} {pid} {time.time()!r}")
    if sleep:
        await anyio.sleep(sleep)
    await _hset("test:ran", run, f"{n} {pid} {time.time()!r}")


@app.job(queue="default")
async def poison(tag: str) -> None:
    """Kill the worker running this job, every time (after recording the attempt)."""
    await _hset("test:poison", os.urandom(8).hex(), f"{tag} {os.getpid()} {time.time()!r}")
    os._exit(1)


class Unprintable(Exception):
    """An exception whose message cannot even be turned into a string."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


@app.job(queue="default")
async def fail(how: str) -> None:
    """Fail in an awkward way: ``surrogate`` raises an error whose message holds a lone
    surrogate (a file name that is not UTF-8, as ``os.fsdecode`` gives it);
    ``unprintable`` raises an exception whose ``str()`` itself raises."""
    if how == "surrogate":
        name = os.fsdecode(b"caf\xe9.csv")  # 'caf\udce9.csv'
        raise ValueError(f"cannot import {name}")
    raise Unprintable()
