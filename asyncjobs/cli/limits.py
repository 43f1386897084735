"""asyncjobs limits: the rate limiters the app declares and what they have used."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ._admin import AppOpt, JsonOpt, NsOpt, UrlOpt, _run_admin
from ._base import app, fail
from ._output import _print_json, _table


@app.command()
def limits(
    name: Annotated[
        str | None, typer.Argument(metavar="[NAME]", help="One limiter (default: all).")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", "-k", help="The limiter's key.")] = None,
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rate limiters the app declares (--app) and what they have used now."""
    from .. import api

    if name is None and key is not None:
        fail("--key needs a limiter NAME")

    async def read(a: Any) -> Any:
        if name is None:
            return await api.limiters(a)
        return [await api.limiter_state(a, name, key=key)]

    states = _run_admin(app_spec, redis_url, namespace, read)
    if as_json:
        import msgspec

        _print_json(msgspec.to_builtins(states))
        return
    _table(
        ["name", "kind", "key", "limit", "per", "used", "available"],
        [
            [
                s.name,
                s.kind,
                s.key or "",
                str(s.limit),
                "" if s.kind == "concurrent" else f"{s.per:g}s",
                f"{s.used:g}",
                f"{s.available:g}",
            ]
            for s in states
        ],
    )
