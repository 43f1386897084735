"""asyncjobs periodic: list, pause, resume, run and remove the periodic (cron) entries."""

from __future__ import annotations

from typing import Annotated

import typer

from ._admin import AppOpt, JsonOpt, NsOpt, UrlOpt, _run_admin
from ._base import _Group, app, fail
from ._output import _print_json, _table, _when

periodic_app = typer.Typer(
    cls=_Group,
    help="Periodic (cron) entries: list, pause, resume, run now, remove.",
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
    from .. import api

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
        from .. import api

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


@periodic_app.command("remove")
def periodic_remove(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NAME]...", help="The entries' names (see list)."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every entry.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --all.")] = False,
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
) -> None:
    """Remove entries with their state and history: no worker enqueues them any more
    (until a worker whose code declares one starts: it writes it again)."""
    from .. import api

    if names and all_:
        fail("give NAME... or --all, not both")
    if all_:
        if not yes:
            fail("--all removes every periodic entry: add --yes to confirm")
        removed = _run_admin(app_spec, redis_url, namespace, api.clear_periodic)
        listed = f": {', '.join(removed)}" if removed else ""
        noun = "entry" if len(removed) == 1 else "entries"
        typer.echo(f"removed {len(removed)} periodic {noun}{listed}")
        return
    if not names:
        fail("give NAME (see asyncjobs periodic list) or --all --yes to remove")
    wanted = list(dict.fromkeys(names))
    _run_admin(app_spec, redis_url, namespace, lambda a: api.remove_periodic(a, *wanted))
    for name in wanted:
        typer.echo(f"{name}: removed")
