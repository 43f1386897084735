"""The Typer app, its root options, and what every command shares: one-line errors
(fail, _guard), loading the app, logging, the event loop, and the entry point main."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import anyio
import typer
from typer.core import TyperGroup, TyperOption

from .._errors import AsyncJobsError, ConfigError
from .._redis import map_error

T = TypeVar("T")


class _Group(TyperGroup):
    """The command group: flags show no value type in ``--help``.

    typer renders a flag as ``--json <bool>``, which reads as if it took a value
    (``--json true`` is then refused); an empty metavar leaves the flag bare.
    """

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _plain_flags(cmd.get_params(ctx))  # the help option is cached: this sticks
        return cmd


def _plain_flags(params: list[Any]) -> list[Any]:
    for p in params:
        if isinstance(p, TyperOption) and p.is_flag and p.metavar is None:
            p.metavar = ""
    return params


app = typer.Typer(
    name="asyncjobs",
    cls=_Group,
    help="asyncio-native background jobs on Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            expose_value=False,
            callback=_print_version,
            help="Print the asyncjobs version and exit.",
        ),
    ] = False,
) -> None:
    """asyncio-native background jobs on Redis."""


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"asyncjobs: error: {message}", err=True)
    raise typer.Exit(code)


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (the current directory is importable)."""
    from .._app import App

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


def _find(exc: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``types`` in ``exc``, looking inside exception groups."""
    if isinstance(exc, types):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _find(sub, types)
            if found is not None:
                return found
    return None


def setup_logging(level: str, fmt: str = "text", asyncjobs_level: str | None = None) -> None:
    """Log to stderr, each record stamped with the running job's jid, name and queue.

    ``level`` is the root logger's: your jobs' loggers (``logging.getLogger(__name__)``)
    and asyncjobs' own log at it. ``asyncjobs_level``, when given, sets the ``asyncjobs``
    loggers apart (say, your code at DEBUG and the worker's lifecycle at INFO)."""
    from .._logging import JobContextFilter, JsonFormatter, TextFormatter

    def parse(value: str) -> int:
        lvl = logging.getLevelName(value.upper())
        if not isinstance(lvl, int):
            raise ConfigError(f"invalid log level {value!r}: use DEBUG, INFO, WARNING or ERROR")
        return lvl

    lvl = parse(level)
    own = parse(asyncjobs_level) if asyncjobs_level is not None else lvl
    if fmt not in ("text", "json"):
        raise ConfigError(f"invalid log format {fmt!r}: use text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The root logger's level is the one your loggers inherit: at WARNING (as it was),
    # a job's logger.info() never reached the handler whatever --log-level said.
    root.setLevel(lvl)
    logging.getLogger("asyncjobs").setLevel(own)


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


def _usage_error() -> type[Any]:
    """click's ``UsageError``, as typer's public ``BadParameter`` derives from it: typer
    vendors click under a private module (0.20 and later), or uses click (before)."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "UsageError" and issubclass(cls, Exception):
            return cls
    raise AssertionError("typer.BadParameter is no longer a UsageError")  # pragma: no cover


_USAGE_ERROR = _usage_error()


def main() -> None:
    """Entry point of the ``asyncjobs`` script: usage errors are one line, exit 2."""
    try:  # no arguments: the help, exit 0 (typer would raise a usage error for it)
        rv = app(args=sys.argv[1:] or ["--help"], standalone_mode=False)
    except _USAGE_ERROR as exc:
        cmd = exc.ctx.command_path if exc.ctx is not None else "asyncjobs"
        typer.echo(f"{cmd}: error: {exc.format_message()} (see {cmd} --help)", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # The last line of defence: an asyncjobs error (a Redis failure mapped by the
        # store) that no command turned into its one line, or a Redis error that got
        # past the store, is still one line and exit 2, never a traceback.
        from .._redis import STORE_ERRORS

        found = _find(exc, (AsyncJobsError, *STORE_ERRORS))
        if found is None:
            raise
        if not isinstance(found, AsyncJobsError):
            found = map_error("the configured URL", found)
        typer.echo(f"asyncjobs: error: {found}", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
