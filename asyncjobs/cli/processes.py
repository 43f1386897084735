"""processes, quiet, stop: the live worker processes and their remote control."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ._admin import AppOpt, JsonOpt, NsOpt, UrlOpt, _run_admin
from ._base import app, fail
from ._output import _ago, _args, _print_json, _table, _when


@app.command()
def processes(
    app_spec: AppOpt = None,
    redis_url: UrlOpt = None,
    namespace: NsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Live worker processes (from their heartbeats) and the jobs each holds now."""
    from .. import api

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
        from .. import api

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
