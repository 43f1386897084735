"""Acting on jobs: cancel; the scheduled, retry and dead sets; retry, delete, kill."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ._admin import AppOpt, JsonOpt, LimitOpt, NsOpt, OffsetOpt, UrlOpt, _run_admin
from ._base import app, fail
from ._output import _print_json, _table, _when


@app.command()
def cancel(
    jid: Annotated[str, typer.Argument(metavar="JID", help="The job's jid.")],
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
) -> None:
    """Cancel a job: removed if it waits (queued, scheduled, retrying); cancelled on the
    host that runs it if running (its outcome: cancelled). Exits 1 if not found."""
    from .. import api

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
        from .. import api

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
        from .. import api

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
    from .. import api

    async def act(a: Any) -> str:
        s, rec = await api.find_job(a, jid)
        await s.kill(jid, notify=notify)
        return f"{rec.job} {jid}: kill done (was in the {s.kind} set)"

    typer.echo(_run_admin(app_spec, redis_url, namespace, act))
