"""The worker's decisions, without Redis: fetch sizes, ack batches, reaping."""

from __future__ import annotations

from asyncjobs._worker.decisions import (
    fetch_request,
    lane_cap,
    plan_ack,
    poison_pill,
    presumed_dead,
)


def test_lane_cap_is_a_share_of_the_room_and_at_least_one() -> None:
    assert lane_cap(concurrency=100, prefetch=25, lanes=2) == 62
    assert lane_cap(concurrency=1, prefetch=0, lanes=2) == 1


def test_fetch_request_asks_for_the_room_not_yet_asked_for() -> None:
    assert fetch_request(free=10, reserved=0, cap=4) == 4
    assert fetch_request(free=10, reserved=7, cap=4) == 3
    assert fetch_request(free=10, reserved=10, cap=4) == 0  # wait
    assert fetch_request(free=0, reserved=0, cap=4) == 0
    assert fetch_request(free=2, reserved=5, cap=4) == 0  # a fetch came back long


def test_successes_alone_take_the_lean_script() -> None:
    batch = plan_ack([b"a1", b"b2"], moves=0)
    assert batch.lean and batch.plain == [b"a1", b"b2"] and batch.other == []


def test_with_failures_jids_are_joined_and_odd_fields_sent_apart() -> None:
    odd = b'{"not":"a jid"}'
    batch = plan_ack([b"a1", odd, b"b-2.x:y"], moves=1)
    assert not batch.lean
    assert batch.plain == [b"a1", b"b-2.x:y"] and batch.other == [odd]
    assert plan_ack([b"a1"], moves=2).other == []


def test_presumed_dead() -> None:
    assert presumed_dead(record_exists=False, same_host_pid=None, pid_alive=True, own_pid=1)
    assert not presumed_dead(record_exists=True, same_host_pid=None, pid_alive=False, own_pid=1)
    assert presumed_dead(record_exists=True, same_host_pid=42, pid_alive=False, own_pid=1)
    assert not presumed_dead(record_exists=True, same_host_pid=42, pid_alive=True, own_pid=1)
    assert not presumed_dead(record_exists=True, same_host_pid=1, pid_alive=False, own_pid=1)


def test_poison_pill_after_max_recoveries() -> None:
    assert not poison_pill(recoveries=2, max_recoveries=3)
    assert poison_pill(recoveries=3, max_recoveries=3)
