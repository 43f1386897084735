"""Fixtures of the fault suite: every test starts its own redis-server(s) and workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults._support import Fleet


@pytest.fixture
def fleets(tmp_path: Path) -> Iterator[Callable[[str, Path], Fleet]]:
    """``fleets(url, config)``: a :class:`Fleet` of worker subprocesses, all killed at
    teardown; their logs are printed then (pytest shows them when the test failed)."""
    made: list[Fleet] = []

    def make(url: str, config: Path) -> Fleet:
        fleet = Fleet(url, config, tmp_path)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()
        print(fleet.tails())  # noqa: T201
