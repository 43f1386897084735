"""asyncjobs worker: run one worker process, or a supervisor of several."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .._errors import ConfigError
from .._redis import REDIS_ERRORS, map_error
from .._settings import Settings, capsules_from, load_settings, parse_size
from .._worker.heartbeat import rss_kib
from .._worker.memory import REPLACE_EXIT, mib
from .._worker.supervisor import Supervisor, resolve_processes
from ._base import _find, _guard, app, load_app, run_async, setup_logging


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
            help=(
                "Redis URL: redis://, rediss://, unix:// or redis+sentinel:// "
                "(overrides the settings file and the app's)."
            ),
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
    max_memory: Annotated[
        str | None,
        typer.Option(
            "--max-memory",
            envvar="ASYNCJOBS_MAX_MEMORY",
            metavar="SIZE",
            help="Replace a worker process whose RSS passes SIZE (500MB, 1.5GiB, 800M): it "
            f"quiets, finishes its jobs and exits {REPLACE_EXIT}. Default: no limit.",
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
        "max_memory": max_memory,
    }
    overrides = {name: value for name, value in given.items() if value is not None}
    application, settings = _guard(lambda: _worker_settings(config, overrides))
    specs = _guard(lambda: capsules_from(settings))
    n = _guard(lambda: resolve_processes(settings.processes))
    if n > 1:
        _guard(lambda: run_async(application.ping))  # fail fast, one line
        argv = _without_processes(sys.argv[1:])
        raise typer.Exit(Supervisor(n, [*argv, "--processes", "1"]).run())
    code = _guard(lambda: run_async(lambda: _run_worker(application, settings, specs)))
    if code:
        raise typer.Exit(code)


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
    limit = None if settings.max_memory is None else parse_size(settings.max_memory)
    setup_logging(settings.log_level, settings.log_format)
    application = load_app(settings.app)
    if limit is not None and (rss := rss_kib() * 1024) > limit:
        # It would be replaced as soon as it started, again and again.
        raise ConfigError(
            f"--max-memory {settings.max_memory} ({mib(limit)}) is below this worker's "
            f"memory with the app loaded ({mib(rss)}): raise it, to a few times that"
        )
    if settings.redis_url:
        from .._redis import _check_url

        _check_url(settings.redis_url)
        application.redis_url = settings.redis_url
    if settings.namespace:
        from .._keys import Keys

        application.keys = Keys(settings.namespace)
    return application, settings


async def _run_worker(application: Any, settings: Settings, specs: list[Any]) -> int:
    """Run one worker process until it stops; Redis errors become one line. The exit
    status: 0, or REPLACE_EXIT when it stopped over its memory limit."""
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
        max_memory=None if settings.max_memory is None else parse_size(settings.max_memory),
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
    return REPLACE_EXIT if w.replace else 0


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
