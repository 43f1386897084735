"""A job app for the batch fault test (tests/faults/test_batch_kills.py).

``work`` jobs are the members of the batches; one in 97 fails on its first run (a
retry, so ack.lua's retry path runs under the kills too). ``callback`` runs on its
own queue and counts its runs in Redis: ``HINCRBY test:callbacks "<event>:<bid>" 1``.
"""

from __future__ import annotations

import anyio

import asyncjobs
from tests.apps import evidence_client

app = asyncjobs.App()


r = evidence_client(app, socket_connect_timeout=2.0)


@app.job(queue="default", retry_in=lambda count, exc: 0.2)
async def work(n: int, sleep: float = 0.0) -> None:
    if n % 97 == 0 and await r().set(f"test:failed:{n}", 1, nx=True):
        raise RuntimeError(f"job {n} fails its first run")
    if sleep:
        await anyio.sleep(sleep)


@app.job(queue="callbacks")
async def callback(bid: str, event: str) -> None:
    await r().hincrby("test:callbacks", f"{event}:{bid}", 1)
