"""AUTH, ACL users confined to the namespace, TLS; passwords never shown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import asyncjobs
from asyncjobs import api
from asyncjobs._redis import ACL_COMMANDS
from tests.conftest import wait_for
from tests.devserver import RedisProcess
from tests.servers import acl_redis, make_tls_files, password_redis, tls_redis, tls_support

SECRET = "s3cr3t-pass"


async def _full_round(app: asyncjobs.App) -> None:
    """Enqueue, schedule, fail into retry/dead, run, inspect: every command we send."""
    ran: list[int] = []

    @app.job(retry=0)
    async def work(n: int) -> None:
        if n < 0:
            raise ValueError("negative")
        ran.append(n)

    await work.defer(1)
    await work.defer_many([(2,), (3,)])
    await work.configure(delay=0.2).defer(4)
    await work.defer(-1)
    await work.configure(unique=True, expires_in=60).defer(5)  # a lock, an expiry (#13)
    assert await api.pause_queue(app, "other") and await api.resume_queue(app, "other")
    for kind in ("concurrent", "window", "bucket", "leaky"):  # rate limiters (#13)
        lim = app.limiter(f"acl-{kind}", kind, 2, per=3600)
        async with lim, app.limiter("acl-sliding", "window", 9, sliding=True):
            assert round((await lim.state()).used) == 1
    async with app.run_worker(heartbeat_interval=0.2) as worker:
        await wait_for(lambda: sorted(ran) == [1, 2, 3, 4, 5])
        await wait_for(lambda: api.DeadSet(app).size())
        await worker.reaper.reap_once()  # type: ignore[union-attr]
        stats = await api.Stats.fetch(app)
        assert stats.processed == 6 and stats.failed == 1
        assert [q.name for q in await api.queues(app)] == ["default"]
        assert len(await api.ProcessSet(app).list()) == 1
    [dead] = await api.DeadSet(app).entries()
    await api.DeadSet(app).delete(dead.jid)
    # Clears (a RENAME aside, then chunks) that release the locks of unique jobs.
    await work.configure(unique=True).defer(7)
    await work.configure(unique=True, delay=3600).defer(8)
    assert await api.clear_queue(app, "default") == 1
    assert await api.ScheduledSet(app).clear() == 1
    assert await work.configure(unique=True).defer(7) is not None
    await app.aclose()


@pytest.fixture
def password_server() -> Iterator[RedisProcess]:
    with password_redis(SECRET) as server:
        yield server


async def test_requirepass(password_server: RedisProcess) -> None:
    await _full_round(asyncjobs.App(password_server.make_url(password=SECRET)))
    bad = asyncjobs.App(password_server.make_url(password="wrong-one"))

    @bad.job
    async def job() -> None: ...

    with pytest.raises(asyncjobs.ConfigError) as info:
        await job.defer()
    assert "refused the credentials" in str(info.value)
    assert "wrong-one" not in str(info.value) and "***" in str(info.value)
    await bad.aclose()


async def test_acl_user_confined_to_the_namespace() -> None:
    with acl_redis("jobs", SECRET, list(ACL_COMMANDS)) as server:
        await _full_round(asyncjobs.App(server.make_url(username="jobs", password=SECRET)))


async def test_denied_command_names_what_is_missing() -> None:
    allowed = [c for c in ACL_COMMANDS if c != "evalsha"]
    with acl_redis("jobs", SECRET, allowed) as server:
        app = asyncjobs.App(server.make_url(username="jobs", password=SECRET))

        @app.job
        async def job() -> None: ...

        with pytest.raises(asyncjobs.ConfigError) as info:
            await job.defer()
        message = str(info.value)
        assert "evalsha" in message and "denied a command" in message
        assert SECRET not in message
        await app.aclose()


async def test_tls() -> None:
    supported, reason = tls_support()
    if not supported:  # a redis-server built without TLS (CI's Debian build has it)
        assert "tls" in reason.lower()
        return
    files = make_tls_files()
    try:
        with tls_redis(files) as server:
            url = f"{server.url}?ssl_ca_certs={files.ca_cert}"
            await _full_round(asyncjobs.App(url))
    finally:
        files.cleanup()
