"""BatchStatus from a batch's hash (pure): counts, times, flags."""

from __future__ import annotations

import datetime as dt

import pytest

from asyncjobs._batch import status_from


@pytest.mark.timeout(10)
def test_status_from_a_hash() -> None:
    fields = {
        b"desc": b"nightly",
        b"total": b"5",
        b"pending": b"2",
        b"kids": b"1",
        b"holds": b"0",
        b"created_at": b"1700000000.5",
        b"complete_at": b"1700000100.25",
        b"parent": b"p1",
    }
    s = status_from("b1", fields, [b"j2", b"j1"])
    assert (s.bid, s.description, s.total, s.pending, s.failures) == ("b1", "nightly", 5, 2, 2)
    assert s.failed_jids == ["j1", "j2"]
    assert s.created_at == dt.datetime.fromtimestamp(1700000000.5, dt.UTC)
    assert s.complete and not s.success and not s.dead and not s.open
    assert (s.parent, s.children) == ("p1", 1)


@pytest.mark.timeout(10)
def test_pending_below_zero_reads_as_zero_while_open() -> None:
    """Jobs that finish while the block still defers count down before the block
    counts them in: a reader sees 0, not a negative count."""
    s = status_from("b", {b"holds": b"1", b"pending": b"-3", b"total": b"0"}, [])
    assert s.open and s.pending == 0 and s.created_at is None and s.description is None


@pytest.mark.timeout(10)
def test_children_callbacks_and_state() -> None:
    """kid:<bid> fields list the children oldest first; cb:<event> payloads give the
    callbacks' job names; state reads succeeded, dead, complete, pending in that order;
    a listing's failure count may exceed the jids it read."""
    fields = {
        b"total": b"3",
        b"pending": b"1",
        b"kid:zz": b"1700000001.0",
        b"kid:aa": b"1700000002.0",
        b"cb:success": b'{"jid":"x","class":"myapp.done","queue":"default"}',
        b"cb:death": b"not json",
        b"cbq:success": b"default",
        b"complete_at": b"1700000100",
    }
    s = status_from("b", fields, [b"j1"], failures=40)
    assert s.child_bids == ["zz", "aa"]
    assert s.callbacks == {"death": "?", "success": "myapp.done"}
    assert (s.failures, s.failed_jids, s.state) == (40, ["j1"], "complete")
    assert status_from("b", {b"total": b"1", b"pending": b"1"}, []).state == "pending"
    dead = status_from("b", {**fields, b"death_at": b"1700000200"}, [b"j1"])
    assert dead.state == "dead"
    done = status_from("b", {b"success_at": b"1700000300", b"complete_at": b"1"}, [])
    assert done.state == "succeeded" and done.child_bids == [] and done.callbacks == {}
