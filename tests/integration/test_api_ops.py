"""The introspection API at scale and under change: stats in a fixed number of round
trips, history bounds, counter resets, cursor paging, finding and filtering (#11)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from tests.conftest import all_sent, cli, loads, text


async def _reads_and_commands(redis: aioredis.Redis) -> tuple[int, int]:
    info = await redis.info("stats")
    return int(info["total_reads_processed"]), int(info["total_commands_processed"])


@pytest.mark.parametrize("n_queues", [1, 30])
async def test_stats_in_fixed_round_trips(
    app: asyncjobs.App, redis: aioredis.Redis, n_queues: int
) -> None:
    """Stats.fetch costs the same round trips with 1 queue as with 30 (Sidekiq reads
    its stats in one pipeline); the server counts one read event per round trip."""
    jobs = [app.job(name=f"j{i}", queue=f"q{i}")(_noop) for i in range(n_queues)]
    for j in jobs:
        await j.defer()
    await api.Stats.fetch(app)  # connects and loads what it needs
    reads0, commands0 = await _reads_and_commands(redis)
    stats = await api.Stats.fetch(app, days=30)
    reads1, commands1 = await _reads_and_commands(redis)
    assert stats.enqueued == n_queues
    # One read event for the second INFO, the rest is Stats.fetch.
    assert reads1 - reads0 - 1 == 2
    # Fixed reads (7 commands: the totals and 30 days of history in one MGET), plus one
    # LLEN a queue.
    assert commands1 - commands0 - 1 == 7 + n_queues


async def _noop() -> None:
    pass


async def test_default_queue_latency_is_zero_on_empty_redis(app: asyncjobs.App) -> None:
    stats = await api.Stats.fetch(app)
    assert stats.default_queue_latency == 0.0
    assert stats.enqueued == 0 and stats.processes == 0


async def test_default_queue_latency_of_waiting_job(app: asyncjobs.App) -> None:
    j = app.job(name="wait")(_noop)
    await j.defer()
    with anyio.fail_after(5):
        while (await api.Stats.fetch(app)).default_queue_latency <= 0.0:
            await anyio.sleep(0.01)


@pytest.mark.parametrize("days", [0, -1, 5 * 366 + 1, 10**9])
async def test_history_refuses_days_out_of_range(app: asyncjobs.App, days: int) -> None:
    with pytest.raises(ValueError, match=r"days must be 1 to 1830 .*got"):
        await api.history(app, days)
    with pytest.raises(ValueError, match="days must be 1 to 1830"):
        await api.Stats.fetch(app, days=days)


async def test_history_and_reset(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    k = app.keys
    await redis.mset({k.stat_processed: 7, k.stat_failed: 3})
    assert len(await api.history(app, 5 * 366)) == 5 * 366
    await api.reset_stats(app, "failed")
    s = await api.Stats.fetch(app)
    assert (s.processed, s.failed) == (7, 0)
    await api.reset_stats(app)
    s = await api.Stats.fetch(app)
    assert (s.processed, s.failed) == (0, 0)
    with pytest.raises(ValueError, match="cannot reset 'busy': use processed or failed"):
        await api.reset_stats(app, "busy")


async def test_cli_stats_reset_and_days(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    url = app.redis_url
    await redis.mset({app.keys.stat_processed: 7, app.keys.stat_failed: 3})
    r = await cli(url, "stats", "--reset", "processed")
    assert r.returncode == 0, text(r.stderr)
    assert await redis.mget(app.keys.stat_processed, app.keys.stat_failed) == [b"0", b"3"]
    for bad in (["--reset", "busy"], ["--days", "0"], ["--days", "1831"]):
        r = await cli(url, "stats", *bad)
        assert r.returncode == 2, text(r.stderr)
        assert text(r.stderr).strip(), bad


async def _fill_dead(redis: aioredis.Redis, app: asyncjobs.App, n: int, score: float) -> None:
    """``n`` dead entries, half of them sharing one time (as kill_all leaves them)."""
    members = {}
    for i in range(n):
        payload = (
            f'{{"jid":"{i:024x}","class":"j","queue":"default","args":{{}},'
            '"created_at":1,"retry":25}'
        )
        members[payload] = score if i % 2 else score + i
    await redis.zadd(app.keys.dead, members)


@pytest.mark.parametrize("newest_first", [False, True])
async def test_paging_survives_deleting_every_entry(
    app: asyncjobs.App, redis: aioredis.Redis, newest_first: bool
) -> None:
    """Deleting each page's entries before asking for the next deletes all 51 (offset
    paging leaves one behind: the first deletes shift the rest back by a page)."""
    await _fill_dead(redis, app, 51, 1000.0)
    dead = api.DeadSet(app)
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await dead.page(after=after, limit=10, newest_first=newest_first)
        for e in page.entries:
            await dead.delete(e.jid)
        seen.extend(e.jid for e in page.entries)
        if page.next is None:
            break
        after = page.next
    assert len(seen) == len(set(seen)) == 51
    assert await dead.size() == 0


async def test_paging_follows_time_then_jid_and_filters(
    app: asyncjobs.App, redis: aioredis.Redis
) -> None:
    await _fill_dead(redis, app, 51, 1000.0)
    dead = api.DeadSet(app)
    every = [e.jid for e in await dead.entries(limit=100)]
    pages: list[str] = []
    after = None
    while True:
        page = await dead.page(after=after, limit=7)
        pages.extend(e.jid for e in page.entries)
        if page.next is None:
            break
        after = page.next
    assert pages == every
    assert (await dead.page(job="nosuch")).entries == []
    with pytest.raises(api.InvalidArgument, match="bad cursor 'x': give SCORE:JID"):
        await dead.page(after="x")


async def test_cli_pages_with_after(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    await _fill_dead(redis, app, 3, 1000.0)
    r = await cli(app.redis_url, "dead", "--limit", "2")
    out = text(r.stdout)
    assert r.returncode == 0, text(r.stderr)
    cursor = out.strip().splitlines()[-1].removeprefix("next page: --after ")
    r = await cli(app.redis_url, "dead", "--after", cursor, "--json")
    [last] = loads(r.stdout)
    first_two = [e.jid for e in (await api.DeadSet(app).entries(limit=2))]
    assert last["jid"] not in first_two
    r = await cli(app.redis_url, "dead", "--after", "nonsense")
    assert r.returncode == 2 and len(text(r.stderr).strip().splitlines()) == 1, text(r.stderr)


async def test_match_filters_sets_by_glob(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    """``match`` keeps entries whose payload JSON matches the glob; text without ``*``
    matches anywhere (Sidekiq's ``scan``); order and paging are those of the set."""
    await _fill_dead(redis, app, 12, 1000.0)
    dead = api.DeadSet(app)
    jid = f"{7:024x}"
    assert [e.jid for e in await dead.entries(match=jid)] == [jid]
    assert [e.jid for e in (await dead.page(match=f'*"jid":"{jid}"*')).entries] == [jid]
    ends = [e.jid for e in await dead.entries(match='*"jid":"*[13]"*', newest_first=False)]
    assert ends == [f"{i:024x}" for i in (1, 3)]
    first = await dead.page(match="0000", limit=5, newest_first=False)
    rest = await dead.page(match="0000", after=first.next, limit=50, newest_first=False)
    assert len(first.entries) + len(rest.entries) == 12
    assert await dead.entries(match="nowhere") == []
    with pytest.raises(api.InvalidArgument, match="match must not be empty"):
        await dead.entries(match="")
    r = await cli(app.redis_url, "dead", "--match", jid, "--json")
    assert [e["jid"] for e in loads(r.stdout)] == [jid], text(r.stderr)


async def test_find_and_delete_one_queued_job(app: asyncjobs.App) -> None:
    j = app.job(name="wait")(_noop)
    jids = all_sent([await j.defer() for _ in range(3)])
    rec = await api.find_queued(app, "default", jids[1])
    assert rec.jid == jids[1] and rec.job == "wait"
    r = await cli(app.redis_url, "queues", "default", "--find", jids[1], "--json")
    assert [e["jid"] for e in loads(r.stdout)] == [jids[1]], text(r.stderr)
    assert (await api.delete_queued(app, "default", jids[1])).jid == jids[1]
    with pytest.raises(api.JobNotFound, match="no job with jid"):
        await api.find_queued(app, "default", jids[1])
    assert [e.jid for e in await api.queue_entries(app, "default")] == [jids[0], jids[2]]
    r = await cli(app.redis_url, "queues", "default", "--find", jids[1])
    assert r.returncode == 2 and "no job with jid" in text(r.stderr)


@pytest.mark.parametrize("jid", [None, ""])
async def test_a_call_without_jid_is_refused(app: asyncjobs.App, jid: Any) -> None:
    """No AttributeError from deep in the store: one clear line naming what to give."""
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: api.DeadSet(app).delete(jid),
        lambda: api.RetrySet(app).retry(jid),
        lambda: api.ScheduledSet(app).kill(jid),
        lambda: api.DeadSet(app).find(jid),
        lambda: api.find_job(app, jid),
        lambda: api.locate_job(app, jid),
        lambda: api.find_queued(app, "default", jid),
        lambda: api.delete_queued(app, "default", jid),
    ]
    for call in calls:
        with pytest.raises(api.InvalidArgument, match=r"a jid is required, got (None|''): give"):
            await call()
    r = await cli(app.redis_url, "delete", "")
    [line] = text(r.stderr).strip().splitlines()
    assert r.returncode == 2 and "a jid is required" in line, line


async def test_cli_kill_notify_and_kill_all(app: asyncjobs.App, redis: aioredis.Redis) -> None:
    """``kill JID`` runs the death handlers of the ``--app`` once, ``--no-notify`` not;
    ``--kill-all`` moves every entry and notifies only with ``--notify``."""
    url, appspec = app.redis_url, "tests.apps.deaths:app"
    doomed = app.job(name="doomed")(_noop)
    jids = all_sent([await doomed.configure(delay=3600).defer() for _ in range(5)])

    async def ok(*args: str) -> str:
        r = await cli(url, *args)
        assert r.returncode == 0, text(r.stderr)
        return text(r.stdout)

    await ok("kill", jids[0], "--app", appspec)
    await ok("kill", jids[1], "--app", appspec, "--no-notify")
    assert await redis.lrange("test:deaths", 0, -1) == [f"{jids[0]}:killed by API".encode()]
    assert "killed 3 jobs" in await ok("scheduled", "--kill-all", "--app", appspec)
    assert await redis.llen("test:deaths") == 1
    await redis.delete("test:deaths")
    for jid in jids[:2]:
        await api.DeadSet(app).retry(jid)  # to the queue; two more in the schedule
    for jid in jids[:2]:
        await api.delete_queued(app, "default", jid)
        await doomed.configure(delay=3600, jid=jid).defer()
    assert "killed 2 jobs" in await ok("scheduled", "--kill-all", "--notify", "--app", appspec)
    assert sorted(await redis.lrange("test:deaths", 0, -1)) == sorted(
        f"{j}:killed by API".encode() for j in jids[:2]
    )
    assert await api.DeadSet(app).size() == 5
    r = await cli(url, "dead", "--kill-all")
    assert r.returncode == 2 and "already dead" in text(r.stderr)
    r = await cli(url, "retries", "--notify")
    assert r.returncode == 2 and "--notify goes with --kill-all" in text(r.stderr)
