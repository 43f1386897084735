"""Job status, results and progress: what is stored per tracked job (pure).

A job opts in with ``@app.job(keep_result=seconds)`` (its result and its status) or
``@app.job(track_status=True)`` (its status only). Jobs that do neither write nothing
here and cost nothing more. Three keys per tracked job, all with a TTL:

- ``{ns}:status:<jid>``: the last :class:`State` (queued, scheduled, running, retrying);
- ``{ns}:result:<jid>``: the :class:`Outcome` once the job has ended for good, and
  ``{ns}:result:<jid>:ready``, a list the waiters of ``handle.result()`` block on;
- ``{ns}:progress:<jid>``: the last :class:`Progress` the job reported.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._errors import AsyncJobsError

__all__ = [
    "FINAL",
    "STATES",
    "JobCancelled",
    "JobFailed",
    "JobStatus",
    "Outcome",
    "Progress",
    "State",
    "raise_for",
]

# What app.status(jid) may say.
STATES = (
    "queued",
    "scheduled",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "dead",
    "cancelled",
    "unknown",
)
# The states of an Outcome: the job ended for good.
FINAL = frozenset({"succeeded", "dead", "failed", "cancelled"})

# How long a tracked job's status is kept while it has not ended (queued for days,
# retried for weeks): the longest a retry schedule runs, with room.
PENDING_TTL = 30 * 86400.0
# How long the status of a job with track_status but no keep_result is kept after it ended.
DEFAULT_KEEP = 86400.0


class State(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """A tracked job's state before it ends, written at defer, at start and at a retry."""

    state: str
    at: float  # when this state began (Unix seconds)
    queue: str | None = None
    process: str | None = None  # running: the process id (host:pid:random)
    retry_count: int | None = None  # retrying: retries made so far
    next_at: float | None = None  # scheduled, retrying: when it is due
    error_class: str | None = None  # retrying: the last failure
    error_message: str | None = None


class Outcome(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """How a tracked job ended: ``succeeded`` (with its encoded return value), ``dead``,
    ``failed`` (discarded), or ``cancelled``."""

    state: str
    at: float
    job: str | None = None  # the job's registered name: app.result decodes by it
    value: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    error_class: str | None = None
    error_message: str | None = None
    # False for a job with track_status but no keep_result: its value is not a result
    # (absent, as in records written before this field, means True).
    kept: bool = True


class Progress(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """What a running job last said of its progress (``ctx.progress``)."""

    fraction: float
    at: float
    message: str | None = None
    meta: dict[str, Any] | None = None


class JobStatus(msgspec.Struct, frozen=True, omit_defaults=True):
    """What :meth:`App.status` returns: a snapshot of one job.

    ``state`` is one of queued, scheduled, running, retrying, succeeded, failed (a
    failure discarded), dead, cancelled or unknown (not tracked, never deferred, or its
    record expired).
    """

    jid: str
    state: str
    at: float | None = None  # since when (Unix seconds)
    queue: str | None = None
    process: str | None = None
    retry_count: int | None = None
    next_at: float | None = None
    error_class: str | None = None
    error_message: str | None = None
    progress: Progress | None = None
    has_result: bool = False


_STATE = msgspec.json.Decoder(State)
_OUTCOME = msgspec.json.Decoder(Outcome)
_PROGRESS = msgspec.json.Decoder(Progress)
ENCODE = msgspec.json.Encoder().encode


def decode_outcome(raw: bytes) -> Outcome:
    return _OUTCOME.decode(raw)


def combine(
    jid: str, state: bytes | None, outcome: bytes | None, progress: bytes | None
) -> JobStatus:
    """A job's status from its three keys (each None when absent or undecodable)."""
    prog = _safe(_PROGRESS, progress)
    out = _safe(_OUTCOME, outcome)
    if out is not None:
        return JobStatus(
            jid=jid,
            state=out.state,
            at=out.at,
            error_class=out.error_class,
            error_message=out.error_message,
            progress=prog,
            has_result=out.state == "succeeded" and out.kept,
        )
    st = _safe(_STATE, state)
    if st is None:
        return JobStatus(jid=jid, state="unknown", progress=prog)
    return JobStatus(
        jid=jid,
        state=st.state,
        at=st.at,
        queue=st.queue,
        process=st.process,
        retry_count=st.retry_count,
        next_at=st.next_at,
        error_class=st.error_class,
        error_message=st.error_message,
        progress=prog if st.state == "running" or prog is not None else None,
    )


def _safe(decoder: msgspec.json.Decoder[Any], raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class JobFailed(AsyncJobsError):
    """The job ended for good without a result (``handle.result()``): it went to the
    dead set (``state="dead"``) or was discarded (``state="failed"``).
    ``error_class`` and ``error_message`` are the job's last error."""

    def __init__(self, jid: str, state: str, error_class: str | None, error_message: str | None):
        self.jid = jid
        self.state = state
        self.error_class = error_class
        self.error_message = error_message
        super().__init__(f"job {jid} {state}: {error_class}: {error_message}")


class JobCancelled(JobFailed):
    """The job was cancelled (``app.cancel``) before it returned."""

    def __init__(self, jid: str):
        super().__init__(jid, "cancelled", "JobCancelled", "cancelled by app.cancel")
        self.args = (f"job {jid} was cancelled",)


def raise_for(jid: str, out: Outcome) -> None:
    """Raise the error of an outcome that is not a success."""
    if out.state == "succeeded":
        return
    if out.state == "cancelled":
        raise JobCancelled(jid)
    raise JobFailed(jid, out.state, out.error_class, out.error_message)
