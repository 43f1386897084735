"""Batches by bid (#14), for the CLI and the dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from .._batch import BatchStatus
from ._records import InvalidArgument

if TYPE_CHECKING:
    from .._app import App

__all__ = ["batch_dict", "batch_status"]


async def batch_status(app: App, bid: str) -> BatchStatus:
    """``app.batch_status(bid)``: a batch's counts, failed jids and events;
    :class:`~asyncjobs.BatchError` if there is none (or it expired)."""
    if not isinstance(bid, str) or not bid:
        raise InvalidArgument(f"a batch id is required, got {bid!r}: give the bid it was made with")
    return await app.batch_status(bid)


def batch_dict(status: BatchStatus) -> dict[str, Any]:
    """The JSON shape of a batch status (``asyncjobs batch --json``): its fields, times
    as Unix seconds (as every ``--json`` output), and the complete/success/dead flags."""
    out: dict[str, Any] = msgspec.to_builtins(status)
    for name in ("created_at", "complete_at", "success_at", "death_at"):
        when = getattr(status, name)
        out[name] = None if when is None else when.timestamp()
    out.update(complete=status.complete, success=status.success, dead=status.dead)
    return out
