"""Batches (#14): by bid, and the recent ones (the index ``{ns}:batches``), for the CLI
and the dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from .._batch import BatchStatus, status_from
from ._common import _stores
from ._records import InvalidArgument

if TYPE_CHECKING:
    from .._app import App
    from .._store import Store

__all__ = ["BatchPage", "batch_dict", "batch_status", "batches"]

# How many failed jids a listing reads per batch (api.batch_status reads them all).
LISTED_FAILED_JIDS = 100


class BatchPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of :func:`batches`: its batches, newest first, and ``next``, the
    cursor of the page after it: the bid of its last batch (None once the end is
    reached; a full page may be followed by an empty one)."""

    entries: list[BatchStatus]
    next: str | None = None


async def batch_status(app: App, bid: str) -> BatchStatus:
    """``app.batch_status(bid)``: a batch's counts, failed jids and events;
    :class:`~asyncjobs.BatchError` if there is none (or it expired)."""
    if not isinstance(bid, str) or not bid:
        raise InvalidArgument(f"a batch id is required, got {bid!r}: give the bid it was made with")
    return await app.batch_status(bid)


async def batches(app: App, *, after: str | None = None, limit: int = 50) -> BatchPage:
    """The batches whose data still lives (30 days after their last activity), newest
    first: a page of ``limit`` after the batch ``after`` (a bid: the ``next`` of the
    page before; None for the first page). Each is a :class:`~asyncjobs.BatchStatus`
    as :func:`batch_status` gives it, except that ``failed_jids`` holds at most 100 of
    its failed jids (``failures`` counts them all). Batches whose data expired are
    skipped, and removed from the index as they are met. With shards, every shard's
    index is read and the pages merged (batches live on shard 0)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument(f"limit must be 1 or more, got {limit!r}")
    stores = await _stores(app)
    cursor: tuple[float, bytes] | None = None
    if after is not None:
        if not isinstance(after, str) or not after:
            raise InvalidArgument(f"after must be a bid (BatchPage.next), got {after!r}")
        for store in stores:
            score = await store.batch_index_score(after)
            if score is not None:
                cursor = (score, after.encode())
                break
        else:
            raise InvalidArgument(
                f"no batch {after} in the index (expired, or not a bid): give the next of "
                "a page (BatchPage.next), or start from the first page"
            )
    pages = [await _page_on(store, cursor, limit) for store in stores]
    merged = [entry for rows, _ in pages for entry in rows]
    merged.sort(key=lambda e: (e[1], e[0].bid), reverse=True)
    more = len(merged) > limit or any(full for _, full in pages)
    out = [status for status, _ in merged[:limit]]
    return BatchPage(entries=out, next=out[-1].bid if more and out else None)


async def _page_on(
    store: Store, cursor: tuple[float, bytes] | None, limit: int
) -> tuple[list[tuple[BatchStatus, float]], bool]:
    """Up to ``limit`` live batches of one store after ``cursor``, and whether more may
    follow; the entries of expired batches met on the way are removed from the index."""
    out: list[tuple[BatchStatus, float]] = []
    while True:
        rows = await store.zset_after(store.batch_index_key, cursor, limit, newest_first=True)
        bids = [m.decode(errors="replace") for m, _ in rows]
        read = await store.batch_read_many(bids, LISTED_FAILED_JIDS) if bids else []
        gone = []
        for bid, (_, score), (fields, failed, failures) in zip(bids, rows, read, strict=True):
            if not fields:
                gone.append(bid)
                continue
            out.append((status_from(bid, fields, failed, failures), score))
            if len(out) == limit:
                await store.batch_unindex(gone)
                return out, True
        await store.batch_unindex(gone)
        if len(rows) < limit:
            return out, False
        cursor = (rows[-1][1], rows[-1][0])


def batch_dict(status: BatchStatus) -> dict[str, Any]:
    """The JSON shape of a batch status (``asyncjobs batch --json``): its fields, times
    as Unix seconds (as every ``--json`` output), and the complete/success/dead flags."""
    out: dict[str, Any] = msgspec.to_builtins(status)
    for name in ("created_at", "complete_at", "success_at", "death_at"):
        when = getattr(status, name)
        out[name] = None if when is None else when.timestamp()
    out.update(
        complete=status.complete, success=status.success, dead=status.dead, state=status.state
    )
    return out
