"""The fault suite's job app (``tests.apps.faulty``) plus a job that eats memory, for
the memory limit (``--max-memory``): ``hog`` holds ``mib`` MiB of touched memory for
``hold`` seconds, and leaves the same evidence as ``record`` (``test:started`` and
``test:ran``, ``"n pid ts"`` per run)."""

from __future__ import annotations

import os
import time

import anyio

from tests.apps.faulty import _hset, app, record

__all__ = ["app", "hog", "record"]


@app.job(queue="default")
async def hog(n: int, mib: int, hold: float) -> None:
    run = os.urandom(8).hex()
    pid = os.getpid()
    await _hset("test:started", run, f"{n} {pid} {time.time()!r}")
    # Written, not just allocated: untouched pages would not count in the RSS.
    data = b"\x01" * (mib * 1024 * 1024)
    await anyio.sleep(hold)
    del data
    await _hset("test:ran", run, f"{n} {pid} {time.time()!r}")
