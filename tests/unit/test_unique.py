"""The lock key of a unique job and the checks of its options (pure, #13)."""

from __future__ import annotations

import pytest

import asyncjobs
from asyncjobs import Unique
from asyncjobs._payload import DECODER, ENCODER, Payload
from asyncjobs._unique import lock_for, resolve


def test_key_is_canonical_and_covers_name_queue_and_chosen_args() -> None:
    spec = Unique()
    a = lock_for("m.sync", "default", b'{"a":1,"b":[1,2]}', spec)
    assert a == lock_for("m.sync", "default", b'{"b":[1,2],"a":1}', spec)
    assert a.key.startswith("m.sync:") and len(a.key) == len("m.sync:") + 40
    assert a != lock_for("m.other", "default", b'{"a":1,"b":[1,2]}', spec)
    assert a != lock_for("m.sync", "low", b'{"a":1,"b":[1,2]}', spec)
    assert a != lock_for("m.sync", "default", b'{"a":2,"b":[1,2]}', spec)
    only_a = Unique(args=("a",))
    assert (
        lock_for("m.sync", "default", b'{"a":1,"b":1}', only_a).key
        == lock_for("m.sync", "default", b'{"a":1,"b":2}', only_a).key
    )
    none = Unique(args=())
    assert lock_for("j", "q", b'{"a":1}', none).key == lock_for("j", "q", b'{"a":2}', none).key


def test_lock_travels_in_the_payload_as_a_short_array() -> None:
    import msgspec

    lock = lock_for("j", "q", b"{}", Unique(ttl=5, until="start", on_conflict="replace"))
    p = Payload(
        jid="x", job="j", queue="q", args=msgspec.Raw(b"{}"), created_at=1.0, retry=0, unique=lock
    )
    raw = ENCODER.encode(p)
    assert b'"unique":["j:' in raw and b'"start",5.0,"replace"]' in raw
    assert DECODER.decode(raw).unique == lock
    plain = Payload(jid="x", job="j", queue="q", args=msgspec.Raw(b"{}"), created_at=1, retry=0)
    assert b"unique" not in ENCODER.encode(plain) and b"expires" not in ENCODER.encode(plain)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "unique= takes True or asyncjobs.Unique"),
        (Unique(ttl=0), "ttl"),
        (Unique(ttl=float("inf")), "ttl"),
        (Unique(until="never"), "until"),  # type: ignore[arg-type]
        (Unique(on_conflict="ignore"), "on_conflict"),  # type: ignore[arg-type]
        (Unique(args="account"), "argument names"),  # type: ignore[arg-type]
    ],
)
def test_bad_options_are_refused(value: object, message: str) -> None:
    with pytest.raises(asyncjobs.ConfigError, match=message):
        resolve(value, "job j")  # type: ignore[arg-type]


def test_true_false_none() -> None:
    assert resolve(True, "j") == Unique()
    assert resolve(False, "j") is None and resolve(None, "j") is None


def test_args_must_name_arguments_of_the_function() -> None:
    app = asyncjobs.App()

    with pytest.raises(asyncjobs.ConfigError, match=r"names 'acount', not an argument"):

        @app.job(unique=Unique(args=("acount",)))
        async def sync(account: int) -> None: ...

    @app.job
    async def other(account: int) -> None: ...

    with pytest.raises(asyncjobs.ConfigError, match="it takes account"):
        other.configure(unique=Unique(args=("x",)))
