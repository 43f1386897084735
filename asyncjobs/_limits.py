"""Rate limiters' definitions and decisions (pure): what a limiter is, its key, and
how long a job over the limit waits before it runs again.

The atomic part (acquire, release, renew) is one Lua script per kind
(``_scripts/limit_*.lua``, called by ``_store/_limits.py``); the runtime object
(``async with limiter:``, the executor's gate) is ``_worker/limits.py``.
"""

from __future__ import annotations

import math
import random
from typing import Literal

import msgspec

from ._errors import AsyncJobsError, ConfigError

__all__ = ["KINDS", "LimitSpec", "LimiterState", "OverLimit", "check_key", "reschedule_delay"]

Kind = Literal["concurrent", "window", "bucket", "leaky", "points"]
KINDS: tuple[str, ...] = ("concurrent", "window", "bucket", "leaky", "points")

# The longest wait between two tries of a job over its limit (seconds): the jitter
# doubles with each reschedule up to this.
MAX_BACKOFF = 60.0


class OverLimit(AsyncJobsError):
    """A rate limiter refused: ``async with limiter:`` over the limit raises it; a job
    that lets it out (or is declared with ``limits=[...]``) is rescheduled, and fails
    with it once it was rescheduled its limiter's ``reschedules`` times."""

    def __init__(
        self,
        name: str,
        key: str | None,
        retry_after: float,
        message: str = "",
        *,
        reschedules: int = 20,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.name = name
        self.key = key
        self.retry_after = retry_after
        self.reschedules = reschedules
        self.max_backoff = max_backoff
        where = name if key is None else f"{name} (key {key!r})"
        when = f"room in {retry_after:.3f}s" if retry_after > 0 else "no slot is free"
        super().__init__(message or f"over the limit of rate limiter {where}: {when}")


class LimitSpec(msgspec.Struct, frozen=True):
    """One limiter's definition. ``limit`` is a count (concurrent, window) or the
    bucket's size (bucket, leaky, points); ``per`` the interval in seconds (for
    ``concurrent``, unused); ``lease`` how long a concurrent slot is held by a holder
    that stopped renewing it (it died)."""

    name: str
    kind: str
    limit: int
    per: float = 1.0
    sliding: bool = False
    lease: float = 30.0
    reschedules: int = 20
    max_backoff: float = MAX_BACKOFF  # the jitter's cap when rescheduled (seconds)
    wait: float = 0.0  # ``async with limiter`` waits up to this for a slot, then raises

    def __post_init__(self) -> None:
        what = f"limiter {self.name!r}"
        if not self.name or any(c in self.name for c in "{}: \t\n"):
            raise ConfigError(
                f"invalid limiter name {self.name!r}: use a non-empty name without "
                "spaces, colons or braces"
            )
        if self.kind not in KINDS:
            raise ConfigError(f"{what}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigError(f"{what}: limit must be a whole number >= 1, got {self.limit!r}")
        for field in ("per", "lease", "max_backoff"):
            value = getattr(self, field)
            if not isinstance(value, int | float) or not 0.001 <= value < math.inf:
                raise ConfigError(f"{what}: {field} must be at least 0.001 seconds, got {value!r}")
        if (
            isinstance(self.reschedules, bool)
            or not isinstance(self.reschedules, int)
            or (self.reschedules < 0)
        ):
            raise ConfigError(f"{what}: reschedules must be a whole number >= 0")
        if not isinstance(self.wait, int | float) or not 0 <= self.wait < math.inf:
            raise ConfigError(f"{what}: wait must be a number of seconds >= 0")

    def check_cost(self, cost: int) -> None:
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ConfigError(f"limiter {self.name!r}: cost must be a whole number >= 1")
        if cost != 1 and self.kind == "concurrent":
            raise ConfigError(f"limiter {self.name!r}: a concurrent limiter has no cost")
        if cost > self.limit:
            raise ConfigError(
                f"limiter {self.name!r}: a cost of {cost} is more than its limit of "
                f"{self.limit}: it would never be allowed"
            )


class LimiterState(msgspec.Struct, frozen=True):
    """A limiter as it is now (``api.limiter_state``). ``used`` is what is taken: the
    holders (concurrent), the calls or points in the current window (window), the
    points spent and not yet refilled or drained (bucket, points, leaky);
    ``available`` is ``limit - used``; ``holders`` the concurrent leases' tokens with
    the seconds left on each."""

    name: str
    kind: str
    key: str | None
    limit: int
    per: float
    used: float
    available: float
    holders: dict[str, float] = {}


def check_key(name: str, key: object) -> str | None:
    """A limiter key as stored: None, or a non-empty string (an int is turned into one)."""
    if key is None:
        return None
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    if not isinstance(key, str) or not key or any(c in key for c in "{} \t\n"):
        raise ConfigError(
            f"limiter {name!r}: key must be a non-empty string (or an int) without spaces "
            f"or braces, got {key!r}"
        )
    return key


def reschedule_delay(
    retry_after: float, attempt: int, rng: random.Random, cap: float = MAX_BACKOFF
) -> float:
    """Seconds until a job over its limit is tried again: when the limiter says a slot
    frees (``retry_after``; 0 if it cannot tell), plus a jitter that doubles with each
    attempt (100 ms, 200 ms, ... up to ``cap``, a minute by default), so waiting jobs do
    not all come back at once."""
    spread = max(0.02, min(cap, 0.1 * 2 ** min(attempt, 20)))
    return max(0.0, retry_after) + rng.uniform(0.01, spread)
