"""The dashboard's routes in process (httpx over ASGI): pages, actions, CSRF, escaping."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest

import asyncjobs
from asyncjobs import api
from asyncjobs.web import basic_auth, create_app
from tests.conftest import cli, text

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(app: asyncjobs.App) -> AsyncIterator[httpx.AsyncClient]:
    web = create_app(app, auth=None, secret="test-secret")
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
        yield c


def csrf(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def _jobs(app: asyncjobs.App) -> tuple[asyncjobs.Job[..., None], asyncjobs.Job[..., None]]:
    @app.job(queue="default")
    async def hello(name: str) -> None: ...

    @app.job(queue="low")
    async def other(n: int) -> None: ...

    return hello, other


async def _dead(app: asyncjobs.App, job: asyncjobs.Job[..., None], *args: object) -> str:
    """A dead job: scheduled far ahead, then killed through the API."""
    jid = await job.configure(delay=3600).defer(*args)
    assert jid
    await api.ScheduledSet(app).kill(jid, notify=False)
    return jid


async def test_pages_render(app: asyncjobs.App, client: httpx.AsyncClient) -> None:
    hello, other = _jobs(app)
    await hello.defer("a")
    await other.defer(1)
    for path in (
        "/",
        "/?days=30",
        "/busy",
        "/queues",
        "/queues/default",
        "/scheduled",
        "/retries",
        "/dead",
        "/batches",
    ):
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text)
    r = await client.get("/")
    assert "Redis" in r.text and "default" in r.text and "low" in r.text
    data = (await client.get("/stats.json")).json()
    assert data["enqueued"] == 2 and "processed" in data and "time" in data
    assert (await client.get("/nope")).status_code == 404


async def test_arguments_are_escaped(app: asyncjobs.App, client: httpx.AsyncClient) -> None:
    hello, _ = _jobs(app)
    evil = "<script>alert(1)</script>"
    jid = await hello.defer(evil)
    await _dead(app, hello, evil)
    for path in ("/queues/default", "/dead", f"/job/{jid}"):
        r = await client.get(path)
        assert evil not in r.text, path
        assert "&lt;script&gt;" in r.text, path


async def test_post_needs_csrf(app: asyncjobs.App, client: httpx.AsyncClient) -> None:
    hello, _ = _jobs(app)
    await hello.defer("a")
    r = await client.post("/queues/default/action", data={"action": "clear"})
    assert r.status_code == 403 and "CSRF" in r.text
    await client.get("/queues")
    r = await client.post("/queues/default/action", data={"action": "clear", "csrf": "0" * 64})
    assert r.status_code == 403
    assert (await client.get("/queues/default/action")).status_code == 405
    assert [q.size for q in await api.queues(app) if q.name == "default"] == [1]


async def test_csrf_token_is_bound_to_the_secret(app: asyncjobs.App) -> None:
    """A token from a dashboard with another secret is refused."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(app, auth=None, secret="other")),
        base_url="http://d",
    ) as other:
        token = csrf((await other.get("/queues")).text)
        cookie = other.cookies["asyncjobs_csrf"]
    web = create_app(app, auth=None, secret="test-secret")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://d") as c:
        c.cookies.set("asyncjobs_csrf", cookie)
        r = await c.post("/queues/default/action", data={"action": "clear", "csrf": token})
        assert r.status_code == 403


async def test_queue_delete_clear_pause(app: asyncjobs.App, client: httpx.AsyncClient) -> None:
    hello, _ = _jobs(app)
    jids = [await hello.defer(str(i)) for i in range(3)]
    page = await client.get("/queues/default")
    assert all(j in page.text for j in jids if j)
    token = csrf(page.text)
    r = await client.post(
        "/queues/default/action", data={"action": "delete", "jid": jids[0], "csrf": token}
    )
    assert r.status_code == 303
    page = await client.get(r.headers["location"])
    assert "deleted 1 job(s)" in page.text and f"{jids[0]}</code>" not in page.text
    await client.post("/queues/default/action", data={"action": "pause", "csrf": token})
    assert await api.paused_queues(app) == ["default"]
    assert "paused" in (await client.get("/queues")).text
    await client.post("/queues/default/action", data={"action": "resume", "csrf": token})
    assert await api.paused_queues(app) == []
    await client.post("/queues/default/action", data={"action": "clear", "csrf": token})
    assert [q.size for q in await api.queues(app) if q.name == "default"] in ([], [0])


async def test_sets_filter_page_and_act(app: asyncjobs.App, client: httpx.AsyncClient) -> None:
    hello, _ = _jobs(app)
    dead = [await _dead(app, hello, f"user-{i}") for i in range(30)]
    r = await client.get("/dead")
    assert r.text.count('name="jid" value=') == 25 and 'rel="next"' in r.text
    nxt = re.search(r'href="([^"]+)" rel="next"', r.text)
    assert nxt
    r2 = await client.get(nxt.group(1).replace("&amp;", "&"))
    assert r2.text.count('name="jid" value=') == 5
    r = await client.get("/dead", params={"match": "user-7"})
    assert r.text.count('name="jid" value=') == 1 and dead[7] in r.text
    assert (await client.get("/dead", params={"after": "junk"})).status_code == 400
    token = csrf(r.text)
    r = await client.post(
        "/dead/action", data={"action": "retry", "jid": [dead[0], dead[1]], "csrf": token}
    )
    assert "retry: 2 job(s)" in (await client.get(r.headers["location"])).text
    assert await api.DeadSet(app).size() == 28
    r = await client.post("/dead/action", data={"action": "kill_all", "csrf": token})
    assert r.status_code == 400  # the dead set has no kill
    await client.post("/dead/action", data={"action": "delete_all", "csrf": token})
    assert await api.DeadSet(app).size() == 0
    # scheduled: kill one, enqueue the rest now
    jids = [await hello.configure(delay=600).defer(str(i)) for i in range(3)]
    await client.post("/scheduled/action", data={"action": "kill", "jid": jids[0], "csrf": token})
    assert await api.DeadSet(app).size() == 1
    await client.post("/scheduled/action", data={"action": "retry_all", "csrf": token})
    assert await api.ScheduledSet(app).size() == 0


async def test_job_page_and_search(app: asyncjobs.App, client: httpx.AsyncClient) -> None:
    hello, _ = _jobs(app)
    jid = await _dead(app, hello, "x")
    r = await client.get("/search", params={"jid": jid}, follow_redirects=True)
    assert r.status_code == 200
    assert "dead" in r.text and "Timeline" in r.text and "Killed" in r.text
    assert '"jid": "' + jid in r.text.replace("&#34;", '"')
    r = await client.get("/job/nosuchjid")
    assert r.status_code == 404 and "no job with jid nosuchjid" in r.text
    token = csrf(r.text)
    r = await client.post(
        "/dead/action", data={"action": "retry", "jid": jid, "back": "job", "csrf": token}
    )
    page = await client.get(r.headers["location"])
    assert "queued" in page.text


async def test_busy_lists_embedded_worker_and_refuses(
    app: asyncjobs.App, client: httpx.AsyncClient
) -> None:
    async with app.run_worker():
        deadline = time.monotonic() + 5
        while not await api.ProcessSet(app).list():
            assert time.monotonic() < deadline
            await __import__("anyio").sleep(0.05)
        r = await client.get("/busy")
        assert "embedded" in r.text and "no remote control" in r.text
        r = await client.post(
            "/busy/action", data={"action": "quiet", "all": "1", "csrf": csrf(r.text)}
        )
        page = await client.get(r.headers["location"])
        assert "refused by 1 embedded worker" in page.text


async def test_read_only(app: asyncjobs.App) -> None:
    web = create_app(app, auth=None, read_only=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://d") as c:
        page = await c.get("/queues")
        assert "Clear" not in page.text
        r = await c.post("/queues/default/action", data={"action": "clear", "csrf": "x"})
        assert r.status_code == 403


async def test_mounted_under_a_prefix(app: asyncjobs.App) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/jobs", create_app(app, auth=None))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=outer), base_url="http://d"
    ) as c:
        r = await c.get("/jobs/")
        assert r.status_code == 200
        assert 'href="http://d/jobs/busy"' in r.text
        assert 'href="http://d/jobs/static/style.css"' in r.text
        assert (await c.get("/jobs/static/app.js")).status_code == 200
        assert c.cookies.jar and next(iter(c.cookies.jar)).path == "/jobs"


async def test_mounted_in_aiohttp(app: asyncjobs.App) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from asyncjobs.web import mount_aiohttp

    hello, _ = _jobs(app)
    await hello.defer("a")
    outer = web.Application()
    mount_aiohttp(outer, "/jobs", create_app(app, auth=None, secret="s"))
    async with TestClient(TestServer(outer)) as c:
        r = await c.get("/jobs/queues")
        html = await r.text()
        assert r.status == 200 and "/jobs/queues/default" in html
        assert (await c.get("/jobs/static/style.css")).status == 200
        token = csrf(html)
        r = await c.post(
            "/jobs/queues/default/action",
            data={"action": "clear", "csrf": token},
            allow_redirects=False,
        )
        assert r.status == 303 and r.headers["location"].startswith("http")
        assert "/jobs/queues?" in r.headers["location"]
    assert [q.size for q in await api.queues(app) if q.name == "default"] in ([], [0])


async def test_quiet_a_process_from_the_page(app: asyncjobs.App, client: httpx.AsyncClient) -> None:
    """Quiet, then stop, a (non-embedded) worker from the Busy page's buttons."""
    import anyio

    from tests.conftest import wait_for

    worker = app.worker(heartbeat_interval=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: api.ProcessSet(app).list())
        [proc] = await api.ProcessSet(app).list()
        page = await client.get("/busy")
        assert f'data-process="{proc.id}"' in page.text and "Quiet" in page.text
        data = {"action": "quiet", "process": proc.id, "csrf": csrf(page.text)}
        r = await client.post("/busy/action", data=data)
        assert "quiet sent to 1 process(es)" in (await client.get(r.headers["location"])).text

        async def quiet() -> bool:
            return [p.quiet for p in await api.ProcessSet(app).list()] == [True]

        await wait_for(quiet)
        assert 'class="badge warn">quiet' in (await client.get("/busy")).text
        r = await client.post("/busy/action", data={**data, "action": "stop"})
        with anyio.fail_after(10):
            while await api.ProcessSet(app).list():
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()


async def test_overview_ranges_and_timeline(app: asyncjobs.App, client: httpx.AsyncClient) -> None:
    for days in ("1", "90", "180", "bad", "999"):
        assert (await client.get("/", params={"days": days})).status_code == 200
    r = await client.get("/", params={"days": "180"})
    assert r.text.count('class="bar"') == 180
    assert (await client.get("/", params={"days": "bad"})).text.count('class="bar"') == 7


async def test_auth_hook(app: asyncjobs.App, caplog: pytest.LogCaptureFixture) -> None:
    """The hook refuses (403) or names the user, whose actions are logged by name."""

    async def auth(request: object) -> str | None:
        assert hasattr(request, "headers")
        return request.headers.get("x-user")  # type: ignore[no-any-return]

    web = create_app(app, auth=auth, secret="s")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://d") as c:
        r = await c.get("/")
        assert r.status_code == 403 and "auth hook refused" in r.text
        c.headers["x-user"] = "ada"
        page = await c.get("/queues")
        assert page.status_code == 200
        with caplog.at_level("INFO", logger="asyncjobs.web"):
            await c.post(
                "/queues/default/action", data={"action": "pause", "csrf": csrf(page.text)}
            )
        assert "dashboard pause queue default [] by ada" in caplog.text


def test_auth_is_required() -> None:
    """Without auth= the dashboard is refused, in one line that says what to pass."""
    jobs_app = asyncjobs.App("redis://127.0.0.1:1/0")
    with pytest.raises(asyncjobs.ConfigError, match="create_app needs auth=.*auth=None"):
        create_app(jobs_app)
    with pytest.raises(asyncjobs.ConfigError, match="auth must be a callable"):
        create_app(jobs_app, auth="admin:secret")  # type: ignore[arg-type]


async def test_basic_auth(app: asyncjobs.App, caplog: pytest.LogCaptureFixture) -> None:
    """basic_auth: 401 with a challenge (the browser's prompt) without the right
    credentials; through, and named in the log of actions, with them."""
    web = create_app(app, auth=basic_auth("admin", "s3cret"), secret="s")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://d") as c:
        r = await c.get("/")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith('Basic realm="asyncjobs"')
        assert (await c.get("/", auth=("admin", "wrong"))).status_code == 401
        assert (await c.get("/", auth=("eve", "s3cret"))).status_code == 401
        assert (await c.get("/", headers={"authorization": "Basic !!"})).status_code == 401
        page = await c.get("/queues", auth=("admin", "s3cret"))
        assert page.status_code == 200
        with caplog.at_level("INFO", logger="asyncjobs.web"):
            await c.post(
                "/queues/default/action",
                data={"action": "pause", "csrf": csrf(page.text)},
                auth=("admin", "s3cret"),
            )
        assert "dashboard pause queue default [] by admin" in caplog.text
    with pytest.raises(asyncjobs.ConfigError, match="basic_auth needs"):
        basic_auth("admin", "")


async def test_cli_web_needs_auth_or_no_auth(redis_url: str) -> None:
    """asyncjobs web refuses to start without --basic-auth or --no-auth (exit 2, one
    line), and refuses a malformed --basic-auth."""
    out = await cli(redis_url, "web", "--bind", "127.0.0.1:1")
    assert out.returncode == 2, out
    assert text(out.stderr).strip().splitlines() == [
        "asyncjobs: error: the dashboard needs --basic-auth USER:PASSWORD (or "
        "ASYNCJOBS_WEB_AUTH), or --no-auth to let anyone who can reach --bind use it"
    ]
    out = await cli(redis_url, "web", "--basic-auth", "admin")
    assert out.returncode == 2 and "give USER:PASSWORD" in text(out.stderr), out
    out = await cli(redis_url, "web", "--basic-auth", "a:b", "--no-auth")
    assert out.returncode == 2 and "not both" in text(out.stderr), out


async def test_redis_unreachable_is_one_line() -> None:
    down = asyncjobs.App("redis://127.0.0.1:1/0")
    web = create_app(down, auth=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://d") as c:
        r = await c.get("/queues")
    assert r.status_code == 503 and "cannot reach Redis at redis://127.0.0.1:1/0" in r.text
    await down.aclose()


async def test_redis_info(app: asyncjobs.App, redis_server: object) -> None:
    info = await api.redis_info(app)
    assert info.version.count(".") == 2 and info.connected_clients >= 1
    assert info.used_memory > 0 and info.used_memory_human and info.uptime_seconds >= 0


async def test_queue_page_pause_stays_on_the_page(
    app: asyncjobs.App, client: httpx.AsyncClient
) -> None:
    page = await client.get("/queues/default")
    r = await client.post(
        "/queues/default/action", data={"action": "pause", "back": "queue", "csrf": csrf(page.text)}
    )
    assert r.headers["location"].startswith("http://dash/queues/default?")
    page = await client.get(r.headers["location"])
    assert "paused default" in page.text and 'value="resume"' in page.text


async def test_periodic_page(app: asyncjobs.App, client: httpx.AsyncClient) -> None:
    from tests.conftest import running, wait_for

    @app.job(queue="q1")
    async def report(kind: str) -> None: ...

    app.periodic(report, "0 3 * * *", args={"kind": "nightly"}, name="nightly-report")
    async with running(app.worker(queues=["other"])):
        await wait_for(lambda: api.periodic_entries(app))
    page = await client.get("/periodic")
    assert 'data-periodic="nightly-report"' in page.text and "0 3 * * *" in page.text
    token = csrf(page.text)
    r = await client.post(
        "/periodic/nightly-report/action", data={"action": "pause", "csrf": token}
    )
    assert "paused nightly-report" in (await client.get(r.headers["location"])).text
    assert [e.paused for e in await api.periodic_entries(app)] == [True]
    r = await client.post("/periodic/nightly-report/action", data={"action": "run", "csrf": token})
    assert "enqueued nightly-report now" in (await client.get(r.headers["location"])).text
    assert [q.size for q in await api.queues(app) if q.name == "q1"] == [1]
    r = await client.post("/periodic/nope/action", data={"action": "run", "csrf": token})
    assert "nope" in (await client.get(r.headers["location"])).text
    r = await client.post("/periodic/nope/action", data={"action": "remove", "csrf": token})
    assert "no periodic entry &#39;nope&#39;" in (await client.get(r.headers["location"])).text
    assert [e.name for e in await api.periodic_entries(app)] == ["nightly-report"]
    r = await client.post(
        "/periodic/nightly-report/action", data={"action": "remove", "csrf": token}
    )
    page = await client.get(r.headers["location"])
    assert "removed nightly-report" in page.text
    assert 'data-periodic="nightly-report"' not in page.text
    assert await api.periodic_entries(app) == []
    r = await client.post("/periodic/x/action", data={"action": "zap", "csrf": token})
    assert r.status_code == 400 and "use run, pause, resume or remove" in r.text


async def test_mounted_in_fastapi(app: asyncjobs.App) -> None:
    from fastapi import FastAPI

    outer = FastAPI()
    outer.mount("/jobs", create_app(app, auth=None, secret="s"))
    hello, _ = _jobs(app)
    jid = await hello.defer("a")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=outer), base_url="http://d"
    ) as c:
        r = await c.get("/jobs/search", params={"jid": jid}, follow_redirects=True)
        assert r.status_code == 200 and str(r.url) == f"http://d/jobs/job/{jid}"
        assert "queued" in r.text and 'href="http://d/jobs/queues/default"' in r.text
        r = await c.post(
            "/jobs/queues/default/action",
            data={"action": "delete", "jid": jid, "csrf": csrf(r.text)},
            follow_redirects=True,
        )
        assert "deleted 1 job(s) from default" in r.text


async def _batch_complete(app: asyncjobs.App, bid: str) -> bool:
    return (await app.batch_status(bid)).complete


async def test_batches_pages(app: asyncjobs.App, client: httpx.AsyncClient) -> None:
    """The Batches tab: the listing (bid, description, counts, status) and a batch's
    page (counts, callbacks fired, parent and children, failed jobs linked); a
    description with markup stays text; an unknown bid is a 404 page."""

    @app.job(name="bw", retry=0)
    async def bw(fail: bool) -> None:
        if fail:
            raise ValueError("no")

    @app.job(name="bw_done")
    async def bw_done(bid: str) -> None: ...

    evil = "<script>alert(1)</script>"
    async with app.batch(description=evil, on_complete=bw_done, on_success=bw_done) as outer:
        failed = await bw.defer(True)
        await bw.defer(False)
        async with app.batch(description="child") as child:
            await bw.defer(False)
    assert failed
    async with app.run_worker():
        deadline = time.monotonic() + 10
        while not await _batch_complete(app, outer.bid):
            assert time.monotonic() < deadline, "the batch did not complete"
            await __import__("anyio").sleep(0.02)
    r = await client.get("/batches")
    assert r.status_code == 200
    assert evil not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert 'class="active">Batches' in r.text
    rows = re.findall(r'<tr data-bid="([0-9a-f]+)">', r.text)
    assert rows == [child.bid, outer.bid]  # newest first
    row = r.text.split(f'<tr data-bid="{outer.bid}">')[1].split("</tr>")[0]
    assert f'href="http://dash/batches/{outer.bid}"' in row
    assert re.findall(r"<td>(\d+)</td>", row) == ["2", "1", "1"]  # total, pending, failures
    assert "state-dead" in row
    assert "state-succeeded" in r.text.split(f'<tr data-bid="{child.bid}">')[1].split("</tr>")[0]

    r = await client.get(f"/batches/{outer.bid}")
    assert r.status_code == 200
    assert evil not in r.text and "&lt;script&gt;" in r.text
    assert f'href="http://dash/job/{failed}"' in r.text
    assert f'href="http://dash/batches/{child.bid}"' in r.text
    complete = r.text.split('<tr data-event="complete">')[1].split("</tr>")[0]
    assert "bw_done" in complete and "fired" in complete
    success = r.text.split('<tr data-event="success">')[1].split("</tr>")[0]
    assert "not yet" in success
    r = await client.get(f"/batches/{child.bid}")
    assert f'href="http://dash/batches/{outer.bid}"' in r.text  # its parent
    # The failed job's page, from the link.
    r = await client.get(f"/job/{failed}")
    assert r.status_code == 200 and "ValueError" in r.text

    r = await client.get("/batches/nosuchbid")
    assert r.status_code == 404 and "no batch nosuchbid" in r.text
    r = await client.get("/batches", params={"after": "nosuchbid"})
    assert r.status_code == 400 and "no batch nosuchbid in the index" in r.text


async def test_batches_paging(app: asyncjobs.App, client: httpx.AsyncClient) -> None:
    bids = []
    for i in range(27):
        async with app.batch(description=f"n{i}") as b:
            pass
        bids.append(b.bid)
    r = await client.get("/batches")
    first = re.findall(r'<tr data-bid="([0-9a-f]+)">', r.text)
    assert first == bids[::-1][:25]
    m = re.search(r'href="([^"]+)" rel="next"', r.text)
    assert m and m.group(1).endswith(f"?after={bids[2]}")
    r = await client.get(m.group(1).replace("&amp;", "&"))
    assert re.findall(r'<tr data-bid="([0-9a-f]+)">', r.text) == [bids[1], bids[0]]
    assert "First page" in r.text


async def test_batches_go_through_the_auth_hook(app: asyncjobs.App) -> None:
    async with app.batch(description="secret") as b:
        pass
    web = create_app(app, auth=lambda request: request.headers.get("x-user"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://d") as c:
        for path in ("/batches", f"/batches/{b.bid}"):
            r = await c.get(path)
            assert r.status_code == 403 and "secret" not in r.text
            r = await c.get(path, headers={"x-user": "ann"})
            assert r.status_code == 200 and "secret" in r.text
