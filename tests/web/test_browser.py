"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against
uvicorn, a private redis-server and a worker subprocess. What the user sees is asserted.

Set ASYNCJOBS_SCREENSHOTS=docs/img to refresh the screenshots of the docs."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncjobs
from asyncjobs import api
from tests.conftest import spawn_worker, wait_for
from tests.devserver import free_port

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM}: apt-get install chromium"
    ),
]
playwright_api = pytest.importorskip("playwright.async_api")


@pytest.fixture
def dashboard_url(redis_url: str) -> Iterator[str]:
    """The dashboard alone under uvicorn, on a free port, in a thread of its own."""
    import uvicorn

    from asyncjobs.web import create_app

    port = free_port()
    web = create_app(asyncjobs.App(redis_url), auth=None, secret="browser-test", poll_interval=0.5)
    server = uvicorn.Server(uvicorn.Config(web, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield b
        finally:
            await b.close()


def _shots() -> Path | None:
    where = os.environ.get("ASYNCJOBS_SCREENSHOTS")
    return Path(where) if where else None


async def test_click_through(
    app: asyncjobs.App, redis_url: str, dashboard_url: str, browser: Any
) -> None:
    expect = playwright_api.expect

    # The jobs of tests/apps/dashboard.py, by name and signature, to defer from here.
    @app.job(name="tests.apps.dashboard.nap")
    async def nap(seconds: float) -> None: ...

    @app.job(name="tests.apps.dashboard.boom", retry=5)
    async def boom(text: str) -> None: ...

    @app.job(name="tests.apps.dashboard.mark")
    async def mark(n: int) -> None: ...

    @app.job(name="tests.apps.dashboard.batch_done")
    async def batch_done(bid: str) -> None: ...

    worker = spawn_worker(redis_url, "-c", "4", app="tests.apps.dashboard:app")
    try:
        for i in range(3):
            await mark.defer(i)
        running = await nap.defer(60)
        # A batch with a failing job (retried later) and a child batch that succeeds.
        async with app.batch(description="album 42 <import>", on_complete=batch_done) as album:
            failing = await boom.defer("<b>bold</b> input")
            await mark.defer(10)
            async with app.batch(description="album 42 thumbnails") as thumbs:
                await mark.defer_many([(11,), (12,)])
        parked = [await mark.configure(queue="parked").defer(100 + i) for i in range(3)]
        later = await mark.configure(delay=3600).defer(7)
        assert running and failing and later and all(parked)
        await api.ScheduledSet(app).kill(later, notify=False)
        for i in range(3):
            await nap.configure(delay=600 + i).defer(i)

        async def settled() -> bool:
            stats = await api.Stats.fetch(app, days=1)
            work = await api.ProcessSet(app).work()
            batch = await app.batch_status(album.bid)
            return (
                stats.processed >= 3
                and stats.retries == 1
                and any(w.started_at for w in work)
                and batch.complete
            )

        try:
            await wait_for(settled, timeout=15)
        except TimeoutError:
            dead = await api.DeadSet(app).entries()
            pytest.fail(
                f"the worker did not settle: dead {[(e.job, e.error_message) for e in dead]}"
            )
        shots = _shots()
        page = await browser.new_page(viewport={"width": 1280, "height": 800})

        async def shot(name: str) -> None:
            if shots:
                await page.screenshot(path=str(shots / f"dashboard-{name}.png"), full_page=True)

        # Overview: the counters, then a live refresh after one more job ran.
        await page.goto(dashboard_url + "/")
        await expect(page.locator("[data-stat=failed]")).to_have_text("1")
        processed = int(await page.locator("[data-stat=processed]").inner_text())
        assert processed >= 3
        await mark.defer(3)
        await expect(page.locator("[data-stat=processed]")).to_have_text(str(processed + 1))
        await expect(page.locator("table.queues")).to_contain_text("parked")
        await shot("overview")

        # Busy: the worker and the nap it runs.
        await page.click("nav >> text=Busy")
        await expect(page.locator(f"table.work tr[data-jid='{running}']")).to_contain_text(
            "tests.apps.dashboard.nap"
        )
        await expect(page.locator("table.procs")).to_contain_text("4")
        # The page refreshes itself: a job taken meanwhile shows up without a reload.
        second = await nap.defer(60)
        await expect(page.locator(f"table.work tr[data-jid='{second}']")).to_have_count(1)
        await shot("busy")

        # Live refresh pauses, on every page, until resumed.
        await page.click("#live-toggle")
        await expect(page.locator("#live-toggle")).to_have_text("Resume live")

        # Queues: delete one job from the parked queue.
        await page.click("nav >> text=Queues")
        await expect(page.locator("#live-toggle")).to_have_text("Resume live")
        await page.click("#live-toggle")
        await expect(page.locator("#live-toggle")).to_have_text("Pause live")
        await shot("queues")
        await page.click("table.queues >> text=parked")
        await page.check(f"tr[data-jid='{parked[0]}'] input[type=checkbox]")
        await page.click("text=Delete selected")
        await expect(page.locator(".flash")).to_have_text("deleted 1 job(s) from parked")
        await expect(page.locator(f"tr[data-jid='{parked[0]}']")).to_have_count(0)
        await expect(page.locator(f"tr[data-jid='{parked[1]}']")).to_have_count(1)
        await shot("queue")

        # Dead: retry the dead job and see it run.
        await page.click("nav >> text=Dead")
        await expect(page.locator(f"tr[data-jid='{later}']")).to_contain_text("Killed")
        await shot("dead")
        await page.check(f"tr[data-jid='{later}'] input[type=checkbox]")
        await page.click("text=Retry now")
        await expect(page.locator(".flash")).to_have_text("retry: 1 job(s)")
        await expect(page.locator(f"tr[data-jid='{later}']")).to_have_count(0)

        async def ran() -> bool:
            return b"7" in await app_redis.lrange("test:ran", 0, -1)

        import redis.asyncio as aioredis

        app_redis = aioredis.Redis.from_url(redis_url)
        try:
            await wait_for(ran, timeout=10)
        finally:
            await app_redis.aclose()

        # Scheduled and Retries, for the screenshots; the retry's markup stays text.
        await page.click("nav >> text=Scheduled")
        await expect(page.locator("tbody tr")).to_have_count(3)
        await shot("scheduled")
        await page.click("nav >> text=Retries")
        await expect(page.locator(f"tr[data-jid='{failing}']")).to_contain_text("<b>bold</b>")
        await shot("retries")

        # Batches: the album batch (complete: its failed job waits for a retry), its
        # page (counts, the callback fired, the child batch), then the failed job.
        await page.click("nav >> text=Batches")
        row = page.locator(f"tr[data-bid='{album.bid}']")
        await expect(row).to_contain_text("album 42 <import>")
        await expect(row).to_contain_text("complete")
        await expect(page.locator(f"tr[data-bid='{thumbs.bid}']")).to_contain_text("succeeded")
        await shot("batches")
        await row.locator("a").click()
        await expect(page.locator("h1")).to_contain_text(album.bid)
        await expect(page.locator("[data-count=total]")).to_have_text("2")
        await expect(page.locator("[data-count=failures]")).to_have_text("1")
        await expect(page.locator("tr[data-event=complete]")).to_contain_text("fired")
        await expect(page.locator("ul.children")).to_contain_text(thumbs.bid)
        await shot("batch")
        await page.click(f"ul.failed >> text={failing}")
        await expect(page.locator("h1")).to_contain_text(failing)
        await expect(page.locator(".state")).to_contain_text("retry")

        await page.click("nav >> text=Periodic")
        await expect(page.locator("tr[data-periodic='nightly-mark']")).to_contain_text("0 3 * * *")
        await shot("periodic")

        # Metrics (the worker's app has metrics=True): the jobs that ran, their chart,
        # and one job's histograms; light and dark.
        await page.click("nav >> text=Metrics")
        table = page.locator("table.metrics")
        await expect(table).to_contain_text("tests.apps.dashboard.mark")
        await expect(table).to_contain_text("tests.apps.dashboard.boom")
        await expect(page.locator("svg.lines polyline").first).to_be_attached()
        await expect(page.locator(".legend")).to_contain_text("tests.apps.dashboard.mark")
        await shot("metrics")
        await page.emulate_media(color_scheme="dark")
        await shot("metrics-dark")
        await page.emulate_media(color_scheme="light")
        await page.click("a.tab >> text=24 h")
        await expect(page.locator("h1 a.tab.active")).to_have_text("24 h")
        await page.click("table.metrics >> text=tests.apps.dashboard.mark")
        await expect(page.locator("h1")).to_contain_text("tests.apps.dashboard.mark")
        await expect(page.locator(".hist").first).to_be_visible()
        await shot("metrics-job")

        # Search by jid from the header: the failing job's page, error and backtrace.
        await page.fill("header input[name=jid]", failing)
        await page.press("header input[name=jid]", "Enter")
        await expect(page.locator("h1")).to_contain_text(failing)
        await expect(page.locator(".state")).to_contain_text("retry")
        await expect(page.locator("pre.backtrace")).to_contain_text("cannot handle")
        await shot("job")

        # Kill it from its page, past the confirmation: dead now, and on the Dead page.
        page.on("dialog", lambda dialog: dialog.accept())
        await page.click("form.toolbar >> text=Kill")
        await expect(page.locator(".flash")).to_have_text("kill: 1 job(s)")
        await expect(page.locator(".state")).to_contain_text("dead")
        await page.click("nav >> text=Dead")
        await expect(page.locator(f"tr[data-jid='{failing}']")).to_contain_text("ValueError")

        # Remove the periodic entry, past its confirmation: gone from the Periodic tab.
        await page.click("nav >> text=Periodic")
        await page.click("tr[data-periodic='nightly-mark'] >> text=Remove")
        await expect(page.locator(".flash")).to_contain_text("removed nightly-mark")
        await expect(page.locator("tr[data-periodic='nightly-mark']")).to_have_count(0)

        # Dark mode at phone width, for the docs.
        await page.emulate_media(color_scheme="dark")
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.goto(dashboard_url + "/")
        await expect(page.locator("[data-stat=dead]")).to_have_text("1")
        await shot("phone-dark")
    finally:
        worker.kill()
        worker.wait(10)
