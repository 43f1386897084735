"""Limits of the worker's settings (#11): the shutdown timeout, systemd's watchdog, and
the scheduler's poll as the docs describe it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import asyncjobs
from asyncjobs._worker import systemd
from asyncjobs._worker.scheduler import next_wait

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("timeout", [0, 0.0, -1.0])
def test_worker_refuses_a_timeout_of_zero_or_less(timeout: float) -> None:
    app = asyncjobs.App()
    with pytest.raises(asyncjobs.ConfigError, match="timeout must be more than 0 seconds"):
        app.worker(timeout=timeout)


@pytest.mark.parametrize("usec", ["1", "250000", "999999", "0"])
def test_watchdog_below_one_second_is_refused(usec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with pytest.raises(asyncjobs.ConfigError, match=r"below one second: set WatchdogSec="):
        systemd.watchdog_interval()


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    assert systemd.watchdog_interval() == 0.5
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    with pytest.raises(asyncjobs.ConfigError, match="not a number of microseconds"):
        systemd.watchdog_interval()
    monkeypatch.delenv("WATCHDOG_USEC")
    assert systemd.watchdog_interval() is None


def test_scheduler_poll_is_shared_by_the_processes_as_documented() -> None:
    """Each of N processes waits poll * N (0.5 to 1.5 times), so together they look
    about every poll seconds; the scheduling page says so, not "at least every"."""
    rng = random.Random(1)
    waits = [next_wait(0.0, None, 5.0, 10, rng) for _ in range(1000)]
    assert 25.0 <= min(waits) and max(waits) <= 75.0
    page = (DOCS / "concepts" / "scheduling.md").read_text()
    assert "at least every `scheduler_poll`" not in page
    assert "times the number of live worker processes" in page
