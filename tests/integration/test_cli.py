"""The ``asyncjobs`` command line, run as a subprocess against the test Redis."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

import asyncjobs
import asyncjobs.cli
from asyncjobs import api
from tests.conftest import cli, subprocess_env, text


async def test_stop_names_unknown_process_ids_and_exits_2(
    app: asyncjobs.App, redis_url: str
) -> None:
    worker = app.worker(heartbeat_interval=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(5):
            await worker.wait_started()
        r = await cli(redis_url, "stop", worker.process_id, "nosuch:1:abc")
        err = text(r.stderr)
        assert r.returncode == 2, err
        assert "stop sent to 1 processes" in text(r.stdout)
        assert "nosuch:1:abc" in err and worker.process_id not in err
        assert len(err.strip().splitlines()) == 1, err
        with anyio.fail_after(5):  # the known process still got the command
            while worker.process_id in [p.id for p in await api.ProcessSet(app).list()]:
                await anyio.sleep(0.05)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["dead", "--limit", "-1"], "'--limit'"),
        (["retries", "--offset", "-2"], "'--offset'"),
        (["worker", "tests.apps.recorder:app", "-t", "-1"], "'--timeout'"),
        (["worker", "tests.apps.recorder:app", "-c", "0"], "'--concurrency'"),
        (["stats", "--json", "true"], "unexpected extra argument"),
    ],
)
async def test_negative_counts_are_refused_in_one_line(
    redis_url: str, args: list[str], needle: str
) -> None:
    with anyio.fail_after(20):  # were the value taken, the worker would run on
        r = await cli(redis_url, *args)
    err = text(r.stderr)
    assert r.returncode == 2, err
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err


async def test_negative_timeout_in_a_settings_file_is_refused(
    redis_url: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "asyncjobs.toml"
    cfg.write_text('app = "tests.apps.recorder:app"\ntimeout = -5\n')
    with anyio.fail_after(20):
        r = await cli(redis_url, "worker", "--config", str(cfg))
    assert r.returncode == 2 and "timeout must be more than 0 seconds" in text(r.stderr)


async def test_flags_show_no_value_in_help(redis_url: str) -> None:
    for command in ("stats", "dead", "worker", "quiet"):
        r = await cli(redis_url, command, "--help")
        out = text(r.stdout)
        assert r.returncode == 0 and "--help" in out, out
        assert "<bool>" not in out, out


async def test_version_flag_and_command(redis_url: str) -> None:
    a = await cli(redis_url, "--version")
    b = await cli(redis_url, "version")
    assert a.returncode == b.returncode == 0
    assert text(a.stdout).strip() == text(b.stdout).strip() == asyncjobs.__version__


# Outside a checkout (a wheel install) the benchmarks package is not importable: made
# so here by a None in sys.modules, which makes its import raise ImportError.
_NO_BENCHMARKS = (
    "import sys; sys.modules['benchmarks'] = None; from asyncjobs.cli import main; "
    "sys.argv = ['asyncjobs', *sys.argv[1:]]; main()"
)


async def test_bench_help_works_without_the_benchmarks_package(redis_url: str) -> None:
    cmd = [sys.executable, "-c", _NO_BENCHMARKS, "bench"]
    env = subprocess_env(redis_url)
    r = await anyio.run_process([*cmd, "--help"], env=env, check=False)
    assert r.returncode == 0 and "asyncjobs bench" in text(r.stdout), text(r.stderr)
    r = await anyio.run_process(cmd, env=env, check=False)
    err = text(r.stderr)
    assert r.returncode == 2 and "ships with the source" in err
    assert len(err.strip().splitlines()) == 1, err


def test_cli_does_not_import_typers_private_click() -> None:
    for module in Path(asyncjobs.cli.__file__).parent.glob("*.py"):
        source = module.read_text()
        assert "typer._click" not in source and "from click" not in source, module.name
