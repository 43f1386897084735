"""The typing contract of results (#14): ``Job[P, R].defer`` gives a ``JobHandle[R]``
whose ``result()`` is an ``R``. The ``assert_type`` calls are checked by mypy (strict,
over tests/: scripts/check); the test checks the handle at run time."""

from __future__ import annotations

import json
import pickle
from typing import assert_type

import msgspec

import asyncjobs
from asyncjobs import JobHandle, JobStatus

app = asyncjobs.App("redis://localhost:1/0")


class Size(msgspec.Struct):
    width: int
    height: int


@app.job(keep_result=60, name="typing.size")
async def size(width: int) -> Size:
    return Size(width, width)


@app.job(name="typing.after")
async def after(parent: str) -> None:
    pass


async def _typed() -> None:  # never run: mypy reads it
    handle = await size.defer(1)
    assert_type(handle, JobHandle[Size] | None)
    later = await size.configure(delay=5).defer(2)
    assert_type(later, JobHandle[Size] | None)
    if handle is not None:
        assert_type(await handle.result(timeout=1), Size)
        assert_type(await size.result(handle.jid), Size)
        assert_type(await handle.status(), JobStatus)
        assert_type(handle.jid, str)
        jid: str = handle  # usable wherever a jid string is
        assert_type(await app.status(jid), JobStatus)


def test_a_handle_is_its_jid() -> None:
    handle = JobHandle("0123456789abcdef01234567", size)
    assert handle == "0123456789abcdef01234567"
    assert isinstance(handle, str) and handle.jid == handle
    assert type(handle.jid) is str
    assert json.dumps({"jid": handle}) == '{"jid": "0123456789abcdef01234567"}'
    # As a job's argument (the encoder of payloads and arguments takes it).
    assert asyncjobs.Payload.__module__ == "asyncjobs"
    from asyncjobs._payload import ENCODER

    assert ENCODER.encode({"parent": handle}) == b'{"parent":"0123456789abcdef01234567"}'
    assert after.encode_args((handle,), {}) == b'{"parent":"0123456789abcdef01234567"}'
    assert {"0123456789abcdef01234567": 1}[handle] == 1
    assert f"{handle}" == "0123456789abcdef01234567"
    copied = pickle.loads(pickle.dumps(handle))
    assert copied == handle and type(copied) is str


def test_status_from_its_keys() -> None:
    from asyncjobs._status import Outcome, State, combine

    enc = msgspec.json.encode
    assert combine("j", None, None, None).state == "unknown"
    assert combine("j", b"not json", None, None).state == "unknown"
    running = enc(State(state="running", at=1.0, process="h:1:abc"))
    st = combine("j", running, None, b'{"fraction":0.5,"at":2.0,"message":"half"}')
    assert (st.state, st.process, st.progress and st.progress.message) == (
        "running",
        "h:1:abc",
        "half",
    )
    done = enc(Outcome(state="succeeded", at=3.0, value=msgspec.Raw(b"7")))
    st = combine("j", running, done, None)  # the outcome wins over a stale state
    assert (st.state, st.at, st.has_result) == ("succeeded", 3.0, True)
