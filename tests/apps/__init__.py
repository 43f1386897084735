"""Job apps that the tests run in worker subprocesses (``asyncjobs worker tests.apps.X:app``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

import asyncjobs


def evidence_client(app: asyncjobs.App, **options: Any) -> Callable[[], aioredis.Redis]:
    """``r()``: the Redis client a test app's jobs write their evidence with, made at the
    first call (in the worker process, once ``app.redis_url`` is the test's) and kept."""
    made: list[aioredis.Redis] = []

    def r() -> aioredis.Redis:
        if not made:
            made.append(aioredis.Redis.from_url(app.redis_url, **options))
        return made[0]

    return r
