"""systemd integration: ``Type=notify`` readiness, stopping and watchdog pings.

Speaks the ``NOTIFY_SOCKET`` datagram protocol directly (a few lines; no dependency).
Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

from .._errors import ConfigError

log = logging.getLogger("asyncjobs.systemd")


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to systemd; False when not under systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %r: %s", path, exc)
        return False
    return True


# The shortest WatchdogSec= accepted: below a second, an event loop busy for a moment (a
# garbage collection, a job that blocks) would have systemd kill a healthy worker, and
# the pings would cost more than they tell.
MIN_WATCHDOG_USEC = 1_000_000


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of ``WatchdogSec``), or None when off.
    :class:`ConfigError` for a ``WATCHDOG_USEC`` below one second, or not a number."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        raise ConfigError(
            f"WATCHDOG_USEC={usec!r} is not a number of microseconds: set WatchdogSec= "
            "in the unit to 1s or more"
        ) from None
    if value < MIN_WATCHDOG_USEC:
        raise ConfigError(
            f"WATCHDOG_USEC={value} is below one second: set WatchdogSec= in the unit to "
            "1s or more (a few times the longest pause of the event loop; 30s is safe)"
        )
    return value / 1e6 / 2
