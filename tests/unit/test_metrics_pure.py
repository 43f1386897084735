"""The metrics' pure parts: buckets, percentiles, the increments a batch sends."""

from __future__ import annotations

import pytest

from asyncjobs._metrics import (
    BOUNDS_MS,
    BUCKETS,
    DEAD,
    OK,
    RETRY,
    Recorder,
    minute_stamp,
    parse_total,
    quantile,
)

pytestmark = pytest.mark.timeout(10)


def test_quantile_interpolates_inside_the_bucket() -> None:
    counts = [0] * BUCKETS
    counts[BOUNDS_MS.index(50)] = 100  # 100 values in (30, 50] ms
    assert quantile(counts, 0.5) == pytest.approx(40.0)
    assert quantile(counts, 1.0) == pytest.approx(50.0)
    assert quantile([0] * BUCKETS, 0.5) is None
    over = [0] * BUCKETS
    over[-1] = 3  # beyond the last bound
    assert quantile(over, 0.99) == BOUNDS_MS[-1]


def test_quantile_spans_buckets() -> None:
    counts = [0] * BUCKETS
    counts[0] = 90  # <= 1 ms
    counts[BOUNDS_MS.index(1300)] = 10  # (800, 1300] ms
    assert quantile(counts, 0.5) is not None and quantile(counts, 0.5) <= 1  # type: ignore[operator]
    p95 = quantile(counts, 0.95)
    assert p95 is not None and 800 < p95 <= 1300


def test_recorder_increments() -> None:
    r = Recorder()
    r.record("a.job", "default", 0.004, 0.0005, OK)
    r.record("a.job", "default", 0.004, -1.0, RETRY)  # a negative latency counts as 0
    r.record("a.job", "low", 0.2, 2.0, DEAD)
    minute, total = r.increments()
    assert minute["a.job|n"] == 3 and minute["a.job|f"] == 2
    assert minute["a.job|us"] == 208000
    assert minute["a.job|e3"] == 2  # (3, 5] ms
    assert minute["a.job|l0"] == 2
    assert total["default:a.job|n"] == 2 and total["default:a.job|r"] == 1
    assert total["low:a.job|d"] == 1 and total["low:a.job|f"] == 1
    assert "default:a.job|d" not in total  # zeros are not sent
    assert total[":a.job|e3"] == 2 and total["low:|lus"] == 2_000_000
    assert parse_total("low:a.job|d") == ("low", "a.job", "d")
    assert parse_total(":a:b|e3") == ("", "a:b", "e3")
    assert parse_total("default:|l0") == ("default", "", "l0")
    assert parse_total("junk") is None


def test_take_leaves_it_empty() -> None:
    r = Recorder()
    r.record("j", "q", 0.001, 0.001, OK)
    taken = r.take()
    assert not r and taken
    r.record("j", "q", 0.001, 0.001, OK)
    assert r.increments()[0]["j|n"] == 1 and taken.increments()[0]["j|n"] == 1


def test_minute_stamp_is_utc() -> None:
    assert minute_stamp(0) == "7001010000"
    assert minute_stamp(86400 + 61) == "7001020001"


def test_a_value_on_a_bound_is_in_its_bucket() -> None:
    r = Recorder()
    for b in BOUNDS_MS:
        r.record("j", "q", b / 1000, 0.0, OK)
    r.record("j", "q", BOUNDS_MS[-1] / 1000 * 2, 0.0, OK)  # past the last bound
    minute, _ = r.increments()
    assert [minute[f"j|e{i}"] for i in range(BUCKETS)] == [1] * BUCKETS
