"""`asyncjobs web`: the dashboard alone under uvicorn, from the command line."""

from __future__ import annotations

import signal
import subprocess

import anyio
import httpx

from tests.conftest import WORKER_CMD, cli, subprocess_env, text, wait_for
from tests.devserver import free_port


async def test_asyncjobs_web_serves_the_dashboard(redis_url: str) -> None:
    port = free_port()
    proc = await anyio.open_process(
        [*WORKER_CMD, "web", "--bind", f"127.0.0.1:{port}"],
        env=subprocess_env(redis_url, ASYNCJOBS_WEB_SECRET="s3cret", ASYNCJOBS_WEB_AUTH="admin:pw"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            signed_in = httpx.BasicAuth("admin", "pw")

            async def up() -> bool:
                try:
                    r = await c.get("/", auth=signed_in)
                except httpx.TransportError:
                    return False
                return r.status_code == 200 and "Overview" in r.text

            await wait_for(up, timeout=15)
            assert (await c.get("/queues", auth=signed_in)).status_code == 200
            assert (await c.get("/queues")).status_code == 401  # ASYNCJOBS_WEB_AUTH
    finally:
        proc.terminate()
        with anyio.fail_after(10):
            await proc.wait()
    # uvicorn shuts down gracefully, then raises the signal it caught again.
    assert proc.returncode in (0, -signal.SIGTERM)


async def test_asyncjobs_web_bad_bind(redis_url: str) -> None:
    r = await cli(redis_url, "web", "--bind", "8080", "--no-auth")
    assert r.returncode == 2
    assert "--bind 8080: give HOST:PORT" in text(r.stderr)
