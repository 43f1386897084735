"""The process record and remote control as Sidekiq has them (#11): tag, RSS, capsules
with their mode and weights, embedded workers that refuse remote quiet and stop."""

from __future__ import annotations

import logging

import anyio
import pytest

import asyncjobs
from asyncjobs import CapsuleSpec, api
from tests.conftest import (
    WORKER_CMD,
    cli,
    loads,
    running,
    spawn_worker,
    subprocess_env,
    text,
    wait_for,
)
from tests.devserver import RedisProcess


async def _one(app: asyncjobs.App) -> api.ProcessInfo:
    procs: list[api.ProcessInfo] = []

    async def listed() -> bool:
        procs[:] = await api.ProcessSet(app).list()
        return len(procs) == 1

    await wait_for(listed)
    return procs[0]


async def test_record_has_tag_rss_and_capsule_modes(app: asyncjobs.App) -> None:
    capsules = [
        CapsuleSpec("main", [("critical", 6), ("default", 3)], concurrency=4),
        CapsuleSpec("slow", [("a", 1), ("b", 1)], concurrency=2, strict=True),
    ]
    async with running(app.worker(capsules=capsules, tag="billing")):
        p = await _one(app)
    assert p.tag == "billing" and not p.embedded
    assert p.rss > 1000  # KiB: a Python process holds more than a megabyte
    assert [(c["name"], c["mode"], c["weights"], c["concurrency"]) for c in p.capsules] == [
        ("main", "weighted", {"critical": 6, "default": 3}, 4),
        ("slow", "strict", {"a": 1, "b": 1}, 2),
    ]


async def test_run_worker_is_embedded(app: asyncjobs.App) -> None:
    async with app.run_worker():
        p = await _one(app)
    assert p.embedded and p.tag == ""


async def test_cli_worker_tag_shown_by_processes(app: asyncjobs.App) -> None:
    url = app.redis_url
    proc = spawn_worker(url, "--tag", "deploy-42", "-q", "critical,6", "-q", "default,3")
    try:
        p = await _one(app)
        assert p.tag == "deploy-42" and not p.embedded
        r = await cli(url, "processes")
        out = text(r.stdout)
        assert "deploy-42" in out and "MiB" in out, out
        assert "weighted x10: critical=6 default=3" in out, out
        [listed] = loads((await cli(url, "processes", "--json")).stdout)
        assert listed["tag"] == "deploy-42" and listed["rss"] > 0
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("command", ["quiet", "stop"])
async def test_embedded_worker_refuses_remote_quiet_and_stop(
    app: asyncjobs.App, command: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As Sidekiq's embedded mode: the command is logged and ignored, the worker goes on;
    the CLI does not send it, says why, and exits 2."""
    caplog.set_level(logging.WARNING, "asyncjobs")
    async with app.run_worker(heartbeat_interval=0.1, heartbeat_ttl=1.0) as worker:
        p = await _one(app)
        r = await cli(app.redis_url, command, p.id)
        [line] = text(r.stderr).strip().splitlines()
        assert r.returncode == 2 and "embedded (app.run_worker())" in line, line
        assert "run_worker() block" in line
        await api.ProcessSet(app).send(command, [p.id])  # the API sends it all the same

        def refused() -> bool:
            return any(f"remote {command} refused" in m for m in caplog.messages)

        await wait_for(refused)
        assert not worker.quiet and not worker._stop_requested
        assert "leave the run_worker() block" in caplog.text


async def test_cli_quiet_all_skips_embedded(app: asyncjobs.App) -> None:
    proc = spawn_worker(app.redis_url)
    try:
        async with app.run_worker():

            async def two() -> bool:
                return len(await api.ProcessSet(app).list()) == 2

            await wait_for(two)
            r = await cli(app.redis_url, "quiet", "--all")
            assert "quiet sent to 1 processes" in text(r.stdout)
            assert r.returncode == 2 and "embedded" in text(r.stderr)
    finally:
        proc.terminate()
        proc.wait(10)


async def test_worker_warns_about_an_evicting_redis(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "asyncjobs")
    with RedisProcess("--maxmemory-policy", "allkeys-lru") as server:
        app = asyncjobs.App(server.url)
        try:
            async with running(app.worker()):
                pass
        finally:
            await app.aclose()
    [line] = [m for m in caplog.messages if "maxmemory-policy" in m]
    assert "has maxmemory-policy allkeys-lru" in line and "noeviction" in line


async def test_worker_on_a_noeviction_redis_does_not_warn(
    app: asyncjobs.App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "asyncjobs")
    async with running(app.worker()):
        pass
    assert not [m for m in caplog.messages if "maxmemory" in m]


async def test_one_line_gives_the_downtime_when_redis_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "asyncjobs")
    with RedisProcess() as server:
        app = asyncjobs.App(server.url)
        try:
            async with running(app.worker(heartbeat_interval=0.2, heartbeat_ttl=30.0)):
                server.terminate()
                await wait_for(lambda: "heartbeat: cannot reach Redis" in caplog.text)
                await anyio.sleep(1.5)  # the outage: the worker only waits it out
                await anyio.to_thread.run_sync(server.restart)

                def back() -> list[str]:
                    return [m for m in caplog.messages if m.startswith("Redis is back after")]

                await wait_for(back, timeout=10)
        finally:
            await app.aclose()
    [line] = back()
    downtime = float(line.split()[4])
    assert 1.5 <= downtime < 5.0, line


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["-t", "0"], {}, "timeout must be more than 0 seconds, got 0"),
        ([], {"ASYNCJOBS_TIMEOUT": "0"}, "timeout must be more than 0 seconds, got 0"),
        ([], {"WATCHDOG_USEC": "250000"}, "WATCHDOG_USEC=250000 is below one second"),
    ],
)
async def test_worker_refuses_zero_timeout_and_short_watchdog(
    redis_url: str, args: list[str], env: dict[str, str], needle: str
) -> None:
    with anyio.fail_after(20):  # a worker that accepted them would run until stopped
        r = await anyio.run_process(
            [*WORKER_CMD, "worker", "tests.apps.recorder:app", *args],
            env=subprocess_env(redis_url, **env),
            check=False,
        )
    [line] = text(r.stderr).strip().splitlines()
    assert r.returncode == 2 and needle in line, line
