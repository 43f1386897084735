"""JobRecord: one job as stored, decoded for reading; JobNotFound."""

from __future__ import annotations

from typing import Any

import msgspec

from .._errors import AsyncJobsError
from .._payload import DECODE_ERRORS, DECODER, decode_backtrace
from .._seal import ENCRYPTED, display_args, is_compressed


class JobNotFound(AsyncJobsError, LookupError):
    """No entry with this jid in the set."""


class InvalidArgument(AsyncJobsError, ValueError):
    """An argument out of range or malformed (a count, a cursor, a counter name): the
    message says what was wrong and what to give instead."""


def check_jid(jid: object) -> str:
    """``jid`` if it is a non-empty string, else :class:`InvalidArgument` (a ``None`` or
    an empty jid would otherwise fail deep in the store, or find nothing)."""
    if not isinstance(jid, str) or not jid:
        raise InvalidArgument(
            f"a jid is required, got {jid!r}: give the job's jid (24 hex digits, or the id "
            "given to configure(jid=...)), as the listings show it"
        )
    return jid


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One job as stored, decoded for reading. ``score`` is its due/death time.

    ``args`` of a job with ``encrypt=True`` is the string ``"<encrypted>"`` (nothing
    here opens a seal); compressed arguments are shown decoded."""

    jid: str
    job: str
    queue: str
    args: Any
    created_at: float
    enqueued_at: float | None = None
    score: float | None = None
    retry: int = 0
    retry_count: int = 0
    error_class: str | None = None
    error_message: str | None = None
    error_backtrace: list[str] | None = None
    failed_at: float | None = None
    recoveries: int = 0
    meta: dict[str, Any] = {}
    raw: str = ""

    @property
    def encrypted(self) -> bool:
        """Whether the arguments are sealed (``encrypt=True``): ``args`` is
        ``"<encrypted>"``."""
        return isinstance(self.args, str) and self.args == ENCRYPTED

    @property
    def compressed(self) -> bool:
        """Whether the arguments are stored compressed (``App(compress_over=...)``);
        ``args`` shows them decoded."""
        return is_compressed(self.raw)

    @classmethod
    def from_raw(cls, raw: bytes, score: float | None = None) -> JobRecord:
        try:
            p = DECODER.decode(raw)
        except DECODE_ERRORS as exc:
            return cls(
                jid="",
                job="<undecodable>",
                queue="",
                args=None,
                created_at=0.0,
                score=score,
                error_class="PayloadError",
                error_message=str(exc),
                raw=raw.decode(errors="replace"),
            )
        return cls(
            jid=p.jid,
            job=p.job,
            queue=p.queue,
            args=display_args(p.args),
            created_at=p.created_at,
            enqueued_at=p.enqueued_at,
            score=score,
            retry=p.retry,
            retry_count=p.retry_count or 0,
            error_class=p.error_class,
            error_message=p.error_message,
            error_backtrace=decode_backtrace(p.error_backtrace),
            failed_at=p.failed_at,
            recoveries=p.recoveries,
            meta=p.meta,
            raw=raw.decode(errors="replace"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape used by ``--json`` (see docs/cli.md)."""
        d: dict[str, Any] = msgspec.structs.asdict(self)
        d.pop("raw")
        return d
