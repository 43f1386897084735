"""The ``asyncjobs`` command line (typer). Operator errors print one line, exit 2."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import anyio
import typer

from ._errors import AsyncJobsError, ConfigError
from ._settings import Settings, capsules_from, load_settings

__all__ = ["app", "load_app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="asyncjobs",
    help="asyncio-native background jobs on Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"asyncjobs: error: {message}", err=True)
    raise typer.Exit(code)


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (the current directory is importable)."""
    from ._app import App

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"invalid app {spec!r}: expected MODULE:ATTRIBUTE, as in myapp.jobs:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"cannot import module {module_name!r} (from {spec!r}): no such module; "
                "check the name and that its directory is on PYTHONPATH"
            ) from None
        raise ConfigError(f"importing {module_name!r} failed: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, App):
        raise ConfigError(f"{spec!r} is a {type(obj).__name__}, not an asyncjobs.App")
    return obj


def setup_logging(level: str, fmt: str = "text") -> None:
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        raise ConfigError(f"invalid log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("asyncjobs")
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    root.propagate = False


def run_async(fn: Callable[[], Any]) -> Any:
    """Run a coroutine function on uvloop when installed, else asyncio."""
    try:
        import uvloop  # noqa: F401

        backend_options: dict[str, Any] = {"use_uvloop": True}
    except ImportError:
        backend_options = {}
    return anyio.run(fn, backend="asyncio", backend_options=backend_options)


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except AsyncJobsError as exc:
        fail(str(exc))


@app.command()
def worker(
    app_spec: Annotated[
        str | None, typer.Argument(metavar="APP", help="MODULE:ATTRIBUTE of your asyncjobs.App")
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="Queue to process, NAME or NAME,WEIGHT; repeat."),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="Jobs run at once (default 10).")
    ] = None,
    strict: Annotated[
        bool | None, typer.Option("--strict/--weighted", help="Strict queue order.")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", "-t", help="Seconds to wait for running jobs at shutdown."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-C", help="TOML settings file.")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", "-r", help="Redis URL (overrides the app's).")
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="DEBUG, INFO, ...")] = None,
) -> None:
    """Run a worker process: fetch and run jobs until SIGTERM/SIGINT."""

    def build() -> tuple[Any, Settings]:
        settings = load_settings(config)
        overrides: dict[str, Any] = {}
        if app_spec is not None:
            overrides["app"] = app_spec
        if queue:
            overrides["queues"] = list(queue)
        if concurrency is not None:
            overrides["concurrency"] = concurrency
        if strict is not None:
            overrides["strict"] = strict
        if timeout is not None:
            overrides["timeout"] = timeout
        if redis_url is not None:
            overrides["redis_url"] = redis_url
        if log_level is not None:
            overrides["log_level"] = log_level
        import msgspec

        settings = msgspec.structs.replace(settings, **overrides)
        if settings.app is None:
            raise ConfigError(
                "no app given: asyncjobs worker MODULE:ATTRIBUTE (or app= in --config)"
            )
        capsules_from(settings)  # validates queues before importing anything
        setup_logging(settings.log_level, settings.log_format)
        application = load_app(settings.app)
        if settings.redis_url:
            from ._redis import _check_url

            _check_url(settings.redis_url)
            application.redis_url = settings.redis_url
        if settings.namespace:
            from ._keys import Keys

            application.keys = Keys(settings.namespace)
        return application, settings

    application, settings = _guard(build)
    specs = _guard(lambda: capsules_from(settings))

    async def main() -> None:
        await application.connect()  # fail fast, one line, when Redis is unreachable
        w = application.worker(
            capsules=specs,
            timeout=settings.timeout,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_ttl=settings.heartbeat_ttl,
            scheduler_poll=settings.scheduler_poll,
            max_recoveries=settings.max_recoveries,
            handle_signals=True,
        )
        try:
            await w.run()
        finally:
            await application.aclose()

    _guard(lambda: run_async(main))


@app.command()
def version() -> None:
    """Print the asyncjobs version."""
    from ._version import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point of the ``asyncjobs`` script."""
    app()
