"""Backing off after a failure, and recovering the connections a failover left behind.

Shared by the loops that outlive Redis going away (fetcher, acker, scheduler, heartbeat,
reaper, isolation, the launcher's connect): a capped exponential backoff with jitter, and
the reset that follows a failover (a master demoted to a replica answers ``READONLY``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from .._errors import RedisRefused

if TYPE_CHECKING:
    from .._store import Store

__all__ = ["Backoff", "after_failure"]


class Backoff:
    """Capped exponential backoff with jitter, for reconnect loops."""

    __slots__ = ("_attempt", "_rng", "base", "cap")

    # The cap bounds how long a worker takes to notice Redis is back (issue: resume
    # within a few seconds of an outage ending) while keeping retries rare.
    def __init__(self, base: float = 0.1, cap: float = 2.0) -> None:
        self.base = base
        self.cap = cap
        self._attempt = 0
        self._rng = random.Random()

    def next(self) -> float:
        d: float = min(self.cap, self.base * 2.0**self._attempt)
        self._attempt += 1
        return d * (0.5 + self._rng.random() / 2)

    def reset(self) -> None:
        self._attempt = 0


async def after_failure(store: Store, exc: BaseException, *conns: Any) -> None:
    """After a transient error (:func:`asyncjobs._redis.transient`) in a fetch, ack,
    heartbeat, scheduler or reaper loop: a failover demoted the server at our URL to a
    replica (``READONLY``, mapped to ``RedisRefused(reason="readonly")`` by the store),
    so drop the loop's own connections too; the next command connects afresh and finds
    whichever master answers at the URL."""
    if isinstance(exc, RedisRefused) and exc.reason == "readonly":
        for conn in conns or (None,):
            await store.reset(conn)
