"""The job payload: one msgspec Struct, one encoder and decoder built once (pure).

The payload is JSON with Sidekiq's field names where they exist, so it stays readable
in ``redis-cli``. One departure: ``args`` is an object of named arguments rather than an
array, so that a validation error names the argument and a reader sees what each value
means.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import zlib
from typing import Any

import msgspec

__all__ = [
    "ENCODER",
    "Lock",
    "DECODER",
    "DECODE_ERRORS",
    "Payload",
    "decode_backtrace",
    "encode_backtrace",
    "inflight_field",
    "new_jid",
    "valid_jid",
]


class Lock(msgspec.Struct, array_like=True):
    """A unique job's lock (``_unique.py``), carried by its payload as a short array:
    the key after ``{ns}:unique:``, when it is released, its TTL in seconds, and what
    ``defer`` does on a conflict."""

    key: str
    until: str
    ttl: float
    conflict: str


class Payload(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One job as stored in Redis. ``jid`` is first: scripts read it by prefix."""

    jid: str
    job: str = msgspec.field(name="class")
    queue: str
    args: msgspec.Raw
    created_at: float
    enqueued_at: float | None = None
    at: float | None = None
    retry: int
    # Sidekiq's meaning: the retries already made, absent until the first failure (0
    # after it). Before this, asyncjobs stored 1 after the first failure.
    retry_count: int | None = None
    timeout: float | None = None
    dead: bool = True
    error_class: str | None = None
    error_message: str | None = None
    # Compressed as Sidekiq does (``encode_backtrace``); a list in payloads written
    # before that, still read.
    error_backtrace: str | list[str] | None = None
    failed_at: float | None = None
    retried_at: float | None = None
    discarded_at: float | None = None  # Sidekiq's: what death handlers of a discard see
    recoveries: int = 0
    meta: dict[str, Any] = {}
    unique: Lock | None = None  # a unique job's lock (_unique.py)
    expires_at: float | None = None  # Sidekiq Pro's expires_in: not started by then, dropped
    limited: int | None = None  # times rescheduled over a rate limit (not retries)
    bid: str | None = None  # the batch the job belongs to (_batch.py, #14)


# What decoding stored bytes can raise: garbage, wrong fields, and nesting so deep that
# the decoder runs out of stack (RecursionError).
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError)


def _enc_hook(obj: object) -> object:
    """What msgspec cannot encode by itself: a ``str`` subclass (a ``JobHandle``, the jid
    ``defer`` returns, passed on as an argument) is encoded as its string. Called only
    for such objects: plain types never reach it. Anything else is a TypeError, as
    msgspec raises without a hook (and as the callers catch: a result or a progress
    report it cannot encode, an argument it refuses)."""
    if isinstance(obj, str):
        return str.__str__(obj)
    raise TypeError(f"Encoding objects of type {type(obj).__name__} is unsupported")


ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)
DECODER = msgspec.json.Decoder(Payload)

# Scripts (fetch.lua) key the in-flight hash by the jid read from this prefix, and by the
# whole payload when it does not match (garbage pushed by hand). This mirrors them.
_JID_PREFIX = re.compile(rb'^\{"jid":"([^"]+)"')
_VALID_JID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def inflight_field(raw: bytes) -> bytes:
    """The field under which ``fetch.lua`` recorded ``raw`` in the in-flight hash."""
    m = _JID_PREFIX.match(raw)
    return m.group(1) if m is not None else raw


def encode_backtrace(lines: list[str]) -> str:
    """Backtrace lines as stored: JSON, zlib, base64, Sidekiq's packing (a traceback
    shrinks to a third or less, and every retry and dead entry carries one)."""
    return base64.b64encode(zlib.compress(json.dumps(lines).encode())).decode("ascii")


def decode_backtrace(value: str | list[str] | None) -> list[str] | None:
    """The lines of a stored backtrace: packed (``encode_backtrace``) or, as written
    before packing, a plain list. A damaged one reads as one line saying so."""
    if value is None or isinstance(value, list):
        return value
    try:
        lines = json.loads(zlib.decompress(base64.b64decode(value, validate=False)))
    except (binascii.Error, zlib.error, ValueError) as exc:
        return [f"<undecodable backtrace: {exc}>"]
    if not isinstance(lines, list):
        return [f"<undecodable backtrace: a {type(lines).__name__}, not a list>"]
    return [str(line) for line in lines]


def new_jid() -> str:
    """A fresh job id: 24 hex digits, like Sidekiq's."""
    return os.urandom(12).hex()


def valid_jid(jid: str) -> bool:
    """Whether a caller-chosen jid is acceptable (no quotes, bounded length)."""
    return _VALID_JID.match(jid) is not None
