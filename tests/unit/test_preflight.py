"""The worker's startup look at the server (#11): pure decisions from an INFO reply."""

from __future__ import annotations

from asyncjobs._worker.preflight import problems

URL = "redis://h:6379/0"


def test_old_redis_is_refused_naming_the_version() -> None:
    refusal, _ = problems({"redis_version": "6.0.16", "maxmemory_policy": "noeviction"}, URL)
    assert refusal == (
        "Redis 6.0.16 at redis://h:6379/0 is too old: asyncjobs needs Redis 6.2 or newer "
        "(LMOVE/BLMOVE, RPOP with a count); upgrade Redis"
    )
    assert problems({"redis_version": "5.0.7"}, URL)[0] is not None


def test_supported_versions_pass() -> None:
    for v in ("6.2.0", "6.2.14", "7.0.15", "7.4.1", "8.0.0", "10.0.0"):
        assert problems({"redis_version": v, "maxmemory_policy": "noeviction"}, URL) == (
            None,
            [],
        ), v


def test_evicting_policy_is_a_warning() -> None:
    refusal, warnings = problems({"redis_version": "7.2.4", "maxmemory_policy": "allkeys-lru"}, URL)
    assert refusal is None
    assert warnings == [
        "Redis at redis://h:6379/0 has maxmemory-policy allkeys-lru: when it is full it "
        "evicts keys, and an evicted key is lost jobs; set maxmemory-policy noeviction "
        "(see the deployment guide)"
    ]


def test_cluster_reply_checks_every_node() -> None:
    info = {
        "127.0.0.1:7000": {"redis_version": "7.2.0", "maxmemory_policy": "noeviction"},
        "127.0.0.1:7001": {"redis_version": "6.0.9", "maxmemory_policy": "volatile-lru"},
    }
    refusal, warnings = problems(info, URL)
    assert refusal is not None and "Redis 6.0.9" in refusal
    assert len(warnings) == 1
