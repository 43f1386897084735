"""Status and cancellation by jid (#14), for the CLI and the dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from .._status import JobStatus
from ._records import check_jid

if TYPE_CHECKING:
    from .._app import App

__all__ = ["cancel_job", "job_status", "status_dict"]


async def job_status(app: App, jid: str) -> JobStatus:
    """``app.status(jid)``: the tracked status of a job (``unknown`` if untracked)."""
    check_jid(jid)
    return await app.status(jid)


async def cancel_job(app: App, jid: str) -> str:
    """``app.cancel(jid)``: ``removed``, ``cancelling`` or ``not found``."""
    check_jid(jid)
    return await app.cancel(jid)


def status_dict(status: JobStatus) -> dict[str, Any]:
    """The JSON shape of a status (``asyncjobs job --json``'s ``status``)."""
    out: dict[str, Any] = msgspec.to_builtins(status)
    return out
