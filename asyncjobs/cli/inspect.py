"""stats, queues, job: what is in Redis (asyncjobs.api); queues pauses and resumes."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ._admin import AppOpt, JsonOpt, LimitOpt, NsOpt, OffsetOpt, UrlOpt, _run_admin
from ._base import app, fail
from ._output import _ago, _args, _print_json, _table, _when


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
    from .. import api

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
    from .. import api

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
    from .. import api

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
    from .. import api

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
    typer.echo(r.args if r.encrypted else json.dumps(r.args, indent=2, default=str))
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
