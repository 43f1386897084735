"""The ``asyncjobs`` command line (typer). Operator errors print one line, exit 2."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import anyio
import typer
from typer.core import TyperGroup, TyperOption

from ._errors import AsyncJobsError, ConfigError
from ._redis import REDIS_ERRORS, map_error
from ._settings import Settings, capsules_from, load_settings
from ._worker.supervisor import Supervisor, resolve_processes

__all__ = ["app", "load_app", "main"]

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
        from ._version import __version__

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


def _without_processes(argv: list[str]) -> list[str]:
    """The command line minus ``--processes``/``-p`` (children get ``--processes 1``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--processes", "-p"):
            skip = True
            continue
        if arg.startswith("--processes="):
            continue
        out.append(arg)
    return out


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
    from ._logging import JobContextFilter, JsonFormatter, TextFormatter

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


@app.command()
def worker(
    app_spec: Annotated[
        str | None,
        typer.Argument(
            metavar="APP",
            envvar="ASYNCJOBS_APP",
            help="MODULE:ATTRIBUTE of your asyncjobs.App.",
        ),
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            "-q",
            envvar="ASYNCJOBS_QUEUES",
            metavar="QUEUE",
            help="A queue to process, NAME or NAME,WEIGHT; repeat the flag. "
            "The variable takes them separated by spaces: critical,6 default,3 low",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            envvar="ASYNCJOBS_CONCURRENCY",
            metavar="N",
            help="Jobs run at once (default 10).",
        ),
    ] = None,
    strict: Annotated[
        bool | None,
        typer.Option("--strict/--weighted", envvar="ASYNCJOBS_STRICT", help="Strict queue order."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            "-t",
            min=0,
            envvar="ASYNCJOBS_TIMEOUT",
            metavar="SECONDS",
            help="Seconds to wait for running jobs at shutdown, more than 0 (default 25).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-C", envvar="ASYNCJOBS_CONFIG", metavar="FILE", help="TOML settings file."
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            "-r",
            envvar="ASYNCJOBS_REDIS_URL",
            metavar="URL",
            help="Redis URL (overrides the settings file and the app's).",
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            envvar="ASYNCJOBS_NAMESPACE",
            metavar="NAME",
            help="Key namespace (overrides the app's).",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            envvar="ASYNCJOBS_LOG_LEVEL",
            metavar="LEVEL",
            help="DEBUG, INFO (default), WARNING or ERROR.",
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            envvar="ASYNCJOBS_LOG_FORMAT",
            metavar="FORMAT",
            help="text (default) or json.",
        ),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option(
            "--tag",
            envvar="ASYNCJOBS_TAG",
            metavar="TAG",
            help="A label for this process in asyncjobs processes (an app, a deploy).",
        ),
    ] = None,
    processes: Annotated[
        str | None,
        typer.Option(
            "--processes",
            "-p",
            envvar="ASYNCJOBS_PROCESSES",
            metavar="N|auto",
            help="Worker processes: N or auto (one per core). Default 1.",
        ),
    ] = None,
) -> None:
    """Run a worker process: fetch and run jobs until SIGTERM/SIGINT."""
    given = {
        "app": app_spec,
        "queues": list(queue) if queue else None,
        "concurrency": concurrency,
        "strict": strict,
        "timeout": timeout,
        "redis_url": redis_url,
        "namespace": namespace,
        "log_level": log_level,
        "processes": processes,
        "log_format": log_format,
        "tag": tag,
    }
    overrides = {name: value for name, value in given.items() if value is not None}
    application, settings = _guard(lambda: _worker_settings(config, overrides))
    specs = _guard(lambda: capsules_from(settings))
    n = _guard(lambda: resolve_processes(settings.processes))
    if n > 1:
        _guard(lambda: run_async(application.ping))  # fail fast, one line
        argv = _without_processes(sys.argv[1:])
        raise typer.Exit(Supervisor(n, [*argv, "--processes", "1"]).run())
    _guard(lambda: run_async(lambda: _run_worker(application, settings, specs)))


def _worker_settings(config: Path | None, overrides: dict[str, Any]) -> tuple[Any, Settings]:
    """The settings of ``asyncjobs worker`` (flags and environment over the settings
    file over the defaults), validated, and the app they name, configured by them."""
    import msgspec

    settings = msgspec.structs.replace(load_settings(config), **overrides)
    if not settings.timeout > 0:  # flags are range-checked; a settings file is not
        raise ConfigError(
            f"timeout must be more than 0 seconds, got {settings.timeout:g}: the seconds "
            "a shutdown waits for running jobs (-t/--timeout, timeout= in the settings)"
        )
    if settings.app is None:
        raise ConfigError("no app given: asyncjobs worker MODULE:ATTRIBUTE (or app= in --config)")
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


async def _run_worker(application: Any, settings: Settings, specs: list[Any]) -> None:
    """Run one worker process until it stops; Redis errors become one line."""
    await application.connect()  # fail fast, one line, when Redis is unreachable
    w = application.worker(
        capsules=specs,
        timeout=settings.timeout,
        heartbeat_interval=settings.heartbeat_interval,
        heartbeat_ttl=settings.heartbeat_ttl,
        scheduler_poll=settings.scheduler_poll,
        max_recoveries=settings.max_recoveries,
        prefetch=settings.prefetch,
        handle_signals=True,
        tag=settings.tag,
    )
    try:
        await w.run()
    except Exception as exc:  # a denied command (ACL): one line, exit 2
        inner = _find(exc, REDIS_ERRORS)
        if inner is None:
            raise
        raise map_error(application.redis_url, inner) from inner
    finally:
        await application.aclose()


# -- inspection (uses asyncjobs.api only) ---------------------------------------------

AppOpt = Annotated[
    str | None,
    typer.Option("--app", "-a", envvar="ASYNCJOBS_APP", help="MODULE:ATTRIBUTE of your App."),
]
UrlOpt = Annotated[
    str | None,
    typer.Option("--redis-url", "-r", help="Redis URL (else the app's, else the environment)."),
]
NsOpt = Annotated[str | None, typer.Option("--namespace", "-n", help="Key namespace.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Stable JSON output (docs/cli.md).")]


def _admin_app(app_spec: str | None, redis_url: str | None, namespace: str | None) -> Any:
    """The App to inspect: ``--app``/``ASYNCJOBS_APP``, else one built from the URL."""
    from ._app import App
    from ._keys import Keys
    from ._redis import _check_url

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


def _print_json(data: Any) -> None:
    import json

    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _console() -> Any:
    from rich.console import Console

    # Piped into grep or a file, a row stays on one line whatever the width: the
    # 80 columns rich assumes without a terminal would wrap jids and backtraces.
    width = None if sys.stdout.isatty() else 100_000
    return Console(width=width, highlight=False, soft_wrap=width is not None)


def _table(headers: list[str], rows: list[list[Any]], *, header: bool = True) -> None:
    """Rows under their headers (rich), or ``(none)``."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        *headers, box=box.SIMPLE_HEAD, show_header=header, show_edge=False, pad_edge=False
    )
    for r in rows:
        table.add_row(*(Text(str(c)) for c in r))  # Text: a job's "[1]" is not markup
    if rows:
        _console().print(table)
    else:
        typer.echo("(none)")


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


LimitOpt = Annotated[int, typer.Option("--limit", min=1, help="Entries to show.")]
OffsetOpt = Annotated[int, typer.Option("--offset", min=0, help="Entries to skip.")]


def _args(args: Any, width: int = 40) -> str:
    """A job's arguments on one line, cut to ``width`` characters."""
    import json

    out = json.dumps(args, default=str, separators=(",", ":"))
    return out if len(out) <= width else out[: width - 1] + "…"


def _ago(ts: float | None) -> str:
    """Seconds since ``ts``, as ``12.3s``, ``4m05s`` or ``2h03m``."""
    if not ts:
        return "-"
    import time

    s = max(0.0, time.time() - ts)
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


@app.command()
def stats(
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    as_json: JsonOpt = False,
    days: Annotated[
        int,
        typer.Option(
            "--days", min=1, max=5 * 366, help="Days of history (UTC), today first (1 to 1830)."
        ),
    ] = 7,
    reset: Annotated[
        list[str] | None,
        typer.Option(
            "--reset", metavar="COUNTER", help="Set a total to 0: processed or failed; repeat."
        ),
    ] = None,
) -> None:
    """Processed and failed totals, set sizes, the last 7 days (--days)."""
    from . import api

    if reset:
        counters = list(dict.fromkeys(reset))
        bad = [n for n in counters if n not in ("processed", "failed")]
        if bad:
            fail(f"--reset {bad[0]}: give processed or failed")
        _run_admin(app_spec, redis_url, namespace, lambda a: api.reset_stats(a, *counters))
        typer.echo(f"reset to 0: {', '.join(counters)}")
        return
    s = _run_admin(app_spec, redis_url, namespace, lambda a: api.Stats.fetch(a, days=days))
    if as_json:
        import msgspec

        _print_json(msgspec.structs.asdict(s))
        return
    names = ("processed", "failed", "enqueued", "scheduled", "retries", "dead", "processes", "busy")
    rows = [[name, getattr(s, name)] for name in (*names, "expired")]
    rows.append(["default latency", f"{s.default_queue_latency}s"])
    _table(["", ""], rows, header=False)
    typer.echo("")
    _table(
        ["day", "processed", "failed"],
        [[d, v["processed"], v["failed"]] for d, v in s.history.items()],
    )


@app.command()
def queues(
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="A queue: list its jobs, next to run first."),
    ] = None,
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    as_json: JsonOpt = False,
    limit: LimitOpt = 50,
    offset: OffsetOpt = 0,
    delete: Annotated[
        str | None, typer.Option("--delete", metavar="JID", help="Delete this job from NAME.")
    ] = None,
    find: Annotated[
        str | None, typer.Option("--find", metavar="JID", help="Show this job if in NAME.")
    ] = None,
    clear: Annotated[str | None, typer.Option("--clear", help="Delete every job in QUEUE.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --clear.")] = False,
    pause: Annotated[
        str | None, typer.Option("--pause", metavar="QUEUE", help="Stop workers fetching QUEUE.")
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", metavar="QUEUE", help="Resume a paused QUEUE.")
    ] = None,
) -> None:
    """Queues with their size and latency (age of the oldest job, seconds); with NAME,
    the jobs waiting in that queue. --pause/--resume QUEUE: Sidekiq Pro's queue pause."""
    from . import api

    if pause is not None or resume is not None:
        _pause_or_resume(app_spec, redis_url, namespace, pause, resume)
        return

    if clear is not None:
        if not yes:
            fail(f"--clear {clear} deletes every job waiting in it: add --yes to confirm")
        cleared = clear
        n = _run_admin(app_spec, redis_url, namespace, lambda a: api.clear_queue(a, cleared))
        typer.echo(f"cleared queue {cleared}: {n} jobs deleted")
        return
    if delete is not None:
        if name is None:
            fail(f"--delete {delete}: name the queue, as in asyncjobs queues default --delete JID")
        queue, jid = name, delete
        rec = _run_admin(app_spec, redis_url, namespace, lambda a: api.delete_queued(a, queue, jid))
        typer.echo(f"{rec.job} {jid}: deleted from queue {queue}")
        return
    if find is not None and name is None:
        fail(f"--find {find}: name the queue, as in asyncjobs queues default --find JID")
    if name is not None:
        queue = name
        if find is not None:
            jid = find
            jobs = [
                _run_admin(app_spec, redis_url, namespace, lambda a: api.find_queued(a, queue, jid))
            ]
        else:
            jobs = _run_admin(
                app_spec,
                redis_url,
                namespace,
                lambda a: api.queue_entries(a, queue, offset=offset, limit=limit),
            )
        if as_json:
            _print_json([e.to_dict() for e in jobs])
            return
        _table(
            ["jid", "job", "enqueued", "waiting", "retries", "args"],
            [
                [
                    e.jid,
                    e.job,
                    _when(e.enqueued_at),
                    _ago(e.enqueued_at or e.created_at),
                    e.retry_count,
                    _args(e.args),
                ]
                for e in jobs
            ],
        )
        return
    qs = _run_admin(app_spec, redis_url, namespace, api.queues)
    if as_json:
        _print_json([{"name": q.name, "size": q.size, "latency": q.latency} for q in qs])
        return
    _table(["queue", "size", "latency_s"], [[q.name, q.size, q.latency] for q in qs])
    paused = _run_admin(app_spec, redis_url, namespace, api.paused_queues)
    if paused:
        typer.echo(f"paused: {', '.join(paused)}")


def _pause_or_resume(
    app_spec: str | None,
    redis_url: str | None,
    namespace: str | None,
    pause: str | None,
    resume: str | None,
) -> None:
    """``queues --pause QUEUE`` / ``--resume QUEUE``."""
    from . import api

    if pause is not None and resume is not None:
        fail("give either --pause QUEUE or --resume QUEUE, not both")
    if pause is not None:
        name = pause
        changed = _run_admin(app_spec, redis_url, namespace, lambda a: api.pause_queue(a, name))
        typer.echo(f"queue {name}: paused" if changed else f"queue {name}: already paused")
        return
    assert resume is not None
    name = resume
    changed = _run_admin(app_spec, redis_url, namespace, lambda a: api.resume_queue(a, name))
    typer.echo(f"queue {name}: resumed" if changed else f"queue {name}: was not paused")


@app.command()
def job(
    jid: Annotated[str, typer.Argument(metavar="JID", help="The job's jid.")],
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find a job wherever it is (queued, scheduled, retrying, running, dead): where,
    its payload, and its last error with the backtrace; for a job with keep_result or
    track_status, its status and progress too (and after it ended)."""
    from . import api

    async def find(a: Any) -> tuple[Any, Any]:
        status = await api.job_status(a, jid)
        try:
            return await api.locate_job(a, jid), status
        except api.JobNotFound:
            if status.state == "unknown":
                raise
            return None, status

    loc, status = _run_admin(app_spec, redis_url, namespace, find)
    if as_json:
        data = loc.to_dict() if loc is not None else {"state": status.state}
        if status.state != "unknown":
            data["status"] = api.status_dict(status)
        _print_json(data)
        return
    if loc is None:
        _table(["", ""], [["jid", jid], *_status_rows(status)], header=False)
        return
    r = loc.record
    where = {
        "queued": f"queued in {r.queue}",
        "scheduled": f"scheduled for {_when(r.score)}",
        "retry": f"retrying at {_when(r.score)}",
        "dead": f"dead since {_when(r.score)}",
        "running": f"running in process {loc.process}",
    }[loc.state]
    rows: list[list[Any]] = [
        ["jid", r.jid],
        ["job", r.job],
        ["state", where],
        ["queue", r.queue],
        ["created", _when(r.created_at)],
        ["enqueued", _when(r.enqueued_at)],
    ]
    if loc.state == "running":
        rows.append(["started", _when(loc.started_at)])
    rows.append(["retries", f"{r.retry_count} of {r.retry}"])
    if status.state != "unknown":
        rows.extend(_status_rows(status))
    if r.error_class:
        rows.append(["failed", _when(r.failed_at)])
        rows.append(["error", f"{r.error_class}: {r.error_message}"])
    _table(["", ""], rows, header=False)
    import json

    typer.echo("\nargs:")
    typer.echo(json.dumps(r.args, indent=2, default=str))
    if r.meta:
        typer.echo("meta:")
        typer.echo(json.dumps(r.meta, indent=2, default=str))
    if r.error_backtrace:
        typer.echo("backtrace:")
        for line in r.error_backtrace:
            typer.echo(line.rstrip("\n"))


def _status_rows(status: Any) -> list[list[Any]]:
    """A tracked job's status rows (#14): its state, since when, and its progress."""
    rows: list[list[Any]] = [["status", f"{status.state} since {_when(status.at)}"]]
    if status.process:
        rows.append(["process", status.process])
    if status.error_class:
        rows.append(["last error", f"{status.error_class}: {status.error_message}"])
    p = status.progress
    if p is not None:
        text = f"{p.fraction:.0%}" + (f" {p.message}" if p.message else "")
        rows.append(["progress", f"{text} ({_when(p.at)})"])
        if p.meta:
            rows.append(["progress meta", json.dumps(p.meta, default=str)])
    return rows


@app.command()
def cancel(
    jid: Annotated[str, typer.Argument(metavar="JID", help="The job's jid.")],
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
) -> None:
    """Cancel a job: removed if it waits (queued, scheduled, retrying); cancelled on the
    host that runs it if running (its outcome: cancelled). Exits 1 if not found."""
    from . import api

    done = _run_admin(app_spec, redis_url, namespace, lambda a: api.cancel_job(a, jid))
    if done == "not found":
        typer.echo(f"{jid}: not found (finished, dead, or unknown)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{jid}: {done}")


def _set_command(command_name: str, cls_name: str, help_text: str) -> None:
    def command(
        app_spec: AppOpt = None,
        redis_url: UrlOpt = None,
        namespace: NsOpt = None,
        as_json: JsonOpt = False,
        limit: LimitOpt = 50,
        offset: OffsetOpt = 0,
        job: Annotated[str | None, typer.Option("--job", help="Only this job name.")] = None,
        match: Annotated[
            str | None,
            typer.Option(
                "--match",
                metavar="GLOB",
                help="Only entries whose JSON matches GLOB (*text*; no * means anywhere).",
            ),
        ] = None,
        after: Annotated[
            str | None,
            typer.Option(
                "--after",
                metavar="SCORE:JID",
                help="Start after this entry (the cursor a page ends with); survives deletes.",
            ),
        ] = None,
        retry_all: Annotated[
            bool, typer.Option("--retry-all", help="Enqueue every entry now.")
        ] = False,
        kill_all: Annotated[
            bool,
            typer.Option("--kill-all", help="Move every entry to the dead set (not for dead)."),
        ] = False,
        notify: Annotated[
            bool,
            typer.Option(
                "--notify", help="With --kill-all: run the death handlers (--app) for each."
            ),
        ] = False,
        clear: Annotated[bool, typer.Option("--clear", help="Delete every entry.")] = False,
        yes: Annotated[bool, typer.Option("--yes", help="Confirm --clear.")] = False,
    ) -> None:
        from . import api

        cls = getattr(api, cls_name)
        kind = cls.kind
        if retry_all:
            n = _run_admin(app_spec, redis_url, namespace, lambda a: cls(a).retry_all())
            typer.echo(f"enqueued {n} jobs from the {kind} set")
            return
        if notify and not kill_all:
            fail("--notify goes with --kill-all")
        if kill_all:
            n = _run_admin(app_spec, redis_url, namespace, lambda a: cls(a).kill_all(notify=notify))
            typer.echo(f"killed {n} jobs from the {kind} set (moved to the dead set)")
            return
        if clear:
            if not yes:
                fail(f"--clear deletes every entry of the {kind} set: add --yes to confirm")
            n = _run_admin(app_spec, redis_url, namespace, lambda a: cls(a).clear())
            typer.echo(f"cleared the {kind} set: {n} entries deleted")
            return
        if offset and after is not None:
            fail("--offset and --after: give one (--after pages by time and jid)")
        next_page: str | None = None
        if offset:
            entries = _run_admin(
                app_spec,
                redis_url,
                namespace,
                lambda a: cls(a).entries(offset=offset, limit=limit, job=job, match=match),
            )
        else:
            page = _run_admin(
                app_spec,
                redis_url,
                namespace,
                lambda a: cls(a).page(after=after, limit=limit, job=job, match=match),
            )
            entries, next_page = page.entries, page.next
        if as_json:
            _print_json([e.to_dict() for e in entries])
            return
        _table(
            ["jid", "job", "queue", "died" if kind == "dead" else "due", "retries", "error"],
            [
                [
                    e.jid,
                    e.job,
                    e.queue,
                    _when(e.score),
                    e.retry_count,
                    f"{e.error_class}: {e.error_message}"[:60] if e.error_class else "",
                ]
                for e in entries
            ],
        )
        if next_page is not None:
            typer.echo(f"next page: --after {next_page}")

    command.__doc__ = help_text
    app.command(name=command_name)(command)


_set_command("scheduled", "ScheduledSet", "Jobs waiting for their time (delay=, at=).")
_set_command("retries", "RetrySet", "Failed jobs waiting for their next attempt.")
_set_command("dead", "DeadSet", "Jobs out of retries, killed, or undecodable; newest first.")


def _jid_command(name: str, help_text: str) -> None:
    def command(
        jid: Annotated[str, typer.Argument(metavar="JID", help="The job's jid.")],
        app_spec: AppOpt = None,
        redis_url: UrlOpt = None,
        namespace: NsOpt = None,
    ) -> None:
        from . import api

        async def act(a: Any) -> str:
            s, rec = await api.find_job(a, jid)
            await getattr(s, name)(jid)
            return f"{rec.job} {jid}: {name} done (was in the {s.kind} set)"

        typer.echo(_run_admin(app_spec, redis_url, namespace, act))

    command.__doc__ = help_text
    app.command(name=name)(command)


_jid_command("retry", "Enqueue a scheduled, retry or dead job now.")
_jid_command("delete", "Delete a job from the scheduled, retry or dead set.")


@app.command(name="kill")
def kill(
    jid: Annotated[str, typer.Argument(metavar="JID", help="The job's jid.")],
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    notify: Annotated[
        bool,
        typer.Option(
            "--notify/--no-notify",
            help="Run the app's death handlers once (they are known with --app).",
        ),
    ] = True,
) -> None:
    """Move a scheduled or retry job to the dead set; with --app, the app's death
    handlers run once (RuntimeError "killed by API") unless --no-notify."""
    from . import api

    async def act(a: Any) -> str:
        s, rec = await api.find_job(a, jid)
        await s.kill(jid, notify=notify)
        return f"{rec.job} {jid}: kill done (was in the {s.kind} set)"

    typer.echo(_run_admin(app_spec, redis_url, namespace, act))


@app.command()
def processes(
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Live worker processes (from their heartbeats) and the jobs each holds now."""
    from . import api

    async def read(a: Any) -> tuple[list[Any], list[Any]]:
        ps = api.ProcessSet(a)
        return await ps.list(), await ps.work()

    procs, work = _run_admin(app_spec, redis_url, namespace, read)
    if as_json:
        import msgspec

        by_process: dict[str, list[dict[str, Any]]] = {}
        for w in work:
            by_process.setdefault(w.process, []).append(
                {"started_at": w.started_at, **w.record.to_dict()}
            )
        _print_json(
            [{**msgspec.structs.asdict(p), "jobs": by_process.get(p.id, [])} for p in procs]
        )
        return
    _table(
        [
            "process",
            "tag",
            "busy",
            "concurrency",
            "quiet",
            "embedded",
            "rss",
            "started",
            "last beat",
            "version",
        ],
        [
            [
                p.id,
                p.tag,
                p.busy,
                p.concurrency,
                "yes" if p.quiet else "",
                "yes" if p.embedded else "",
                f"{p.rss / 1024:.0f} MiB" if p.rss else "-",
                _when(p.started_at),
                _ago(p.beat) + " ago",
                p.version,
            ]
            for p in procs
        ],
    )
    for p in procs:
        for c in p.capsules:
            mode = c.get("mode", "weighted")
            weights = c.get("weights") or dict.fromkeys(c.get("queues", []), 1)
            order = " ".join(q if mode == "strict" else f"{q}={w}" for q, w in weights.items())
            typer.echo(f"capsule: {p.id}: {c.get('name')} {mode} x{c.get('concurrency')}: {order}")
        for loop, error in sorted(p.unhealthy.items()):
            typer.echo(f"unhealthy: {p.id}: {loop}: {error}")
    if procs:
        typer.echo("")
        _table(
            ["process", "jid", "job", "queue", "started", "runtime", "args"],
            [
                [
                    w.process,
                    w.record.jid,
                    w.record.job,
                    w.record.queue,
                    _when(w.started_at) if w.started_at else "-",
                    _ago(w.started_at),
                    _args(w.record.args),
                ]
                for w in work
            ],
        )


def _control_command(command_name: str, help_text: str) -> None:
    def command(
        process_id: Annotated[
            list[str] | None, typer.Argument(metavar="[PROCESS_ID]...", help="Process ids.")
        ] = None,
        all_: Annotated[bool, typer.Option("--all", help="Every live process.")] = False,
        app_spec: AppOpt = None,
        redis_url: UrlOpt = None,
        namespace: NsOpt = None,
    ) -> None:
        from . import api

        if not process_id and not all_:
            fail(f"give PROCESS_ID (see asyncjobs processes) or --all to {command_name}")

        async def act(a: Any) -> tuple[int, list[str], list[str]]:
            ps = api.ProcessSet(a)
            procs = await ps.list()
            live = [p.id for p in procs]
            # An embedded worker (app.run_worker()) refuses remote quiet and stop: it
            # is stopped by the program it runs in.
            embedded = {p.id for p in procs if p.embedded}
            wanted = live if all_ else list(dict.fromkeys(process_id or []))
            # An id with no live heartbeat (a typo, a process gone) would take the
            # command into a list nobody reads: name it instead of counting it as sent.
            unknown = [i for i in wanted if i not in live]
            refused = [i for i in wanted if i in embedded]
            known = [i for i in wanted if i in live and i not in embedded]
            return (await ps.send(command_name, known) if known else 0), unknown, refused

        n, unknown, refused = _run_admin(app_spec, redis_url, namespace, act)
        if n or not (unknown or refused):
            typer.echo(f"{command_name} sent to {n} processes (acted on at their next heartbeat)")
        if unknown or refused:
            problems = []
            if unknown:
                problems.append(
                    f"no live process {', '.join(unknown)}: not sent there "
                    "(asyncjobs processes lists the live ones)"
                )
            if refused:
                problems.append(
                    f"{', '.join(refused)}: embedded (app.run_worker()), refuses remote "
                    f"{command_name}: not sent; the program that runs it stops it by "
                    "leaving its run_worker() block"
                )
            fail("; ".join(problems))

    command.__doc__ = help_text
    app.command(name=command_name)(command)


_control_command("quiet", "Tell worker processes to stop fetching new jobs.")
_control_command("stop", "Tell worker processes to shut down gracefully.")


@app.command()
def check(
    app_spec: Annotated[str, typer.Argument(metavar="APP", help="MODULE:ATTRIBUTE of your App")],
    redis_url: UrlOpt = None,
) -> None:
    """Load the app, list its jobs, check Redis and the live workers' background loops;
    one line per problem, exit 1 if any."""
    application = _guard(lambda: load_app(app_spec))
    if redis_url:
        application.redis_url = redis_url
    problems: list[str] = []
    typer.echo(
        f"app {app_spec}: namespace {application.keys.namespace}, {len(application.jobs)} jobs"
    )
    for name, job in sorted(application.jobs.items()):
        timeout = f"{job.timeout:g}s" if job.timeout else "none"
        typer.echo(f"  {name}  queue={job.queue} retry={job.retry} timeout={timeout}")
    for name, entry in sorted(application.periodic_entries.items()):
        typer.echo(
            f"  periodic {name}  {entry.cron.expression!r} {entry.cron.tz} -> {entry.job.name}"
        )
    if not application.jobs:
        problems.append("no jobs are registered on this app (is @app.job used on it?)")

    async def probe() -> None:
        from ._redis import mask_url

        try:
            client = await application.connect()
            info = await client.info("server")
            version = str(info.get("redis_version", "0"))
            typer.echo(f"redis {mask_url(application.redis_url)}: version {version}")
            if tuple(int(x) for x in version.split(".")[:2]) < (6, 2):
                problems.append(f"Redis {version} is too old: asyncjobs needs 6.2 or newer")
            assert application.store is not None
            await application.store.load_scripts()
            from . import api

            # A live worker whose background loop keeps failing (a bug, logged at ERROR)
            # would otherwise go unnoticed until promotion or reaping is missed.
            for proc in await api.ProcessSet(application).list():
                for loop, error in sorted(proc.unhealthy.items()):
                    problems.append(f"process {proc.id}: its {loop} loop is failing: {error}")
        except AsyncJobsError as exc:
            problems.append(str(exc))
        except REDIS_ERRORS as exc:
            problems.append(str(map_error(application.redis_url, exc)))
        finally:
            await application.aclose()

    run_async(probe)
    for p in problems:
        typer.echo(f"problem: {p}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("ok")


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
) -> None:
    """Serve the web dashboard (docs/guides/dashboard.md); needs the web extra. Its CSRF
    secret is ASYNCJOBS_WEB_SECRET, else one made at start."""
    import os

    try:
        import uvicorn

        from .web import create_app
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
        application, secret=os.environ.get("ASYNCJOBS_WEB_SECRET"), read_only=read_only
    )
    uvicorn.run(dashboard, host=host.strip("[]"), port=int(port), log_level="info")


@app.command()
def version() -> None:
    """Print the asyncjobs version."""
    from ._version import __version__

    typer.echo(__version__)


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
    from . import api

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


# -- periodic entries (asyncjobs.api) ------------------------------------------------

periodic_app = typer.Typer(
    cls=_Group,
    help="Periodic (cron) entries: list, pause, resume, run now.",
    no_args_is_help=True,
)
app.add_typer(periodic_app, name="periodic")
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The entry's name (see list).")]


@periodic_app.command("list")
def periodic_list(
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    as_json: JsonOpt = False,
    history: Annotated[
        int, typer.Option("--history", min=0, help="Recent runs to show per entry.")
    ] = 3,
) -> None:
    """Periodic entries with their last and next run and recent runs (UTC)."""
    from . import api

    entries = _run_admin(
        app_spec, redis_url, namespace, lambda a: api.periodic_entries(a, history=history)
    )
    if as_json:
        import msgspec

        _print_json(msgspec.to_builtins(entries))
        return
    _table(
        ["name", "cron", "tz", "job", "queue", "state", "last run", "next run"],
        [
            [
                e.name,
                e.cron,
                e.tz,
                e.job,
                e.queue,
                "paused" if e.paused else "active",
                _when(e.last_enqueued_at),
                _when(e.next_tick),
            ]
            for e in entries
        ],
    )
    runs = [(e.name, r) for e in entries for r in e.history]
    if runs:
        typer.echo("")
        _table(
            ["name", "tick", "enqueued", "jid", "how"],
            [[n, _when(r.tick), _when(r.enqueued_at), r.jid, r.how] for n, r in runs],
        )


def _periodic_act(verb: str, help_text: str) -> None:
    def command(
        name: NameArg,
        app_spec: AppOpt = None,
        redis_url: UrlOpt = None,
        namespace: NsOpt = None,
    ) -> None:
        from . import api

        fn = {
            "pause": api.pause_periodic,
            "resume": api.resume_periodic,
            "run": api.run_periodic,
        }[verb]
        result = _run_admin(app_spec, redis_url, namespace, lambda a: fn(a, name))
        if verb == "run":
            typer.echo(f"{name}: enqueued {result}")
        else:
            typer.echo(f"{name}: {verb}d")

    command.__doc__ = help_text
    periodic_app.command(name=verb)(command)


_periodic_act("pause", "Pause an entry: its ticks are skipped until it is resumed.")
_periodic_act("resume", "Resume a paused entry from its next tick.")
_periodic_act("run", "Enqueue one run of an entry now (the schedule is unchanged).")


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
        from ._redis import STORE_ERRORS

        found = _find(exc, (AsyncJobsError, *STORE_ERRORS))
        if found is None:
            raise
        if not isinstance(found, AsyncJobsError):
            found = map_error("the configured URL", found)
        typer.echo(f"asyncjobs: error: {found}", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
