"""Batches and workflows (#14): what is decided without Redis (pure).

A batch groups jobs deferred inside ``async with app.batch(...)`` (``_batching.py``)
and runs callback jobs when they have all run (complete), all succeeded (success), or
one died (death). The counting happens in Redis, in the scripts that acknowledge jobs
(``_scripts/ack.lua``, ``batch_lib.lua``). This module holds the open batch of the
current context, the status a reader gets, and the signatures workflows are made of.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from ._job import Job

__all__ = [
    "BATCH_TTL",
    "BatchStatus",
    "Scope",
    "Signature",
    "current_scope",
    "scope_var",
    "status_from",
]

# Batch data lives this long after its last activity (Sidekiq Pro's default expiry).
BATCH_TTL = 30 * 86400


class Scope:
    """An open ``async with app.batch()`` block: the batch jobs deferred in it join,
    and how many did (counted into the batch when the block exits)."""

    __slots__ = ("added", "bid")

    def __init__(self, bid: str) -> None:
        self.bid = bid
        self.added = 0


scope_var: ContextVar[Scope | None] = ContextVar("asyncjobs.batch", default=None)


def current_scope() -> Scope | None:
    """The batch block open in this context, if any (a ``defer`` here joins it)."""
    return scope_var.get()


class Signature:
    """A job and its arguments, not yet deferred: ``job.s(...)``. A callback of a batch,
    or a step of a workflow (``app.chain``)."""

    __slots__ = ("args", "job", "kwargs", "opts")

    def __init__(
        self,
        job: Job[Any, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        opts: Any = None,
    ) -> None:
        self.job = job
        self.args = args
        self.kwargs = dict(kwargs)
        # Per-call options (``job.configure(queue=...).s(...)``); None: the job's own.
        self.opts = opts

    def __repr__(self) -> str:
        return f"<Signature {self.job.name} args={self.args!r} kwargs={self.kwargs!r}>"


class BatchStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A batch as Redis has it now: ``await app.batch_status(bid)``.

    ``pending`` counts the jobs that have not succeeded yet (a failed job stays pending
    until a retry succeeds); ``failures`` the jobs whose last run failed, listed in
    ``failed_jids``. ``complete``: every job ran at least once (``pending ==
    failures``) and every child batch completed; ``success``: every job and every child
    succeeded; ``dead``: a job (or a child's) died.
    """

    bid: str
    description: str | None
    total: int
    pending: int
    failures: int
    failed_jids: list[str]
    created_at: dt.datetime | None
    complete_at: dt.datetime | None
    success_at: dt.datetime | None
    death_at: dt.datetime | None
    parent: str | None
    children: int  # child batches not complete yet
    open: bool  # an ``async with`` block holds it open (no callback fires meanwhile)
    # The child batches' ids, every one made since (complete or not), oldest first.
    child_bids: list[str] = msgspec.field(default_factory=list)
    # The callbacks given: event (complete, success, death) -> job name. An event's
    # callback fired when its time (complete_at, ...) is set.
    callbacks: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.complete_at is not None

    @property
    def success(self) -> bool:
        return self.success_at is not None

    @property
    def dead(self) -> bool:
        return self.death_at is not None

    @property
    def state(self) -> str:
        """``succeeded``, else ``dead`` (a job died: it will never succeed), else
        ``complete`` (every job ran; some failed and wait for a retry), else
        ``pending``."""
        if self.success:
            return "succeeded"
        if self.dead:
            return "dead"
        return "complete" if self.complete else "pending"


def _time(raw: bytes | None) -> dt.datetime | None:
    if raw is None:
        return None
    return dt.datetime.fromtimestamp(float(raw), dt.UTC)


def _num(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return 0.0


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode(errors="replace")


class _CallbackHead(msgspec.Struct):
    job: str = msgspec.field(name="class")


_CALLBACK = msgspec.json.Decoder(_CallbackHead)


def _callback_job(raw: bytes) -> str:
    try:
        return _CALLBACK.decode(raw).job
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "?"


def status_from(
    bid: str, fields: Mapping[bytes, bytes], failed: list[bytes], failures: int | None = None
) -> BatchStatus:
    """A :class:`BatchStatus` from a batch's hash and its failed set (or, given
    ``failures``, the set's size and some of its members)."""

    def num(name: bytes) -> int:
        raw = fields.get(name)
        return int(raw) if raw is not None else 0

    kids = sorted((k for k in fields if k.startswith(b"kid:")), key=lambda k: (_num(fields[k]), k))
    callbacks = {
        k[3:].decode(errors="replace"): _callback_job(v)
        for k, v in fields.items()
        if k.startswith(b"cb:")
    }
    return BatchStatus(
        bid=bid,
        description=_text(fields.get(b"desc")),
        total=num(b"total"),
        pending=max(0, num(b"pending")),
        failures=len(failed) if failures is None else failures,
        failed_jids=sorted(f.decode(errors="replace") for f in failed),
        created_at=_time(fields.get(b"created_at")),
        complete_at=_time(fields.get(b"complete_at")),
        success_at=_time(fields.get(b"success_at")),
        death_at=_time(fields.get(b"death_at")),
        parent=_text(fields.get(b"parent")),
        children=max(0, num(b"kids")),
        open=num(b"holds") > 0,
        child_bids=[k[4:].decode(errors="replace") for k in kids],
        callbacks=dict(sorted(callbacks.items())),
    )
