"""``asyncjobs worker`` settings from the environment: flag > env > settings file > default."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

import asyncjobs
from asyncjobs import api
from tests.conftest import WORKER_CMD, subprocess_env, text

APP = "tests.apps.recorder:app"


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    cfg = tmp_path / "asyncjobs.toml"
    cfg.write_text(
        f'app = "{APP}"\nconcurrency = 3\nqueues = ["fromfile"]\nnamespace = "filens"\n'
        "heartbeat_interval = 0.2\nheartbeat_ttl = 2.0\n"
    )
    return cfg


@pytest.fixture
async def procs() -> AsyncIterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:
        if p.returncode is None:
            p.kill()
        await p.aclose()


async def _record(redis_url: str, namespace: str) -> api.ProcessInfo:
    """The one live process's record in ``namespace``, once it is there."""
    async with asyncjobs.App(redis_url, namespace=namespace) as app:
        with anyio.fail_after(10):
            while not (found := await api.ProcessSet(app).list()):
                await anyio.sleep(0.05)
        [proc] = found
        await api.ProcessSet(app).send("stop", [proc.id])
        return proc


@pytest.mark.parametrize(
    ("flags", "env", "namespace", "concurrency", "queues"),
    [
        # the settings file alone (named by ASYNCJOBS_CONFIG)
        ([], {}, "filens", 3, ["fromfile"]),
        # the environment beats the file
        (
            [],
            {
                "ASYNCJOBS_CONCURRENCY": "5",
                "ASYNCJOBS_QUEUES": "critical,6 default",
                "ASYNCJOBS_NAMESPACE": "envns",
            },
            "envns",
            5,
            ["critical", "default"],
        ),
        # a flag beats the environment
        (
            ["-c", "7", "-q", "flagq", "-n", "flagns"],
            {
                "ASYNCJOBS_CONCURRENCY": "5",
                "ASYNCJOBS_QUEUES": "critical,6 default",
                "ASYNCJOBS_NAMESPACE": "envns",
            },
            "flagns",
            7,
            ["flagq"],
        ),
    ],
)
async def test_precedence_flag_env_file(
    redis_url: str,
    settings_file: Path,
    procs: list[Process],
    flags: list[str],
    env: dict[str, str],
    namespace: str,
    concurrency: int,
    queues: list[str],
) -> None:
    p = await anyio.open_process(
        [*WORKER_CMD, "worker", *flags],
        env=subprocess_env(redis_url, ASYNCJOBS_CONFIG=str(settings_file), **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs.append(p)
    proc = await _record(redis_url, namespace)
    assert proc.concurrency == concurrency
    assert [c["queues"] for c in proc.capsules] == [queues]
    with anyio.fail_after(10):
        assert await p.wait() == 0


async def test_log_settings_from_the_environment(
    redis_url: str, tmp_path: Path, procs: list[Process]
) -> None:
    from tests.apps import recorder

    fast = tmp_path / "fast.toml"  # short heartbeats: the stop is read sooner
    fast.write_text("heartbeat_interval = 0.2\nheartbeat_ttl = 2.0\n")
    recorder.app.redis_url = redis_url
    await recorder.record.defer(1)  # its start and end are logged at DEBUG
    await recorder.app.aclose()
    p = await anyio.open_process(
        [*WORKER_CMD, "worker"],
        env=subprocess_env(
            redis_url,
            ASYNCJOBS_APP=APP,
            ASYNCJOBS_CONFIG=str(fast),
            ASYNCJOBS_LOG_FORMAT="json",
            ASYNCJOBS_LOG_LEVEL="DEBUG",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    procs.append(p)
    await _record(redis_url, "asyncjobs")
    err = b""
    assert p.stderr is not None
    with anyio.fail_after(10):
        async for chunk in p.stderr:  # until the worker exits
            err += chunk
        await p.wait()
    lines = [json.loads(line) for line in err.decode().splitlines()]
    assert {rec["level"] for rec in lines} >= {"INFO", "DEBUG"}, lines


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ASYNCJOBS_TIMEOUT": "-1"}, "'--timeout'"),
        ({"ASYNCJOBS_CONCURRENCY": "0"}, "'--concurrency'"),
        ({"ASYNCJOBS_STRICT": "maybe"}, "ASYNCJOBS_STRICT"),
        ({"ASYNCJOBS_PROCESSES": "0"}, "invalid --processes 0"),
        ({"ASYNCJOBS_LOG_LEVEL": "LOUD"}, "invalid log level 'LOUD'"),
        ({"ASYNCJOBS_LOG_FORMAT": "xml"}, "invalid log format 'xml'"),
        ({"ASYNCJOBS_QUEUES": "critical,x"}, "invalid queue weight in 'critical,x'"),
        ({"ASYNCJOBS_NAMESPACE": "bad ns"}, "namespace"),
        ({"ASYNCJOBS_CONFIG": "/nonexistent/asyncjobs.toml"}, "cannot read config file"),
        ({"ASYNCJOBS_APP": "nosuch:app"}, "cannot import module 'nosuch'"),
        ({"ASYNCJOBS_MAX_MEMORY": "lots"}, "invalid --max-memory 'lots'"),
    ],
)
async def test_each_worker_variable_is_read(
    redis_url: str, env: dict[str, str], needle: str
) -> None:
    env = {"ASYNCJOBS_APP": APP, **env}
    with anyio.fail_after(20):  # a variable ignored would leave the worker running
        r = await anyio.run_process(
            [*WORKER_CMD, "worker"], env=subprocess_env(redis_url, **env), check=False
        )
    err = text(r.stderr)
    assert r.returncode == 2, err
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err
