"""batch, batches: a batch's counts, failed jids and callbacks fired; the recent
batches (#14)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ._admin import AppOpt, JsonOpt, LimitOpt, NsOpt, UrlOpt, _run_admin
from ._base import app
from ._output import _print_json, _table, _when


@app.command()
def batch(
    bid: Annotated[str, typer.Argument(metavar="BID", help="The batch's id.")],
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A batch (app.batch): its jobs (total, pending, failures), its failed jids, and
    when it completed, succeeded or saw a death. Exit 2 if there is no such batch."""
    from .. import api

    status = _run_admin(app_spec, redis_url, namespace, lambda a: api.batch_status(a, bid))
    if as_json:
        _print_json(api.batch_dict(status))
        return

    def when(t: Any) -> str:
        return "-" if t is None else t.strftime("%Y-%m-%d %H:%M:%S UTC")

    rows: list[list[Any]] = [
        ["bid", status.bid],
        ["description", status.description or "-"],
        ["created", when(status.created_at)],
        ["total", status.total],
        ["pending", status.pending],
        ["failures", status.failures],
        ["children", f"{status.children} not complete"],
        ["parent", status.parent or "-"],
        ["open", "yes (a block is adding jobs)" if status.open else "no"],
        ["complete", when(status.complete_at)],
        ["success", when(status.success_at)],
        ["death", when(status.death_at)],
    ]
    _table(["", ""], rows, header=False)
    if status.failed_jids:
        typer.echo("\nfailed jids:")
        for jid in status.failed_jids:
            typer.echo(jid)


@app.command()
def batches(
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    as_json: JsonOpt = False,
    limit: LimitOpt = 50,
    after: Annotated[
        str | None,
        typer.Option(
            "--after",
            metavar="BID",
            help="Start after this batch (the bid a page ends with).",
        ),
    ] = None,
) -> None:
    """The batches of the last 30 days (app.batch), newest first: description,
    created, total, pending, failures and state (pending, complete, succeeded, dead)."""
    from .. import api

    page = _run_admin(
        app_spec, redis_url, namespace, lambda a: api.batches(a, after=after, limit=limit)
    )
    if as_json:
        _print_json([api.batch_dict(s) for s in page.entries])
        return
    _table(
        ["bid", "description", "created", "total", "pending", "failures", "state"],
        [
            [
                s.bid,
                (s.description or "")[:50],
                _when(s.created_at.timestamp() if s.created_at else None),
                s.total,
                s.pending,
                s.failures,
                s.state + (" (open)" if s.open else ""),
            ]
            for s in page.entries
        ],
    )
    if page.next is not None:
        typer.echo(f"next page: --after {page.next}")
