"""Pure modules: no Redis, no sleeping."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

import asyncjobs
from asyncjobs import ConfigError, Permanent
from asyncjobs._keys import Keys
from asyncjobs._payload import ENCODER, inflight_field, new_jid, valid_jid
from asyncjobs._queues import QueueOrder, parse_queue_spec
from asyncjobs._retry import backoff, decide
from asyncjobs._settings import capsules_from, load_settings
from asyncjobs._worker.scheduler import next_wait


def test_keys_share_one_hash_tag() -> None:
    k = Keys("app")
    for key in (k.queue("a"), k.wake("a"), k.schedule, k.retry, k.dead, k.inflight("p"), k.queues):
        assert key.startswith("{app}:")
    with pytest.raises(ConfigError):
        Keys("bad{tag}")


def test_queue_spec() -> None:
    assert parse_queue_spec("critical,6") == ("critical", 6)
    assert parse_queue_spec("low") == ("low", 1)
    for bad in ("critical,x", ",3", "a,0"):
        with pytest.raises(ConfigError):
            parse_queue_spec(bad)


def test_weighted_draw_follows_weights() -> None:
    order = QueueOrder([("a", 3), ("b", 2), ("c", 1)], rng=random.Random(1))
    totals = {"a": 0, "b": 0, "c": 0}
    for _ in range(200):
        idx, counts = order.draw(100)
        assert sum(counts) == 100
        assert sorted(idx) == [0, 1, 2]
        for i, c in zip(idx, counts, strict=True):
            totals[order.names[i]] += c
    assert totals["a"] / 20000 == pytest.approx(0.5, abs=0.02)
    assert totals["b"] / 20000 == pytest.approx(1 / 3, abs=0.02)
    assert totals["c"] / 20000 == pytest.approx(1 / 6, abs=0.02)


@pytest.mark.timeout(60)
def test_weighted_fallback_order_is_a_weighted_shuffle() -> None:
    # Sidekiq's order: the first queue drawn by weight, the next by weight from the rest.
    order = QueueOrder([("a", 3), ("b", 2), ("c", 1)], rng=random.Random(2))
    firsts = {0: 0, 1: 0, 2: 0}
    abc = 0
    for _ in range(20_000):
        idx, _counts = order.draw(1)
        firsts[idx[0]] += 1
        abc += idx == [0, 1, 2]
    assert firsts[0] / 20_000 == pytest.approx(3 / 6, abs=0.02)
    assert firsts[1] / 20_000 == pytest.approx(2 / 6, abs=0.02)
    assert abc / 20_000 == pytest.approx(3 / 6 * 2 / 3, abs=0.02)  # a, then b of b+c


@pytest.mark.timeout(60)
def test_weighted_draw_over_many_queues_is_cheap() -> None:
    # A fetch plan for 2,000 queues: the one-at-a-time weighted draws it replaced were
    # quadratic (about 45 ms here, 11 ms for 1,000 queues: a 4,400 jobs/s ceiling in the
    # benchmarks' queues curve); the keyed shuffle takes about a millisecond.
    order = QueueOrder([(f"q{i}", 1 + i % 3) for i in range(2_000)], rng=random.Random(3))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        idx, counts = order.draw(50)
        best = min(best, time.perf_counter() - t0)
        assert sorted(idx) == list(range(2_000)) and sum(counts) == 50
    assert best < 0.010


def test_strict_order() -> None:
    order = QueueOrder([("a", 1), ("b", 1)], strict=True)
    assert order.draw(10) == ([0, 1], [10, 0])


def test_inflight_field_mirrors_fetch_script() -> None:
    assert inflight_field(b'{"jid":"abc","class":"x"}') == b"abc"
    assert inflight_field(b"garbage") == b"garbage"
    assert len(new_jid()) == 24 and valid_jid(new_jid())
    assert not valid_jid('a"b')


def test_what_json_cannot_hold_is_a_type_error() -> None:
    """The payload encoder's hook refuses other objects with msgspec's own TypeError, which
    the callers catch (an argument refused by name, a result stored as null, a progress
    report's ValueError): not NotImplementedError, which they did not, and which left a
    keep_result job that returned one in flight."""
    app = asyncjobs.App("redis://127.0.0.1:1/0")

    @app.job(name="anything")
    async def anything(x: Any) -> None: ...

    with pytest.raises(TypeError, match="type object is unsupported"):
        ENCODER.encode({"x": object()})
    with pytest.raises(asyncjobs.ArgumentError, match="argument 'x' cannot be encoded"):
        anything.encode_args((object(),), {})
    jid = new_jid()
    assert ENCODER.encode([asyncjobs.JobHandle(jid, anything)]) == f'["{jid}"]'.encode()


def test_backoff_matches_sidekiq() -> None:
    rng = random.Random(0)
    for count in range(5):
        d = backoff(count, rng)
        assert count**4 + 15 <= d < count**4 + 15 + 9 * (count + 1) + 1


def test_decide() -> None:
    rng = random.Random(0)
    kw: dict[str, Any] = {"now": 100.0, "rng": rng, "dead": True}
    assert decide(exc=ValueError(), retry_count=0, retry=1, **kw).target == "retry"
    assert decide(exc=ValueError(), retry_count=1, retry=1, **kw).target == "dead"
    assert (
        decide(exc=ValueError(), retry_count=0, retry=0, now=1.0, rng=rng, dead=False).target
        == "discard"
    )
    assert decide(exc=Permanent(), retry_count=0, retry=5, **kw).target == "dead"
    d = decide(exc=ValueError(), retry_count=0, retry=5, retry_in=lambda c, e: 2, **kw)
    assert (d.target, d.at) == ("retry", 102.0)
    assert (
        decide(exc=ValueError(), retry_count=0, retry=5, retry_in=lambda c, e: "kill", **kw).target
        == "dead"
    )
    assert (
        decide(
            exc=ValueError(), retry_count=0, retry=5, retry_in=lambda c, e: "discard", **kw
        ).target
        == "discard"
    )
    assert (
        decide(exc=KeyError(), retry_count=0, retry=5, discard_on=(KeyError,), **kw).target
        == "discard"
    )
    assert (
        decide(exc=KeyError(), retry_count=0, retry=5, dead_on=(KeyError,), **kw).target == "dead"
    )


def test_scheduler_wait() -> None:
    rng = random.Random(0)
    assert next_wait(10.0, 10.5, 5.0, 1, rng) == pytest.approx(0.5)
    assert next_wait(10.0, 9.0, 5.0, 1, rng) == 0.0
    w = next_wait(10.0, None, 5.0, 4, rng)
    assert 10.0 <= w <= 30.0


def test_settings_file(tmp_path: Path) -> None:
    f = tmp_path / "asyncjobs.toml"
    f.write_text(
        'queues = ["critical,6", "default,5"]\nconcurrency = 20\n'
        '[[capsules]]\nname = "single"\nqueues = ["serial"]\nconcurrency = 1\nstrict = true\n'
    )
    specs = capsules_from(load_settings(f))
    assert [(s.name, list(s.queues), s.concurrency) for s in specs] == [
        ("default", [("critical", 6), ("default", 5)], 20),
        ("single", [("serial", 1)], 1),
    ]
    f.write_text("concurency = 3\n")
    with pytest.raises(ConfigError, match="unknown field `concurency`"):
        load_settings(f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
