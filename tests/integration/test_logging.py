"""The worker's logging: your jobs' own log lines reach its output at the level you ask."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import asyncjobs
from asyncjobs import api
from asyncjobs.cli import setup_logging
from tests.conftest import WORKER_CMD, subprocess_env, wait_for


def _spawn(redis_url: str, out: Path, *args: str) -> subprocess.Popen[bytes]:
    with out.open("wb") as f:
        return subprocess.Popen(
            [*WORKER_CMD, "worker", "tests.apps.logs:app", *args],
            env=subprocess_env(redis_url),
            stdout=subprocess.DEVNULL,
            stderr=f,
        )


async def _processed(admin: asyncjobs.App) -> bool:
    return (await api.Stats.fetch(admin)).processed >= 1


async def _worker_output(redis_url: str, tmp_path: Path, *args: str) -> tuple[str, str]:
    """Run ``asyncjobs worker tests.apps.logs:app ARGS``, defer one job, return the jid
    and the worker's stderr once the job has run."""
    from tests.apps import logs

    logs.app.redis_url = redis_url
    try:
        jid = await logs.place.defer(7, "ada")
    finally:
        await logs.app.aclose()
    assert jid is not None
    out = tmp_path / "worker.log"
    proc = _spawn(redis_url, out, *args)
    try:
        # The job logs before it finishes: once it counts as processed, its lines are out.
        admin = asyncjobs.App(redis_url)
        try:
            await wait_for(lambda: _processed(admin), 15)
        finally:
            await admin.aclose()
    finally:
        proc.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(lambda: proc.wait(15))
    assert proc.returncode == 0, out.read_text()
    return jid, out.read_text()


async def test_a_jobs_own_log_line_shows_under_the_worker(redis_url: str, tmp_path: Path) -> None:
    jid, err = await _worker_output(redis_url, tmp_path)
    [line] = [line for line in err.splitlines() if "hello ada" in line]
    assert " INFO myapp.jobs: hello ada " in line
    assert f"[jid={jid} job=tests.apps.logs.place queue=default]" in line
    assert "placed order" not in err  # DEBUG, below the default INFO


async def test_json_lines_keep_extra_fields_and_the_job_context(
    redis_url: str, tmp_path: Path
) -> None:
    jid, err = await _worker_output(redis_url, tmp_path, "--log-format", "json")
    docs = [json.loads(line) for line in err.splitlines()]
    [doc] = [d for d in docs if d["message"] == "hello ada"]
    assert doc["order"] == 7
    assert (doc["logger"], doc["level"]) == ("myapp.jobs", "INFO")
    assert (doc["jid"], doc["job"], doc["queue"]) == (jid, "tests.apps.logs.place", "default")


async def test_debug_level_reaches_the_jobs_debug_lines(redis_url: str, tmp_path: Path) -> None:
    # The job logs its DEBUG line right after the INFO one, with no await between.
    _, err = await _worker_output(redis_url, tmp_path, "--log-level", "DEBUG")
    assert " DEBUG myapp.jobs: placed order 7 " in err, err


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, own = logging.getLogger(), logging.getLogger("asyncjobs")
    saved = root.handlers[:], root.level, own.level
    yield
    root.handlers[:], _, _ = saved
    root.setLevel(saved[1])
    own.setLevel(saved[2])


@pytest.mark.usefixtures("restore_logging")
def test_asyncjobs_own_level_can_be_set_apart() -> None:
    # A user's logger that inherits its level (one no other test configures).
    setup_logging("DEBUG", "text", asyncjobs_level="WARNING")
    assert logging.getLogger("own_level_test.jobs").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("asyncjobs.fetcher").getEffectiveLevel() == logging.WARNING
    setup_logging("INFO")
    assert logging.getLogger("asyncjobs.fetcher").getEffectiveLevel() == logging.INFO
