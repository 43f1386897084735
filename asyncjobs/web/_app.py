"""The dashboard's routes: every read and write goes through :mod:`asyncjobs.api`."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import inspect
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import api
from .._errors import AsyncJobsError, BatchError, ConfigError

if TYPE_CHECKING:
    from .._app import App

log = logging.getLogger("asyncjobs.web")

HERE = Path(__file__).parent
CSRF_COOKIE = "asyncjobs_csrf"
# The sets, by the name of their page.
KINDS: dict[str, type[api.SortedSet]] = {
    "scheduled": api.ScheduledSet,
    "retries": api.RetrySet,
    "dead": api.DeadSet,
}
PAGE_SIZE = 25
# The failed jobs a batch's page links to (asyncjobs batch BID --json lists them all).
FAILED_SHOWN = 100
# The history ranges the overview offers: a day, a week, a month, three and six months.
HISTORY_DAYS = (1, 7, 30, 90, 180)
# The windows the Metrics page offers, in hours (the per-minute metrics live 72 hours).
METRICS_HOURS = (1, 2, 4, 8, 24, 48, 72)
# Lines drawn on the Metrics page's chart: the busiest jobs.
CHART_JOBS = 6
CHART_W, CHART_H = 720.0, 180.0

Endpoint = Callable[[Request], Awaitable[Response]]
# create_app(auth=...): who the request is from (a name, or True), or falsy to refuse it.
Auth = Callable[[Request], "object | Awaitable[object]"]


def _ts(value: float | None) -> str:
    if not value:
        return ""
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60)}s"
    if s < 86400:
        return f"{int(s // 3600)}h {int(s % 3600 // 60)}m"
    return f"{int(s // 86400)}d {int(s % 86400 // 3600)}h"


def _ago(value: float | None) -> str:
    return f"{_duration(time.time() - value)} ago" if value else ""


def _args(value: Any, width: int = 60) -> str:
    if isinstance(value, str):  # "<encrypted>": arguments are otherwise an object
        return value
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _ms(value: float | None) -> str:
    """A duration in milliseconds, short: 0.4 ms, 37 ms, 1.3 s, 2.5 min."""
    if value is None:
        return "–"
    if value < 10:
        return f"{value:.1f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 120_000:
        return f"{value / 1000:.1f} s"
    return f"{value / 60_000:.1f} min"


def _lines(report: api.MetricsReport, jobs: list[str], what: str) -> dict[str, Any]:
    """SVG polylines of ``what`` (runs or seconds) per step for ``jobs``, scaled to the
    chart's box, and the top of the scale."""
    values = [[getattr(p, what).get(j, 0) for p in report.series] for j in jobs]
    top = max([v for row in values for v in row] + [0]) or 1
    n = max(1, len(report.series) - 1)
    lines = []
    for job, row in zip(jobs, values, strict=True):
        points = " ".join(
            f"{i * CHART_W / n:.1f},{CHART_H - v * CHART_H / top:.1f}" for i, v in enumerate(row)
        )
        lines.append({"job": job, "points": points, "total": sum(row)})
    return {"lines": lines, "top": top, "w": CHART_W, "h": CHART_H}


def _bars(counts: list[int], bounds: list[float]) -> list[dict[str, Any]]:
    """A histogram's bars: label (upper bound), count, height in percent."""
    top = max([*counts, 1])
    labels = [_ms(b) for b in bounds] + [f"> {_ms(bounds[-1])}"]
    return [
        {"label": label, "count": c, "height": round(c * 100 / top, 1)}
        for label, c in zip(labels, counts, strict=True)
    ]


def _rss(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB" if kib else ""


class Dashboard:
    """One dashboard over one jobs app: its templates, its CSRF secret, its routes."""

    def __init__(
        self, jobs_app: App, secret: str | None, read_only: bool, poll: float, auth: Auth | None
    ) -> None:
        self.jobs = jobs_app
        self.auth = auth
        self.secret = (secret or secrets.token_hex(32)).encode()
        self.read_only = read_only
        self.poll = poll
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.env.filters.update(ts=_ts, ago=_ago, duration=_duration, args=_args, rss=_rss, ms=_ms)

    # -- CSRF: a nonce in a cookie, and the form's token is its HMAC with the secret ---

    def _token(self, nonce: str) -> str:
        return hmac.new(self.secret, nonce.encode(), hashlib.sha256).hexdigest()

    async def check_csrf(self, request: Request) -> dict[str, Any]:
        """The POSTed form, once its CSRF token is checked (403 otherwise)."""
        if self.read_only:
            raise HTTPException(403, "read-only dashboard: actions are disabled")
        form = await request.form()
        nonce = request.cookies.get(CSRF_COOKIE, "")
        token = form.get("csrf")
        if (
            not nonce
            or not isinstance(token, str)
            or not hmac.compare_digest(token, self._token(nonce))
        ):
            raise HTTPException(403, "bad or missing CSRF token: reload the page and try again")
        return {"form": form, "jids": [str(j) for j in form.getlist("jid")]}

    def render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        nonce = request.cookies.get(CSRF_COOKIE) or secrets.token_hex(16)
        html = self.env.get_template(template).render(
            request=request,
            url=request.url_for,
            csrf=self._token(nonce),
            read_only=self.read_only,
            poll=self.poll,
            flash=request.query_params.get("flash", ""),
            namespace=self.jobs.keys.namespace,
            **ctx,
        )
        response = HTMLResponse(html, status_code=status)
        if CSRF_COOKIE not in request.cookies:
            root = request.scope.get("root_path", "") or "/"
            response.set_cookie(
                CSRF_COOKIE,
                nonce,
                path=root,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    def back(self, url: URL | str, flash: str, **query: str) -> Response:
        """303 to ``url`` with a one-line message (POST, redirect, GET)."""
        params = {k: v for k, v in query.items() if v}
        params["flash"] = flash
        return RedirectResponse(f"{url}?{urlencode(params)}", status_code=303)

    async def allowed(self, request: Request) -> None:
        """Ask the auth hook about this request (403 when it says no); remember who."""
        if self.auth is None:
            return
        who = self.auth(request)
        if inspect.isawaitable(who):
            who = await who
        if not who:
            raise HTTPException(403, "not allowed: the dashboard's auth hook refused you")
        request.state.user = who if isinstance(who, str) else None

    def acted(self, request: Request, what: str) -> None:
        """Log an action with who did it: the auth hook's name for them, else the address."""
        who = getattr(request.state, "user", None)
        if not who:
            who = request.client.host if request.client else "?"
        log.info("dashboard %s by %s", what, who)

    # -- pages -----------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        try:
            days = int(request.query_params.get("days", "7"))
        except ValueError:
            days = 7
        if days not in HISTORY_DAYS:
            days = 7
        stats = await api.Stats.fetch(self.jobs, days=days)
        top = max([max(v["processed"], v["failed"]) for v in stats.history.values()] + [1])
        return self.render(
            request,
            "overview.html",
            page="overview",
            stats=stats,
            days=days,
            ranges=HISTORY_DAYS,
            top=top,
            queues=await api.queues(self.jobs),
            paused=set(await api.paused_queues(self.jobs)),
            redis=await api.redis_info(self.jobs),
        )

    async def stats_json(self, request: Request) -> Response:
        stats = await api.Stats.fetch(self.jobs, days=1)
        data = msgspec.structs.asdict(stats)
        data.pop("history")
        data["time"] = time.time()
        return JSONResponse(data)

    def _hours(self, request: Request) -> int:
        try:
            hours = int(request.query_params.get("hours", "1"))
        except ValueError:
            hours = 1
        return hours if hours in METRICS_HOURS else 1

    async def metrics_page(self, request: Request) -> Response:
        """Sidekiq 8's Metrics page: per job over a window, runs, failures, execution
        time and dispatch latency (p50, p95, p99), and a chart of the busiest jobs."""
        hours = self._hours(request)
        what = "runs" if request.query_params.get("chart") == "runs" else "seconds"
        report = await api.job_metrics(self.jobs, hours)
        needle = request.query_params.get("filter", "").strip()
        jobs = [j for j in report.jobs if needle.lower() in j.job.lower()]
        chart = _lines(report, [j.job for j in jobs[:CHART_JOBS]], what)
        return self.render(
            request,
            "metrics.html",
            page="metrics",
            report=report,
            jobs=jobs,
            hours=hours,
            ranges=METRICS_HOURS,
            chart=chart,
            what=what,
            needle=needle,
            enabled=self.jobs.metrics,
        )

    async def metrics_job(self, request: Request) -> Response:
        """One job's metrics: its histograms of execution time and dispatch latency."""
        name = request.path_params["name"]
        hours = self._hours(request)
        report = await api.job_metrics(self.jobs, hours, job=name)
        job = report.jobs[0] if report.jobs else None
        return self.render(
            request,
            "metrics_job.html",
            page="metrics",
            name=name,
            job=job,
            report=report,
            hours=hours,
            ranges=METRICS_HOURS,
            chart=_lines(report, [name], "runs"),
            execution=_bars(job.histogram, report.bounds_ms) if job else [],
            latency=_bars(job.latency_histogram, report.bounds_ms) if job else [],
        )

    async def prometheus(self, request: Request) -> Response:
        """The Prometheus exposition, read from Redis now (asyncjobs.prometheus)."""
        try:
            from ..prometheus import CONTENT_TYPE_LATEST, render
        except ImportError:
            return Response(
                "prometheus_client is not installed: pip install 'asyncjobs-redis[metrics]'\n",
                status_code=501,
                media_type="text/plain",
            )
        return Response(await render(self.jobs), media_type=CONTENT_TYPE_LATEST)

    async def busy(self, request: Request) -> Response:
        procs = await api.ProcessSet(self.jobs).list()
        work = await api.ProcessSet(self.jobs).work()
        hosts = {p.id: p for p in procs}
        return self.render(
            request, "busy.html", page="busy", procs=procs, work=work, hosts=hosts, now=time.time()
        )

    async def busy_action(self, request: Request) -> Response:
        posted = await self.check_csrf(request)
        command = str(posted["form"].get("action", ""))
        if command not in ("quiet", "stop"):
            raise HTTPException(400, f"unknown action {command!r}: use quiet or stop")
        procs = await api.ProcessSet(self.jobs).list()
        wanted = [str(p) for p in posted["form"].getlist("process")]
        chosen = procs if posted["form"].get("all") else [p for p in procs if p.id in wanted]
        # An embedded worker (app.run_worker()) refuses remote quiet and stop.
        refused = [p.id for p in chosen if p.embedded]
        ids = [p.id for p in chosen if not p.embedded]
        sent = await api.ProcessSet(self.jobs).send(command, ids) if ids else 0
        self.acted(request, f"{command} {ids}")
        msg = f"{command} sent to {sent} process(es)"
        if refused:
            msg += f"; refused by {len(refused)} embedded worker(s) (app.run_worker())"
        return self.back(request.url_for("busy"), msg)

    async def queues(self, request: Request) -> Response:
        return self.render(
            request,
            "queues.html",
            page="queues",
            queues=await api.queues(self.jobs),
            paused=set(await api.paused_queues(self.jobs)),
        )

    async def queue(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            offset = 0
        entries = await api.queue_entries(self.jobs, name, offset, PAGE_SIZE)
        size = {q.name: q for q in await api.queues(self.jobs)}.get(name)
        return self.render(
            request,
            "queue.html",
            page="queues",
            name=name,
            info=size,
            entries=entries,
            offset=offset,
            page_size=PAGE_SIZE,
            paused=name in await api.paused_queues(self.jobs),
        )

    async def queue_action(self, request: Request) -> Response:
        posted = await self.check_csrf(request)
        name = request.path_params["name"]
        action = str(posted["form"].get("action", ""))
        if action == "clear":
            msg = f"cleared {await api.clear_queue(self.jobs, name)} job(s) from {name}"
        elif action == "pause":
            await api.pause_queue(self.jobs, name)
            msg = f"paused {name}"
        elif action == "resume":
            await api.resume_queue(self.jobs, name)
            msg = f"resumed {name}"
        elif action == "delete":
            done = 0
            for jid in posted["jids"]:
                try:
                    await api.delete_queued(self.jobs, name, jid)
                    done += 1
                except api.JobNotFound:
                    continue
            msg = f"deleted {done} job(s) from {name}"
        else:
            raise HTTPException(400, f"unknown action {action!r}: use clear, pause, resume, delete")
        self.acted(request, f"{action} queue {name} {posted['jids']}")
        target = "queue" if action == "delete" else str(posted["form"].get("back", "queues"))
        if target == "queue":
            return self.back(request.url_for("queue", name=name), msg)
        return self.back(request.url_for("queues"), msg)

    def _set(self, request: Request) -> tuple[str, api.SortedSet]:
        kind = request.path_params["kind"]
        if kind not in KINDS:
            raise HTTPException(404, f"no page {kind!r}")
        return kind, KINDS[kind](self.jobs)

    async def set_page(self, request: Request) -> Response:
        kind, jobset = self._set(request)
        q = request.query_params
        match = q.get("match") or None
        order = q.get("order", "")
        newest = None if order not in ("asc", "desc") else order == "desc"
        status = 200
        error = ""
        try:
            page = await jobset.page(
                after=q.get("after") or None, limit=PAGE_SIZE, match=match, newest_first=newest
            )
        except api.InvalidArgument as exc:
            page, error, status = api.Page(entries=[]), str(exc), 400
        return self.render(
            request,
            "set.html",
            status=status,
            page=kind,
            kind=kind,
            entries=page.entries,
            next=page.next,
            match=match or "",
            order=order,
            first=not q.get("after"),
            size=await jobset.size(),
            error=error,
        )

    async def set_action(self, request: Request) -> Response:
        kind, jobset = self._set(request)
        posted = await self.check_csrf(request)
        action = str(posted["form"].get("action", ""))
        bulk: dict[str, Callable[[], Awaitable[int]]] = {
            "retry_all": jobset.retry_all,
            "delete_all": jobset.clear,
        }
        if kind != "dead":
            bulk["kill_all"] = jobset.kill_all
        one: dict[str, Callable[[str], Awaitable[None]]] = {
            "retry": jobset.retry,
            "delete": jobset.delete,
        }
        if kind != "dead":
            one["kill"] = jobset.kill
        if action in bulk:
            msg = f"{action.replace('_', ' ')}: {await bulk[action]()} job(s)"
        elif action in one:
            done = 0
            for jid in posted["jids"]:
                try:
                    await one[action](jid)
                    done += 1
                except api.JobNotFound:
                    continue
            msg = f"{action}: {done} job(s)"
        else:
            raise HTTPException(400, f"unknown action {action!r} for the {kind} set")
        self.acted(request, f"{action} {kind} {posted['jids']}")
        if posted["form"].get("back") == "job" and posted["jids"]:
            return self.back(request.url_for("job", jid=posted["jids"][0]), msg)
        match = str(posted["form"].get("match", ""))
        return self.back(request.url_for("set", kind=kind), msg, match=match)

    async def periodic(self, request: Request) -> Response:
        return self.render(
            request,
            "periodic.html",
            page="periodic",
            entries=await api.periodic_entries(self.jobs, history=5),
        )

    async def periodic_action(self, request: Request) -> Response:
        posted = await self.check_csrf(request)
        name = request.path_params["name"]
        action = str(posted["form"].get("action", ""))
        try:
            if action == "run":
                jid = await api.run_periodic(self.jobs, name)
                msg = f"enqueued {name} now: {jid}"
            elif action == "pause":
                await api.pause_periodic(self.jobs, name)
                msg = f"paused {name}"
            elif action == "resume":
                await api.resume_periodic(self.jobs, name)
                msg = f"resumed {name}"
            elif action == "remove":
                await api.remove_periodic(self.jobs, name)
                msg = f"removed {name} (a worker whose code declares it writes it back at start)"
            else:
                raise HTTPException(
                    400, f"unknown action {action!r}: use run, pause, resume or remove"
                )
        except api.PeriodicNotFound as exc:
            msg = str(exc)
        self.acted(request, f"{action} periodic {name}")
        return self.back(request.url_for("periodic"), msg)

    async def batches(self, request: Request) -> Response:
        """Sidekiq Pro's Batches tab: the recent batches, newest first, a page at a time."""
        after = request.query_params.get("after") or None
        status, error = 200, ""
        try:
            page = await api.batches(self.jobs, after=after, limit=PAGE_SIZE)
        except api.InvalidArgument as exc:
            page, error, status = api.BatchPage(entries=[]), str(exc), 400
        return self.render(
            request,
            "batches.html",
            status=status,
            page="batches",
            entries=page.entries,
            next=page.next,
            first=after is None,
            error=error,
        )

    async def batch(self, request: Request) -> Response:
        """One batch: its counts, callbacks (and whether they fired), parent, children
        and failed jobs."""
        bid = request.path_params["bid"]
        try:
            b = await api.batch_status(self.jobs, bid)
        except BatchError as exc:
            return self.render(
                request, "batch.html", status=404, page="batches", bid=bid, error=str(exc)
            )
        fired = {"complete": b.complete_at, "success": b.success_at, "death": b.death_at}
        return self.render(
            request, "batch.html", page="batches", bid=bid, b=b, fired=fired, shown=FAILED_SHOWN
        )

    async def job(self, request: Request) -> Response:
        jid = request.path_params["jid"]
        try:
            where = await api.locate_job(self.jobs, jid)
        except api.JobNotFound as exc:
            return self.render(request, "job.html", status=404, page="", jid=jid, error=str(exc))
        rec = where.record
        data: Any = None
        try:
            data = json.loads(rec.raw)
        except ValueError:
            payload = rec.raw
        else:
            if isinstance(data, dict) and isinstance(data.get("error_backtrace"), str):
                # Stored compressed; the Error section shows it decoded.
                data["error_backtrace"] = "(compressed: shown under Error)"
            if isinstance(data, dict) and isinstance(data.get("args"), str):
                # Compressed arguments shown decoded, sealed ones as <encrypted> (#15).
                data["args"] = rec.args
            payload = json.dumps(data, indent=2, ensure_ascii=False)
        fields = data if isinstance(data, dict) else {}

        def at(name: str) -> float | None:
            value = fields.get(name)
            return float(value) if isinstance(value, int | float) else None

        timeline: list[tuple[str, float | None]] = [
            ("created", rec.created_at),
            ("enqueued", rec.enqueued_at),
            ("started", where.started_at),
            ("failed", rec.failed_at),
            (f"retried (retry {rec.retry_count})", at("retried_at")),
            ("discarded", at("discarded_at")),
            ("expires", at("expires_at")),
        ]
        if where.state in ("scheduled", "retry"):
            timeline.append(("due", rec.score))
        elif where.state == "dead":
            timeline.append(("died", rec.score))
        set_kind = {"scheduled": "scheduled", "retry": "retries", "dead": "dead"}
        return self.render(
            request,
            "job.html",
            page="",
            jid=jid,
            where=where,
            rec=rec,
            payload=payload,
            timeline=sorted((t for t in timeline if t[1]), key=lambda t: t[1] or 0),
            set_kind=set_kind.get(where.state, ""),
            now_ts=time.time(),
        )

    async def search(self, request: Request) -> Response:
        jid = request.query_params.get("jid", "").strip()
        if not jid:
            return self.back(request.url_for("overview"), "give a jid to search for")
        return RedirectResponse(str(request.url_for("job", jid=jid)), status_code=303)


def _guarded(page: Endpoint, dash: Dashboard) -> Endpoint:
    """An endpoint whose bad input or unreachable Redis is one line on an error page."""

    async def endpoint(request: Request) -> Response:
        await dash.allowed(request)
        try:
            return await page(request)
        except api.InvalidArgument as exc:
            return dash.render(request, "error.html", status=400, page="", error=str(exc))
        except AsyncJobsError as exc:
            log.warning("dashboard: %s", exc)
            return dash.render(request, "error.html", status=503, page="", error=str(exc))

    return endpoint


class _Required:
    """The default of ``create_app(auth=...)``: not given, which is refused."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


def basic_auth(username: str, password: str, *, realm: str = "asyncjobs") -> Auth:
    """An ``auth`` hook for HTTP Basic authentication with one user: a request without
    these credentials gets 401 and the browser asks for them; the right ones let it
    through as ``username`` (logged with each action). Compared in constant time. Serve
    the dashboard over HTTPS (the password crosses the wire in every request)."""
    if not username or ":" in username or not password:
        raise ConfigError(
            "basic_auth needs a user name without ':' and a non-empty password, "
            "as basic_auth('admin', os.environ['DASHBOARD_PASSWORD'])"
        )
    expected = hashlib.sha256(f"{username}:{password}".encode()).digest()
    challenge = {"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'}

    def check(request: Request) -> str:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        given = b""
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(encoded, validate=True)
            except ValueError:
                given = b""
        if not hmac.compare_digest(hashlib.sha256(given).digest(), expected):
            raise HTTPException(401, "sign in to see the dashboard", headers=challenge)
        return username

    return check


def create_app(
    jobs_app: App,
    *,
    auth: Auth | None = REQUIRED,
    secret: str | None = None,
    read_only: bool = False,
    poll_interval: float = 3.0,
    debug: bool = False,
) -> Starlette:
    """The dashboard of ``jobs_app`` as an ASGI app, to mount or to run alone.

    ``secret`` signs the CSRF tokens of the forms: give the same one to every process
    serving the dashboard (several uvicorn workers, several hosts); by default each
    process makes its own, which is fine for one. ``read_only=True`` hides every action
    and refuses every POST. ``poll_interval`` is how often (seconds) the overview's
    counters refresh themselves.

    ``auth`` is required: a callable, called with each request (sync or async), that
    says who it is from (a name for the log of actions, or True) or refuses it (a falsy
    value: 403; or it raises an ``HTTPException``, as :func:`basic_auth` does for its
    401); the static files are not asked about. ``auth=None`` serves the dashboard to
    anyone who can reach it: say so only where the outer app or a proxy already
    authenticates every request to it."""
    if auth is REQUIRED:
        raise ConfigError(
            "create_app needs auth=: a callable that checks each request (such as "
            "asyncjobs.web.basic_auth(user, password)), or auth=None to let anyone who "
            "can reach the dashboard use it (when the outer app already authenticates)"
        )
    if auth is not None and not callable(auth):
        raise ConfigError(f"auth must be a callable taking the request, or None; got {auth!r}")
    dash = Dashboard(jobs_app, secret, read_only, poll_interval, auth)

    def route(path: str, page: Endpoint, name: str, post: bool = False) -> Route:
        methods = ["POST"] if post else ["GET"]
        return Route(path, _guarded(page, dash), name=name, methods=methods)

    routes = [
        route("/", dash.overview, "overview"),
        route("/stats.json", dash.stats_json, "stats_json"),
        route("/busy", dash.busy, "busy"),
        route("/busy/action", dash.busy_action, "busy_action", post=True),
        route("/queues", dash.queues, "queues"),
        route("/queues/{name}", dash.queue, "queue"),
        route("/queues/{name}/action", dash.queue_action, "queue_action", post=True),
        route("/periodic", dash.periodic, "periodic"),
        route("/metrics", dash.prometheus, "prometheus"),
        route("/metrics/jobs", dash.metrics_page, "metrics"),
        route("/metrics/jobs/{name:path}", dash.metrics_job, "metrics_job"),
        route("/periodic/{name}/action", dash.periodic_action, "periodic_action", post=True),
        route("/batches", dash.batches, "batches"),
        route("/batches/{bid}", dash.batch, "batch"),
        route("/job/{jid:path}", dash.job, "job"),
        route("/search", dash.search, "search"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        route("/{kind}", dash.set_page, "set"),
        route("/{kind}/action", dash.set_action, "set_action", post=True),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        page = dash.render(request, "error.html", status=exc.status_code, page="", error=exc.detail)
        if exc.headers:  # basic_auth's challenge, which makes the browser ask to sign in
            page.headers.update(exc.headers)
        return page

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Run alone (asyncjobs web, uvicorn), the dashboard owns its connections to
        # Redis; mounted, the host app's lifespan runs instead, not this one.
        try:
            yield
        finally:
            await jobs_app.aclose()

    app = Starlette(
        debug=debug,
        routes=routes,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.dashboard = dash
    return app
