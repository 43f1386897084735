"""The supervisor of ``asyncjobs worker --processes N``: N full worker processes.

Like Sidekiq Enterprise's swarm: each child is an ordinary worker process (its own event
loop, heartbeat, in-flight hash), so every guarantee of one process holds for each. The
supervisor restarts a child that dies (with a growing delay if it keeps dying at once)
and passes signals on: SIGTSTP quiets every child, SIGTERM/SIGINT stop them (a second
SIGINT, hard stop), then it waits for them and exits 0, or 1 if one of them failed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("asyncjobs.supervisor")

FAST_EXIT = 5.0  # a child that dies sooner than this after starting restarts later


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


class Supervisor:
    def __init__(self, n: int, child_argv: Sequence[str]) -> None:
        self.n = n
        self.child_argv = list(child_argv)
        self.children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.stopping = False
        self.restarts = 0
        self._sigints = 0

    def _spawn(self, slot: int) -> None:
        env = {**os.environ, "ASYNCJOBS_SUPERVISED": str(slot)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "asyncjobs", *self.child_argv],
            env=env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.children[slot] = (proc, time.monotonic())
        log.info("started worker process %d (pid %d)", slot, proc.pid)

    def _forward(self, sig: int) -> None:
        for proc, _ in self.children.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if sig == getattr(signal, "SIGTSTP", None):
            log.info("SIGTSTP: quieting %d worker processes", len(self.children))
            self._forward(sig)
            return
        if sig == signal.SIGINT:
            self._sigints += 1
        self.stopping = True
        log.info("%s: stopping %d worker processes", signal.Signals(sig).name, len(self.children))
        self._forward(sig)

    def run(self) -> int:
        sigs = [signal.SIGTERM, signal.SIGINT]
        if hasattr(signal, "SIGTSTP"):
            sigs.append(signal.SIGTSTP)
        for s in sigs:
            signal.signal(s, self._on_signal)
        for slot in range(self.n):
            self._spawn(slot)
        delays = dict.fromkeys(range(self.n), 0.0)
        restart_at: dict[int, float] = {}
        while True:
            time.sleep(0.1)
            alive = 0
            for slot, (proc, started) in list(self.children.items()):
                code = proc.poll()
                if code is None:
                    alive += 1
                    continue
                if self.stopping:
                    continue
                if slot not in restart_at:
                    quick = time.monotonic() - started < FAST_EXIT
                    delays[slot] = min(30.0, delays[slot] * 2 or 0.5) if quick else 0.0
                    restart_at[slot] = time.monotonic() + delays[slot]
                    log.warning(
                        "worker process %d (pid %d) exited with %s; restarting in %.1fs",
                        slot,
                        proc.pid,
                        code,
                        delays[slot],
                    )
                if time.monotonic() >= restart_at[slot]:
                    del restart_at[slot]
                    self.restarts += 1
                    self._spawn(slot)
                    alive += 1
            if self.stopping and alive == 0:
                failed = {p.pid: p.returncode for p, _ in self.children.values() if p.returncode}
                if failed:
                    # A child that could not shut down cleanly (Redis unreachable, say)
                    # said why; the supervisor's exit status must not hide it.
                    log.error("worker processes exited with errors (pid: status): %s", failed)
                    return 1
                log.info("all worker processes stopped")
                return 0
