"""Rate limiters' pure parts (#13): definitions, keys, the reschedule backoff."""

from __future__ import annotations

import random

import pytest

from asyncjobs import ConfigError, OverLimit
from asyncjobs._keys import Keys
from asyncjobs._limits import LimitSpec, check_key, reschedule_delay


def test_spec_validation_names_what_is_wrong() -> None:
    LimitSpec("ok", "window", 10, per=0.5, sliding=True)
    with pytest.raises(ConfigError, match="per must be at least 0.001 seconds"):
        LimitSpec("x", "window", 10, per=0)
    with pytest.raises(ConfigError, match="lease must be"):
        LimitSpec("x", "concurrent", 1, lease=float("inf"))
    with pytest.raises(ConfigError, match="reschedules must be"):
        LimitSpec("x", "concurrent", 1, reschedules=-1)
    with pytest.raises(ConfigError, match="limit must be a whole number"):
        LimitSpec("x", "bucket", True)
    with pytest.raises(ConfigError, match="cost must be a whole number"):
        LimitSpec("x", "points", 5).check_cost(0)


def test_keys_are_in_the_hash_tag() -> None:
    keys = Keys("ns")
    assert keys.limit("stripe") == "{ns}:limit:stripe"
    assert keys.limit("stripe", "42") == "{ns}:limit:stripe:42"
    assert check_key("stripe", 42) == "42"
    assert check_key("stripe", None) is None
    for bad in ("", "a b", "{x}", 1.5, True):
        with pytest.raises(ConfigError, match="key must be"):
            check_key("stripe", bad)


def test_reschedule_delay_waits_for_room_plus_a_doubling_jitter() -> None:
    rng = random.Random(1)
    for attempt in range(30):
        d = reschedule_delay(0.5, attempt, rng)
        assert 0.5 + 0.01 <= d <= 0.5 + min(60.0, 0.1 * 2**attempt)
    assert max(reschedule_delay(0, 25, rng, cap=1.0) for _ in range(100)) <= 1.0
    # Spread: jobs over the limit together do not all come back together.
    delays = {round(reschedule_delay(0, 3, rng), 3) for _ in range(50)}
    assert len(delays) > 40


def test_over_limit_says_which_limiter() -> None:
    exc = OverLimit("stripe", "42", 0.25)
    assert str(exc) == "over the limit of rate limiter stripe (key '42'): room in 0.250s"
    assert str(OverLimit("exports", None, 0)).endswith("exports: no slot is free")
