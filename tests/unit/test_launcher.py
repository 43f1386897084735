"""How a worker is wired: a registry and a way to open the store (no Redis needed)."""

from __future__ import annotations

import pytest

import asyncjobs
from asyncjobs._errors import ConfigError
from asyncjobs._registry import Registry
from asyncjobs._settings import CapsuleSpec
from asyncjobs._store import Store
from asyncjobs._worker.launcher import Worker

SPEC = CapsuleSpec(name="default", queues=[("default", 1)], concurrency=1)


def test_a_worker_without_a_way_to_connect_says_what_to_pass() -> None:
    with pytest.raises(ConfigError, match="connect="):
        Worker(Registry(), [SPEC])


def test_a_worker_takes_a_registry_and_a_connect_callable() -> None:
    async def connect() -> Store:  # pragma: no cover - never called here
        raise AssertionError

    worker = Worker(Registry(), [SPEC], connect=connect)
    assert worker.store is None  # connects when it runs


def test_an_app_gives_its_worker_open_store() -> None:
    app = asyncjobs.App("redis://127.0.0.1:1/0")
    worker = app.worker()
    assert worker._open_store == app.open_store
    assert Worker(app, [SPEC])._open_store == app.open_store
