"""``redis+sentinel://`` URLs and ``App(sentinel=...)``: read, written, refused in one line."""

from __future__ import annotations

import pytest

import asyncjobs
from asyncjobs._redis import _check_url, mask_url
from asyncjobs._sentinel import SentinelSpec, parse_sentinel_url, sentinel_url


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("url", "spec"),
    [
        (
            "redis+sentinel://h1:26380,h2/mymaster/3",
            SentinelSpec((("h1", 26380), ("h2", 26379)), "mymaster", 3),
        ),
        (
            "redis+sentinel://:s%40cret@10.0.0.1/cache",
            SentinelSpec((("10.0.0.1", 26379),), "cache", 0, None, "s@cret"),
        ),
        (
            "redis+sentinel://jobs:pw@[::1]:26400,h/m/0?sentinel_password=sp&sentinel_username=su",
            SentinelSpec((("::1", 26400), ("h", 26379)), "m", 0, "jobs", "pw", "su", "sp"),
        ),
        (
            "REDIS+SENTINEL://h:1/m/",
            SentinelSpec((("h", 1),), "m", 0),
        ),
    ],
)
def test_a_sentinel_url_says_sentinels_master_db_and_credentials(
    url: str, spec: SentinelSpec
) -> None:
    assert parse_sentinel_url(url) == spec
    _check_url(url)  # accepted where a Redis URL is


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis+sentinel:///mymaster", "no Sentinel address"),
        ("redis+sentinel://h:26379", "no master name"),
        ("redis+sentinel://h:26379/", "no master name"),
        ("redis+sentinel://h:26379/m/x", "database 'x' is not a number"),
        ("redis+sentinel://h:26379/m/0/extra", "more than a master name"),
        ("redis+sentinel://h:99999/m", "out of range"),
        ("redis+sentinel://h:port/m", "is not a host[:port]"),
        ("redis+sentinel://h/m?master=x", "unknown option 'master'"),
        ("rediss+sentinel://h/m", "TLS through Sentinel is not supported yet"),
    ],
)
def test_a_bad_sentinel_url_is_one_clear_line(url: str, words: str) -> None:
    with pytest.raises(asyncjobs.ConfigError) as info:
        _check_url(url)
    message = str(info.value)
    assert words in message
    assert "redis+sentinel://[:password@]host1:26379,host2:26379/mymaster/0" in message
    assert "\n" not in message


@pytest.mark.timeout(10)
def test_passwords_are_masked_in_a_sentinel_url() -> None:
    url = "redis+sentinel://jobs:topsecret@h1:1,h2:2/m/0?sentinel_password=alsosecret"
    masked = mask_url(url)
    assert "secret" not in masked
    assert masked == "redis+sentinel://jobs:***@h1:1,h2:2/m/0?sentinel_password=***"
    with pytest.raises(asyncjobs.ConfigError) as info:
        _check_url("redis+sentinel://:topsecret@h1:1/m/x")
    assert "topsecret" not in str(info.value)


@pytest.mark.timeout(10)
def test_app_sentinel_writes_the_url() -> None:
    app = asyncjobs.App(sentinel=[("10.0.0.1", 26379), "10.0.0.2:26380"], sentinel_master="jobs")
    assert app.redis_url == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/jobs/0"
    app = asyncjobs.App(
        "redis://u:p%40ss@/2",
        sentinel=["h", "[::1]:5"],
        sentinel_master="jobs",
        sentinel_password="s p",
    )
    assert (
        app.redis_url == "redis+sentinel://u:p%40ss@h:26379,[::1]:5/jobs/2?sentinel_password=s%20p"
    )
    spec = parse_sentinel_url(app.redis_url)
    assert (spec.username, spec.password, spec.sentinel_password) == ("u", "p@ss", "s p")
    assert spec.db == 2
    assert "p@ss" not in repr(app)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"sentinel": [("h", 26379)]}, "needs sentinel_master="),
        ({"sentinel": [], "sentinel_master": "m"}, "list of Sentinel addresses"),
        ({"sentinel": "h:26379", "sentinel_master": "m"}, "list of Sentinel addresses"),
        ({"sentinel": [("h", "26379")], "sentinel_master": "m"}, "expected 'host:port'"),
        ({"sentinel": ["h:x"], "sentinel_master": "m"}, "expected 'host:port'"),
        ({"sentinel_master": "m"}, "go with sentinel="),
        (
            {"redis_url": "redis://10.0.0.9:6379/0", "sentinel": ["h"], "sentinel_master": "m"},
            "the Sentinels name the host",
        ),
        ({"min_replicas": -1}, "min_replicas=-1"),
        ({"min_replicas": True}, "min_replicas=True"),
        ({"replica_timeout": 0}, "replica_timeout=0"),
    ],
)
def test_bad_sentinel_and_durable_settings_are_one_clear_line(
    kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(asyncjobs.ConfigError) as info:
        asyncjobs.App(**kwargs)  # type: ignore[arg-type]
    assert words in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.timeout(10)
def test_sentinel_url_round_trips() -> None:
    url = sentinel_url([("a", 1), ("b", 2)], "m/x", sentinel_password="p&q")
    spec = parse_sentinel_url(url)
    assert spec.master == "m/x"
    assert spec.sentinel_password == "p&q"
    assert spec.sentinels == (("a", 1), ("b", 2))


@pytest.mark.timeout(10)
def test_not_replicated_keeps_its_counts_when_pickled() -> None:
    import pickle

    exc = asyncjobs.NotReplicated("the job reached 0 replica(s) of the 1 asked", 0, 1)
    again = pickle.loads(pickle.dumps(exc))
    assert (type(again), str(again), again.acked, again.wanted) == (
        asyncjobs.NotReplicated,
        str(exc),
        0,
        1,
    )
    assert isinstance(again, asyncjobs.AsyncJobsError)


@pytest.mark.timeout(10)
def test_no_master_found_is_one_short_line() -> None:
    from redis.asyncio.sentinel import MasterNotFoundError

    from asyncjobs._redis import map_error

    url = "redis+sentinel://:pw@h1,h2/mymaster/0"
    long = "No master found for 'mymaster' : <redis.asyncio.client.Redis(...)> - Error 111"
    for raw, words in [
        (
            MasterNotFoundError("No master found for 'mymaster'"),
            "the Sentinels name no master for it now (one is down, or a failover is under way)",
        ),
        (MasterNotFoundError(long), "no Sentinel answered"),
    ]:
        mapped = map_error(url, raw)
        assert isinstance(mapped, asyncjobs.RedisUnavailable)
        where = "cannot reach Redis at redis+sentinel://:***@h1,h2/mymaster/0"
        assert str(mapped) == f"{where}: {words}"
        assert "Redis(" not in str(mapped)
