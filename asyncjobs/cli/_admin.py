"""The options of the admin commands (--app, --redis-url, --namespace, --json) and
the App they name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from ._base import _guard, load_app, run_async

AppOpt = Annotated[
    str | None,
    typer.Option("--app", "-a", envvar="ASYNCJOBS_APP", help="MODULE:ATTRIBUTE of your App."),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        "-r",
        help="Redis URL, redis+sentinel:// too (else the app's, else the environment).",
    ),
]
NsOpt = Annotated[str | None, typer.Option("--namespace", "-n", help="Key namespace.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Stable JSON output (docs/cli.md).")]


def _admin_app(app_spec: str | None, redis_url: str | None, namespace: str | None) -> Any:
    """The App to inspect: ``--app``/``ASYNCJOBS_APP``, else one built from the URL."""
    from .._app import App
    from .._keys import Keys
    from .._redis import _check_url

    application = load_app(app_spec) if app_spec else App(redis_url)
    if redis_url:
        _check_url(redis_url)
        application.redis_url = redis_url
    if namespace:
        application.keys = Keys(namespace)
    return application


def _run_admin(
    app_spec: str | None,
    redis_url: str | None,
    namespace: str | None,
    fn: Callable[[Any], Any],
) -> Any:
    application = _guard(lambda: _admin_app(app_spec, redis_url, namespace))

    async def run() -> Any:
        try:
            return await fn(application)
        finally:
            await application.aclose()

    return _guard(lambda: run_async(run))


LimitOpt = Annotated[int, typer.Option("--limit", min=1, help="Entries to show.")]
OffsetOpt = Annotated[int, typer.Option("--offset", min=0, help="Entries to skip.")]
