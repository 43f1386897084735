"""The supervisor of ``asyncjobs worker --processes N``: N full worker processes.

Like Sidekiq Enterprise's swarm: each child is an ordinary worker process (its own event
loop, heartbeat, in-flight hash), so every guarantee of one process holds for each. The
supervisor restarts a child that dies, with a growing delay if it keeps dying at once (a
child that exits :data:`REPLACE_EXIT`, over its memory limit, restarts at once and is
not counted, unless it does so twice in a row within ``FAST_EXIT`` of starting), and
passes signals on: SIGTSTP quiets every child, SIGTERM/SIGINT stop them (a second
SIGINT, hard stop), then it waits for them and exits 0, or 1 if one of them failed.

SIGUSR2 is a rolling restart: one slot at a time, a new child (importing the app's code
afresh) is started next to the old one; once the new one is fetching, the old one is
sent SIGTERM (it quiets at once and finishes its jobs), and once it has exited the next
slot follows. So N processes are fetching at every moment (N + 1 for a while).

The children tell the supervisor they are fetching over the systemd notification
protocol (``READY=1`` on ``NOTIFY_SOCKET``, which the supervisor points at a socket of
its own); on Linux the kernel vouches for the sender's pid (``SO_PASSCRED``).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from . import systemd
from .memory import REPLACE_EXIT

log = logging.getLogger("asyncjobs.supervisor")

FAST_EXIT = 5.0  # a child that dies sooner than this after starting restarts later
# A rolling restart gives up (keeping the old child) on a new child that is not fetching
# after this long: new code that hangs at import, say.
READY_TIMEOUT = 60.0
TICK = 0.1

Child = tuple["subprocess.Popen[bytes]", float]  # the process, when it started (monotonic)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies (even by SIGKILL),
    so no worker is left orphaned; it then shuts down gracefully as usual."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - no glibc
        pass


def resolve_processes(value: int | str) -> int:
    """``N`` or ``auto`` (the number of usable cores)."""
    from .._errors import ConfigError

    if isinstance(value, str):
        if value == "auto":
            try:
                return max(1, len(os.sched_getaffinity(0)))
            except AttributeError:  # pragma: no cover - not Linux
                return max(1, os.cpu_count() or 1)
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"invalid --processes {value!r}: a whole number or auto") from None
    if value < 1:
        raise ConfigError(f"invalid --processes {value}: at least 1")
    return value


@dataclass
class _Roll:
    """A rolling restart under way: the slots still to replace, the new child of the
    current slot (until it is fetching), the old child it replaced (until it exits)."""

    slots: list[int]
    new: tuple[int, subprocess.Popen[bytes], float] | None = None
    old: subprocess.Popen[bytes] | None = None
    replaced: list[int] = field(default_factory=list)


class _Notifications:
    """The datagram socket the children's ``READY=1`` arrives on."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.creds = sys.platform == "linux" and hasattr(socket, "SO_PASSCRED")
        if sys.platform == "linux":
            name = f"asyncjobs-supervisor-{os.getpid()}-{os.urandom(6).hex()}"
            self.sock.bind("\0" + name)  # abstract: nothing left on disk
            self.address = "@" + name
        else:  # pragma: no cover - not Linux
            self._dir = tempfile.TemporaryDirectory(prefix="asyncjobs-")
            self.address = os.path.join(self._dir.name, "notify")
            self.sock.bind(self.address)
        if self.creds:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)

    def wait(self, timeout: float) -> list[tuple[int | None, str]]:
        """The messages that arrive within ``timeout`` (or are waiting): (pid, text)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            readable = []
        out: list[tuple[int | None, str]] = []
        if not readable:
            return out
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return out
            pid: int | None = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == getattr(socket, "SCM_CREDENTIALS", -1):
                    pid = struct.unpack("iII", payload[:12])[0]
            out.append((pid, data.decode(errors="replace")))

    def close(self) -> None:
        self.sock.close()
        if self._dir is not None:  # pragma: no cover - not Linux
            self._dir.cleanup()


def _sender(pid: int | None, message: str) -> int | None:
    """The pid a message is from: the kernel's word, else the process id the worker
    names in ``STATUS=... (host:pid:random)``."""
    if pid:
        return pid
    for line in message.splitlines():  # pragma: no cover - not Linux
        if line.startswith("STATUS=") and line.endswith(")") and "(" in line:
            try:
                return int(line[line.rindex("(") + 1 : -1].split(":")[-2])
            except (ValueError, IndexError):
                return None
    return None  # pragma: no cover


class Supervisor:
    def __init__(self, n: int, child_argv: Sequence[str]) -> None:
        self.n = n
        self.child_argv = list(child_argv)
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.restarts = 0
        self.replaced = 0  # children replaced over their memory limit
        self.rolls = 0  # rolling restarts completed
        self._sigints = 0
        self._quiet = False
        self._ready: set[int] = set()  # pids that said READY=1
        self._all_ready = False
        self._roll: _Roll | None = None
        self._roll_again = False
        self._retiring: list[subprocess.Popen[bytes]] = []  # stopping, not replaced
        self._notify: _Notifications | None = None
        self._signals: list[int] = []
        self._restart_at: dict[int, float] = {}  # slot → when its dead child restarts

    def _start(self, slot: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "ASYNCJOBS_SUPERVISED": str(slot)}
        if self._notify is not None:
            env["NOTIFY_SOCKET"] = self._notify.address
        proc = subprocess.Popen(
            [sys.executable, "-m", "asyncjobs", *self.child_argv],
            env=env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self._ready.discard(proc.pid)  # a pid reused: not ready until it says so
        log.info("started worker process %d (pid %d)", slot, proc.pid)
        return proc

    def _spawn(self, slot: int) -> None:
        self.children[slot] = (self._start(slot), time.monotonic())

    def _live(self) -> list[subprocess.Popen[bytes]]:
        procs = [proc for proc, _ in self.children.values()]
        procs += self._retiring
        if self._roll is not None:
            if self._roll.new is not None:
                procs.append(self._roll.new[1])
            if self._roll.old is not None:
                procs.append(self._roll.old)
        return [p for p in procs if p.poll() is None]

    def _forward(self, sig: int) -> None:
        procs = [proc for proc, _ in self.children.values()]
        if sig == signal.SIGINT and self._sigints > 1:
            # A hard stop reaches the processes a rolling restart is stopping too (they
            # had their SIGTERM: another signal would be a second one for them).
            procs += self._retiring
            if self._roll is not None and self._roll.old is not None:
                procs.append(self._roll.old)
        for proc in procs:
            self._send(proc, sig)

    def _end_roll(self) -> None:
        """Leave a rolling restart where it is: its processes are stopped with the rest."""
        roll, self._roll = self._roll, None
        self._roll_again = False
        if roll is None:
            return
        if roll.new is not None:
            self._retiring.append(roll.new[1])
            self._send(roll.new[1], signal.SIGTERM)
        if roll.old is not None:
            self._retiring.append(roll.old)

    @staticmethod
    def _send(proc: subprocess.Popen[bytes], sig: int) -> None:
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # Handled between two ticks of the loop, never in the middle of one.
        self._signals.append(sig)

    def _handle(self, sig: int) -> None:
        if sig == getattr(signal, "SIGUSR2", None):
            self._rolling_restart()
            return
        if sig == getattr(signal, "SIGTSTP", None):
            log.info("SIGTSTP: quieting %d worker processes", len(self.children))
            self._quiet = True
            if self._roll is not None:
                log.warning("SIGTSTP: the rolling restart under way stops here")
                self._end_roll()
            self._forward(sig)
            return
        if sig == signal.SIGINT:
            self._sigints += 1
        if not self.stopping:
            systemd.notify("STOPPING=1")
        self.stopping = True
        self._end_roll()
        log.info("%s: stopping %d worker processes", signal.Signals(sig).name, len(self.children))
        self._forward(sig)

    def _rolling_restart(self) -> None:
        if self.stopping:
            return
        if self._quiet:
            log.warning(
                "SIGUSR2: no rolling restart of quiet worker processes (new ones would "
                "fetch); stop and start them instead"
            )
            return
        if self._roll is not None:
            log.info("SIGUSR2: another rolling restart will follow the one under way")
            self._roll_again = True
            return
        log.info("SIGUSR2: rolling restart of %d worker processes, one at a time", self.n)
        systemd.notify(f"STATUS=rolling restart of {self.n} worker processes")
        self._roll = _Roll(slots=sorted(self.children))

    def _step_roll(self) -> None:
        """Move the rolling restart on by what has happened since the last tick."""
        roll = self._roll
        assert roll is not None
        if roll.old is not None:
            if roll.old.poll() is None:
                return  # one slot at a time: the old child is finishing its jobs
            if roll.old.returncode:
                log.warning(
                    "old worker process (pid %d) exited with %s", roll.old.pid, roll.old.returncode
                )
            roll.old = None
        if roll.new is not None:
            slot, proc, started = roll.new
            if proc.pid in self._ready:
                old, _ = self.children[slot]
                self.children[slot] = (proc, started)
                self._restart_at.pop(slot, None)  # if the old one had died meanwhile
                roll.new = None
                roll.replaced.append(slot)
                log.info(
                    "worker process %d: pid %d is fetching; stopping pid %d",
                    slot,
                    proc.pid,
                    old.pid,
                )
                self._send(old, signal.SIGTERM)
                roll.old = old
                return
            code = proc.poll()
            late = time.monotonic() - started > READY_TIMEOUT
            if code is None and not late:
                return
            log.error(
                "rolling restart stopped: the new worker process %d (pid %d) %s; the "
                "processes not yet replaced keep running",
                slot,
                proc.pid,
                f"exited with {code} before fetching"
                if code is not None
                else f"was not fetching after {READY_TIMEOUT:.0f}s",
            )
            self._end_roll()
            return
        if roll.slots:
            slot = roll.slots.pop(0)
            if slot in self.children:
                roll.new = (slot, self._start(slot), time.monotonic())
            return
        self._roll = None
        self.rolls += 1
        log.info("rolling restart done: %d worker processes replaced", len(roll.replaced))
        systemd.notify(f"STATUS={self.n} worker processes fetching (rolled)")
        if self._roll_again:
            self._roll_again = False
            self._rolling_restart()

    def _read_notifications(self, timeout: float) -> None:
        if self._notify is None:
            time.sleep(timeout)
            return
        for pid, message in self._notify.wait(timeout):
            sender = _sender(pid, message)
            if sender is not None and "READY=1" in message.splitlines():
                self._ready.add(sender)
        if not self._all_ready and not self.stopping:
            pids = {proc.pid for proc, _ in self.children.values()}
            if len(pids) == self.n and pids <= self._ready:
                self._all_ready = True
                # Type=notify works for the group: ready once every child is fetching.
                systemd.notify(f"READY=1\nSTATUS={self.n} worker processes fetching")

    def run(self) -> int:
        sigs = [signal.SIGTERM, signal.SIGINT]
        sigs += [getattr(signal, n) for n in ("SIGTSTP", "SIGUSR2") if hasattr(signal, n)]
        for s in sigs:
            signal.signal(s, self._on_signal)
        try:
            self._notify = _Notifications()
        except OSError as exc:  # pragma: no cover - no AF_UNIX datagrams
            log.warning("no rolling restarts: cannot open a notification socket (%s)", exc)
        try:
            return self._run()
        finally:
            if self._notify is not None:
                self._notify.close()

    def _run(self) -> int:
        for slot in range(self.n):
            self._spawn(slot)
        delays = dict.fromkeys(range(self.n), 0.0)
        restart_at = self._restart_at
        quick_replace: dict[int, bool] = {}  # the slot's last exit: over memory, quickly
        while True:
            self._read_notifications(0 if self._signals else TICK)
            while self._signals:
                self._handle(self._signals.pop(0))
            for proc in list(self._retiring):
                if proc.poll() is not None:
                    self._retiring.remove(proc)
            if self._roll is not None and not self.stopping:
                self._step_roll()
            alive = len(self._live())
            for slot, (proc, started) in list(self.children.items()):
                code = proc.poll()
                if code is None or self.stopping:
                    continue
                roll = self._roll
                if roll is not None and roll.new is not None and roll.new[0] == slot:
                    continue  # its replacement is on its way
                if slot not in restart_at:
                    quick = time.monotonic() - started < FAST_EXIT
                    if code == REPLACE_EXIT and not (quick and quick_replace.get(slot)):
                        # Over its memory limit: not a crash. (Twice in a row within
                        # FAST_EXIT of starting is a limit too low: the backoff applies.)
                        quick_replace[slot] = quick
                        delays[slot] = 0.0
                        self.replaced += 1
                        log.info(
                            "worker process %d (pid %d) exited over its memory limit; "
                            "replacing it now",
                            slot,
                            proc.pid,
                        )
                    else:
                        delays[slot] = min(30.0, delays[slot] * 2 or 0.5) if quick else 0.0
                        log.warning(
                            "worker process %d (pid %d) exited with %s; restarting in %.1fs",
                            slot,
                            proc.pid,
                            code,
                            delays[slot],
                        )
                    restart_at[slot] = time.monotonic() + delays[slot]
                if time.monotonic() >= restart_at[slot]:
                    del restart_at[slot]
                    self.restarts += 1
                    self._spawn(slot)
                    alive += 1
            if self.stopping and alive == 0:
                failed = {
                    p.pid: p.returncode
                    for p, _ in self.children.values()
                    if p.returncode and p.returncode != REPLACE_EXIT  # 75: a clean stop
                }
                if failed:
                    # A child that could not shut down cleanly (Redis unreachable, say)
                    # said why; the supervisor's exit status must not hide it.
                    log.error("worker processes exited with errors (pid: status): %s", failed)
                    return 1
                log.info("all worker processes stopped")
                return 0
