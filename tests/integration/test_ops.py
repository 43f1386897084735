"""Operations: systemd notify protocol, job-aware logging, middleware, `asyncjobs check`."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncjobs
from asyncjobs._logging import JobContextFilter, JsonFormatter, TextFormatter
from asyncjobs._payload import Payload
from tests.conftest import WORKER_CMD, cli, subprocess_env, text, wait_for


async def test_systemd_notify_ready_watchdog_stopping(
    app: asyncjobs.App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # WatchdogSec=1 (the least): every 0.5 s
    got: list[str] = []

    def drain() -> bool:
        while True:
            try:
                got.append(sock.recv(1024).decode())
            except BlockingIOError:
                return True

    worker = app.worker()
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: drain() and any(m.startswith("READY=1") for m in got))
        await wait_for(lambda: drain() and got.count("WATCHDOG=1") >= 2)
        worker.stop()
    drain()
    sock.close()
    assert "STOPPING=1" in got
    assert got.index("STOPPING=1") > next(i for i, m in enumerate(got) if m.startswith("READY=1"))


async def test_job_log_lines_carry_jid_and_middleware_meta(app: asyncjobs.App) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(JobContextFilter())
    mine = logging.getLogger("myapp")
    mine.addHandler(handler)
    mine.setLevel(logging.INFO)

    async def add_request_id(
        payload: Payload, call_next: Callable[[Payload], Awaitable[str | None]]
    ) -> str | None:
        payload.meta["request_id"] = "req-42"
        return await call_next(payload)

    seen_meta: list[dict[str, Any]] = []

    async def server_mw(ctx: asyncjobs.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        seen_meta.append(dict(ctx.meta))
        return await call_next()

    app.client_middleware.append(add_request_id)
    app.server_middleware.append(server_mw)

    @app.job(queue="mail")
    async def send(to: str) -> None:
        mine.info("sending to %s", to)

    try:
        jid = await send.defer("ada@example.com")
        async with app.run_worker(["mail"]):
            await wait_for(lambda: bool(records))
    finally:
        mine.removeHandler(handler)
    [rec] = records
    assert (rec.jid, rec.job, rec.queue) == (jid, send.name, "mail")  # type: ignore[attr-defined]
    assert seen_meta == [{"request_id": "req-42"}]
    line = TextFormatter().format(rec)
    assert f"jid={jid}" in line and "request_id=req-42" in line
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["jid"] == jid and doc["meta"] == {"request_id": "req-42"}
    assert doc["message"] == "sending to ada@example.com"


async def test_worker_json_logs(redis_url: str, redis: Any) -> None:
    from tests.apps import recorder

    recorder.app.redis_url = redis_url
    try:
        jid = await recorder.record.defer(1)
    finally:
        await recorder.app.aclose()
    proc = _popen(redis_url, "--log-format", "json", "--log-level", "DEBUG")
    try:
        await wait_for(lambda: redis.llen("test:ran"), timeout=15)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    lines = [json.loads(line) for line in err.decode().splitlines()]
    mine = [d for d in lines if d.get("jid") == jid]
    assert mine and all(d["job"] == recorder.record.name for d in mine)
    assert {d["logger"] for d in lines} >= {"asyncjobs.launcher", "asyncjobs.job"}
    assert proc.returncode == 0


def _popen(redis_url: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*WORKER_CMD, "worker", "tests.apps.recorder:app", *args],
        env=subprocess_env(redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_check_command(redis_url: str) -> None:
    r = await cli(redis_url, "check", "tests.apps.recorder:app")
    assert r.returncode == 0, text(r.stderr)
    out = text(r.stdout)
    assert "tests.apps.recorder.record  queue=default retry=25" in out
    assert out.strip().endswith("ok")
    r = await cli(redis_url, "check", "tests.apps.recorder:app", "-r", "redis://127.0.0.1:1/0")
    assert r.returncode == 1
    assert "problem: cannot reach Redis at redis://127.0.0.1:1/0" in text(r.stderr)
