"""bench, web, keygen, version: the benchmark suite, the dashboard, an encryption key,
the version."""

from __future__ import annotations

from typing import Annotated

import typer

from ._admin import AppOpt, NsOpt, UrlOpt, _admin_app
from ._base import _guard, app, fail


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Run the benchmark suite against the peers (python -m benchmarks; --help for more).

    The suite ships with the source, not the wheel: run it from a checkout, with the
    bench extra installed. Every argument goes to the suite (its --help lists them).
    """
    try:
        from benchmarks.__main__ import main as bench_main
    except ImportError as exc:
        if "--help" in ctx.args or "-h" in ctx.args:
            # Outside a checkout there is no suite to ask: its help is this command's.
            typer.echo(ctx.get_help())
            raise typer.Exit(0) from None
        if exc.name and not exc.name.startswith("benchmarks"):  # a peer is missing
            fail(f"the benchmark suite needs {exc.name}: pip install -e '.[bench]'")
        fail(
            "the benchmark suite ships with the source, not the wheel: from a checkout, "
            "pip install -e '.[bench]' and run asyncjobs bench (or python -m benchmarks)"
        )
    raise typer.Exit(bench_main(list(ctx.args)))


@app.command()
def web(
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    bind: Annotated[
        str, typer.Option("--bind", "-b", help="HOST:PORT to serve the dashboard on.")
    ] = "127.0.0.1:8080",
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Show everything, allow no action.")
    ] = False,
    basic_auth: Annotated[
        str | None,
        typer.Option(
            "--basic-auth",
            envvar="ASYNCJOBS_WEB_AUTH",
            help="USER:PASSWORD: HTTP Basic sign-in for the dashboard (or ASYNCJOBS_WEB_AUTH).",
            show_default=False,
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Serve the dashboard to anyone who can reach --bind, signed in or not.",
        ),
    ] = False,
) -> None:
    """Serve the web dashboard (docs/guides/dashboard.md); needs the web extra. Give
    --basic-auth USER:PASSWORD, or --no-auth. Its CSRF secret is ASYNCJOBS_WEB_SECRET,
    else one made at start."""
    import os

    if basic_auth is None and not no_auth:
        fail(
            "the dashboard needs --basic-auth USER:PASSWORD (or ASYNCJOBS_WEB_AUTH), or "
            "--no-auth to let anyone who can reach --bind use it"
        )
    if basic_auth is not None and no_auth:
        fail("give --basic-auth or --no-auth, not both")
    user, colon, password = (basic_auth or "").partition(":")
    if basic_auth is not None and (not colon or not user or not password):
        fail("--basic-auth: give USER:PASSWORD, such as admin:s3cret")
    try:
        import uvicorn

        from ..web import basic_auth as make_basic_auth
        from ..web import create_app
    except ImportError as exc:
        fail(
            f"the dashboard needs the web extra ({exc.name} is missing): "
            "pip install 'asyncjobs-redis[web]'"
        )
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not host:
        fail(f"--bind {bind}: give HOST:PORT, such as 127.0.0.1:8080")
    application = _guard(lambda: _admin_app(app_spec, redis_url, namespace))
    dashboard = create_app(
        application,
        auth=None if no_auth else make_basic_auth(user, password),
        secret=os.environ.get("ASYNCJOBS_WEB_SECRET"),
        read_only=read_only,
    )
    uvicorn.run(dashboard, host=host.strip("[]"), port=int(port), log_level="info")


@app.command()
def keygen(
    key_version: Annotated[
        int,
        typer.Option(
            "--key-version",
            "-k",
            min=1,
            help="The version to give the key: one more than the newest in use.",
        ),
    ] = 1,
) -> None:
    """Print a new random AES-256 key for encrypt=True jobs, as VERSION:BASE64, the form
    of ASYNCJOBS_ENCRYPTION_KEYS (docs/concepts/encryption.md): put it first, keep the
    older keys after it until no job sealed with them is left."""
    from .._seal import generate_key

    typer.echo(f"{key_version}:{generate_key()}")


@app.command()
def version() -> None:
    """Print the asyncjobs version."""
    from .._version import __version__

    typer.echo(__version__)
