"""Shard keys, slots and seed nodes, without Redis."""

from __future__ import annotations

import pytest
import redis.exceptions as rexc

import asyncjobs
from asyncjobs import ConfigError, RedisUnavailable
from asyncjobs._keys import SLOTS, Keys, keyslot, shard_of, shard_tags
from asyncjobs._redis import mask_url, seed_nodes, transient
from asyncjobs._settings import CapsuleSpec
from asyncjobs._worker.sharded import split


def test_keyslot_is_redis_cluster_crc16() -> None:
    # Values from the Redis Cluster specification and CLUSTER KEYSLOT.
    assert keyslot("123456789") == 12739
    assert keyslot("foo") == 12182
    assert keyslot("{asyncjobs}:queue:default") == keyslot("asyncjobs") == 2552
    assert keyslot("{}x") == keyslot("{}x")  # an empty tag hashes the whole key


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 6, 16])
def test_shard_tags_fall_in_different_parts_of_the_slot_space(shards: int) -> None:
    tags = shard_tags("shop", shards)
    assert tags[0] == "shop" and len(set(tags)) == shards
    parts = {int(keyslot(f"{{{t}}}") // (SLOTS / shards)) for t in tags}
    assert len(parts) == shards


def test_shard_keys_copy_the_job_keys_and_share_the_rest() -> None:
    home, other = Keys("shop"), Keys("shop", "shop:1")
    assert other.queue("q") == "{shop:1}:queue:q" and other.dead == "{shop:1}:dead"
    assert other.inflight("p") == "{shop:1}:inflight:p"
    assert other.unique("lock") == "{shop:1}:unique:lock"
    for name in ("status", "result", "progress", "periodic_state"):
        assert getattr(other, name)("x") == getattr(home, name)("x")
    assert (other.paused, other.stat_expired) == (home.paused, home.stat_expired)
    assert other.limit("l", "k") == home.limit("l", "k")


def test_shard_of_is_stable_and_spreads() -> None:
    assert shard_of("abc", 1) == 0
    counts = [0, 0, 0]
    for i in range(3000):
        counts[shard_of(f"jid{i}", 3)] += 1
    assert min(counts) > 900


def test_seed_nodes_from_the_url_and_cluster_nodes() -> None:
    assert seed_nodes("redis://h:1/0") == ("redis://h:1/0", [])
    first, seeds = seed_nodes("redis://u:pw@h1:7000,h2:7001/0")
    assert first == "redis://u:pw@h1:7000/0" and seeds == [("h1", 7000), ("h2", 7001)]
    first, seeds = seed_nodes("redis://h1:7000", ["h2:7001", ("h3", 7002)])
    assert seeds == [("h1", 7000), ("h2", 7001), ("h3", 7002)]
    assert mask_url("redis://u:pw@h1:7000,h2:7001/0") == "redis://u:***@h1:7000,h2:7001/0"
    with pytest.raises(ConfigError, match="invalid Redis node 'h2:x'"):
        seed_nodes("redis://h1:7000,h2:x")


async def test_several_seeds_with_cluster_false_are_refused() -> None:
    app = asyncjobs.App("redis://h1:7000,h2:7001", cluster=False)
    with pytest.raises(ConfigError, match="cluster=False"):
        await app.connect()


@pytest.mark.parametrize("bad", [0, 65, True, "3"])
def test_shards_must_be_a_small_whole_number(bad: object) -> None:
    with pytest.raises(ConfigError, match="shards must be a whole number"):
        asyncjobs.App(shards=bad)  # type: ignore[arg-type]


def test_a_cluster_failing_over_is_transient() -> None:
    assert transient(rexc.ClusterDownError("CLUSTERDOWN The cluster is down"))
    assert transient(rexc.TryAgainError("TRYAGAIN"))
    assert transient(rexc.RedisClusterException("All slots are not covered after query"))
    assert transient(RedisUnavailable("x"))
    assert not transient(rexc.RedisClusterException("Cannot execute FT.CURSOR commands"))


def test_each_shard_gets_its_share_of_a_capsule() -> None:
    specs = [CapsuleSpec(name="c", queues=[("q", 1)], concurrency=10)]
    assert [s.concurrency for s in split(specs, 3)] == [4]
    assert [s.concurrency for s in split(specs, 16)] == [1]
