"""Iterable jobs under SIGKILL (#14): a worker killed mid-iteration loses no item and
repeats at most ``save_every`` of them.

One iterable job walks 0..599 on a worker subprocess, saving its cursor every 20
items. Mid-run the worker is frozen (SIGSTOP), the saved cursor and the items done are
read, and it is SIGKILLed. A second worker reaps the dead one's job and resumes it from
the saved cursor. Evidence (tests/apps/iterating.py): every item done is recorded with
the pid that did it, every run with the cursor it started after.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import asyncjobs
from tests.apps import iterating
from tests.conftest import WORKER_CMD, subprocess_env, text, wait_for
from tests.devserver import RedisProcess
from tests.faults._support import client, report, write_config

pytestmark = pytest.mark.faults

ITEMS = 600
PAUSE = 0.004


def spawn(url: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*WORKER_CMD, "worker", "tests.apps.iterating:app", "--config", str(config)],
            env=subprocess_env(url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.timeout(60)
async def test_sigkill_mid_iteration_resumes_from_the_saved_cursor(tmp_path: Path) -> None:
    with RedisProcess() as server:
        r = client(server.url)
        app = asyncjobs.App(server.url)

        @app.iterable_job(name=iterating.walk.name, save_every=iterating.SAVE_EVERY)
        async def walk(it: asyncjobs.Iteration[int], stop: int, pause: float) -> AsyncIterator[int]:
            yield 0  # only deferred from here: the workers run tests.apps.iterating's

        procs: list[subprocess.Popen[bytes]] = []
        try:
            jid = await walk.defer(ITEMS, PAUSE)
            assert jid is not None
            config = write_config(tmp_path, concurrency=2)
            victim = spawn(server.url, config, tmp_path / "w1.log")
            procs.append(victim)
            # Kill it well into the walk, between two saves.
            await wait_for(lambda: _done_at_least(r, 150), timeout=30)
            victim.send_signal(signal.SIGSTOP)
            saved = json.loads(await r.hget(f"{{asyncjobs}}:iter:{jid}", "cursor") or "null")
            done_by_victim = [int(text(e).split()[0]) for e in await r.lrange("test:items", 0, -1)]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            assert isinstance(saved, int) and saved >= 139
            last = max(done_by_victim)
            assert done_by_victim == list(range(last + 1))

            procs.append(spawn(server.url, config, tmp_path / "w2.log"))
            await wait_for(lambda: r.get("{asyncjobs}:stat:processed"), timeout=40)

            entries = [text(e).split() for e in await r.lrange("test:items", 0, -1)]
            counts = Counter(int(n) for n, _ in entries)
            runs = [text(e).split() for e in await r.lrange("test:runs", 0, -1)]
            redone = sorted(n for n, c in counts.items() if c > 1)
            report(
                "iterable job under SIGKILL",
                items=ITEMS,
                killed_after=last + 1,
                saved_cursor=saved,
                redone=len(redone),
                runs=[(run, cursor) for run, cursor, _ in runs],
            )
            # Every item at least once; none skipped.
            assert set(counts) == set(range(ITEMS))
            # The second run resumed right after the saved cursor...
            assert [(int(run), cursor) for run, cursor, _ in runs] == [(1, "None"), (2, str(saved))]
            # ...so only the items done since the last save were done again: at most
            # save_every of them.
            assert redone == list(range(saved + 1, last + 1))
            assert len(redone) <= iterating.SAVE_EVERY
            assert max(counts.values()) <= 2
            await wait_for(lambda: _gone(r, jid))
            assert await r.zcard("{asyncjobs}:dead") == 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            await app.aclose()
            await r.aclose()


async def _done_at_least(r: aioredis.Redis, n: int) -> bool:
    return bool(await r.llen("test:items") >= n)


async def _gone(r: aioredis.Redis, jid: str) -> bool:
    return not await r.exists(f"{{asyncjobs}}:iter:{jid}")
