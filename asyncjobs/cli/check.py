"""asyncjobs check: the app loads, Redis answers, the live workers' loops are healthy."""

from __future__ import annotations

from typing import Annotated

import typer

from .._errors import AsyncJobsError
from .._redis import REDIS_ERRORS, map_error
from ._admin import UrlOpt
from ._base import _guard, app, load_app, run_async


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
        from .._redis import mask_url

        try:
            client = await application.connect()
            info = await client.info("server")
            version = str(info.get("redis_version", "0"))
            typer.echo(f"redis {mask_url(application.redis_url)}: version {version}")
            if tuple(int(x) for x in version.split(".")[:2]) < (6, 2):
                problems.append(f"Redis {version} is too old: asyncjobs needs 6.2 or newer")
            assert application.store is not None
            await application.store.load_scripts()
            from .. import api

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
