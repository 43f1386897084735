"""Redis Sentinel: jobs deferred and run through the Sentinels, durable enqueue (WAIT),
and bad settings refused in one line.

One deployment for the module (a master, a replica, three Sentinels), with passwords on
both the servers and the Sentinels, so every test also checks that each credential goes
where it belongs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api
from asyncjobs._sentinel import parse_sentinel_url
from tests.conftest import ROOT, WORKER_CMD, subprocess_env, text, wait_for
from tests.devserver import free_port
from tests.sentinel import SentinelSetup

MASTER_PASSWORD = "master-secret"
SENTINEL_PASSWORD = "sentinel-secret"


@pytest.fixture(scope="module")
def setup() -> Iterator[SentinelSetup]:
    with SentinelSetup(sentinel_password=SENTINEL_PASSWORD, master_password=MASTER_PASSWORD) as s:
        yield s


@pytest.fixture
async def master(setup: SentinelSetup) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the master (found by port), flushed before the test."""
    client = aioredis.Redis.from_url(setup.server_url(setup.master.port))
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def replica(setup: SentinelSetup) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(setup.server_url(setup.replica.port))
    yield client
    await client.aclose()


async def _commandstats(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


@pytest.mark.timeout(60)
async def test_jobs_go_through_the_sentinels_to_the_master(
    setup: SentinelSetup, master: aioredis.Redis
) -> None:
    app = asyncjobs.App(setup.url)
    ran: list[int] = []

    @app.job(name="work")
    async def work(n: int) -> None:
        ran.append(n)

    try:
        await work.defer(0)
        await work.defer_many([(n,) for n in range(1, 50)])
        await work.configure(delay=0.3).defer(50)
        # On the master the Sentinels name, through both clients: the hot path's lean
        # connection, and redis-py's pool (the API's reads).
        assert await master.llen(app.keys.queue("default")) == 50
        assert await master.zcard(app.keys.schedule) == 1
        assert app.store is not None and app.store.fast is not None
        assert app.store.fast._conn.port == setup.master.port
        assert [(q.name, q.size) for q in await api.queues(app)] == [("default", 50)]
        async with app.run_worker(concurrency=5):
            await wait_for(lambda: sorted(ran) == list(range(51)), timeout=10)
    finally:
        await app.aclose()


@pytest.mark.timeout(60)
async def test_the_keyword_form_is_the_url_form(
    setup: SentinelSetup, master: aioredis.Redis
) -> None:
    app = asyncjobs.App(
        f"redis://:{MASTER_PASSWORD}@/0",
        sentinel=setup.addresses,
        sentinel_master=setup.name,
        sentinel_password=SENTINEL_PASSWORD,
    )
    assert parse_sentinel_url(app.redis_url) == parse_sentinel_url(setup.url)

    @app.job(name="work")
    async def work(n: int) -> None:
        pass

    try:
        await work.defer(1)
        assert await master.llen(app.keys.queue("default")) == 1
    finally:
        await app.aclose()


async def _connect(url: str, **kwargs: object) -> None:
    app = asyncjobs.App(url, **kwargs)  # type: ignore[arg-type]
    try:
        await app.connect()
        assert app.store is not None
        await app.store.ping()
    finally:
        await app.aclose()


@pytest.mark.timeout(60)
async def test_bad_sentinel_settings_are_one_clear_line(setup: SentinelSetup) -> None:
    hosts = ",".join(f"{h}:{p}" for h, p in setup.addresses)
    good = f"?sentinel_password={SENTINEL_PASSWORD}"
    cases = [
        # a master name the Sentinels do not monitor: they say which they do
        (
            asyncjobs.ConfigError,
            f"redis+sentinel://:{MASTER_PASSWORD}@{hosts}/nosuch/0{good}",
            "no Sentinel of",
            "monitors a master named 'nosuch' (they monitor: 'mymaster')",
        ),
        # the Sentinels' password wrong, or missing
        (
            asyncjobs.ConfigError,
            f"redis+sentinel://{hosts}/mymaster/0?sentinel_password=wrong",
            "refused the credentials",
            "",
        ),
        (asyncjobs.ConfigError, f"redis+sentinel://{hosts}/mymaster/0", "credentials", ""),
        # the master's password wrong: found through the Sentinels, refused by the master
        (
            asyncjobs.ConfigError,
            f"redis+sentinel://:wrong@{hosts}/mymaster/0{good}",
            "refused the credentials",
            "",
        ),
        # the master's address given as if it were a Sentinel's
        (
            asyncjobs.ConfigError,
            f"redis+sentinel://127.0.0.1:{setup.master.port}/mymaster/0",
            "",
            "",
        ),
    ]
    for error, url, words, more in cases:
        with pytest.raises(error) as info:
            await _connect(url)
        message = str(info.value)
        assert words in message and more in message, message
        assert "\n" not in message
        assert "secret" not in message and "wrong" not in message


@pytest.mark.timeout(30)
async def test_a_plain_servers_port_is_not_a_sentinel() -> None:
    from tests.devserver import RedisProcess

    with RedisProcess() as server:
        with pytest.raises(asyncjobs.ConfigError, match="are not Sentinels"):
            await _connect(f"redis+sentinel://127.0.0.1:{server.port}/mymaster/0")


@pytest.mark.timeout(30)
async def test_no_sentinel_reachable_is_redis_unavailable() -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/mymaster/0"
    t0 = time.monotonic()
    with pytest.raises(asyncjobs.RedisUnavailable, match="cannot reach Redis at redis\\+sentinel"):
        await _connect(url)
    assert time.monotonic() - t0 < 5


@pytest.mark.timeout(30)
async def test_a_sentinel_url_is_not_a_cluster(setup: SentinelSetup) -> None:
    message = "not a Redis Cluster: leave cluster= and cluster_nodes= unset"
    with pytest.raises(asyncjobs.ConfigError, match=message):
        await _connect(setup.url, cluster=True)


@pytest.mark.timeout(60)
async def test_cli_reaches_the_master_through_the_sentinels(setup: SentinelSetup) -> None:
    done = await anyio.run_process(
        [*WORKER_CMD, "check", "tests.apps.recorder:app", "--redis-url", setup.url],
        env=subprocess_env(setup.url),
        check=False,
        cwd=ROOT,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert f"redis redis+sentinel://:***@127.0.0.1:{setup.sentinels[0].port}" in out
    assert "secret" not in out
    bad = await anyio.run_process(
        [*WORKER_CMD, "worker", "tests.apps.recorder:app", "--redis-url", "redis+sentinel://h/"],
        env=subprocess_env(setup.url),
        check=False,
        cwd=ROOT,
    )
    err = bad.stderr.decode().strip()
    assert bad.returncode == 2, err
    assert "no master name after the addresses" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert sys.executable  # the CLI ran with this interpreter (WORKER_CMD)


# -- durable enqueue ---------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_durable_defer_returns_once_the_replica_has_the_job(
    setup: SentinelSetup, master: aioredis.Redis, replica: aioredis.Redis
) -> None:
    app = asyncjobs.App(setup.url, min_replicas=1, replica_timeout=5)

    @app.job(name="work")
    async def work(n: int) -> None:
        pass

    @app.job(name="once", unique=asyncjobs.Unique(ttl=60))
    async def once(n: int) -> None:
        pass

    try:
        before = await _commandstats(master)
        queue = app.keys.queue("default")
        # The replica is read right after each defer returned, with no wait: it has
        # the job already, as WAIT said.
        for n in range(20):
            await work.defer(n)
            assert await replica.llen(queue) == n + 1
        await work.configure(delay=60).defer(20)
        assert await replica.zcard(app.keys.schedule) == 1
        await work.defer_many([(n,) for n in range(21, 121)])
        assert await replica.llen(queue) == 120
        assert await once.defer(1) is not None
        assert await once.defer(1) is None  # its lock, replicated too
        assert await replica.llen(queue) == 121
        await once.defer_many([(2,), (3,)])
        assert await replica.llen(queue) == 123
        after = await _commandstats(master)
        # One WAIT per enqueue call: 20 defers, 1 scheduled, 1 defer_many, 2 unique
        # defers, 1 unique defer_many.
        assert after.get("wait", 0) - before.get("wait", 0) == 25
    finally:
        await app.aclose()


@pytest.mark.timeout(60)
async def test_durable_off_sends_no_wait(setup: SentinelSetup, master: aioredis.Redis) -> None:
    app = asyncjobs.App(setup.url)

    @app.job(name="work")
    async def work(n: int) -> None:
        pass

    try:
        before = await _commandstats(master)
        for n in range(10):
            await work.defer(n)
        await work.defer_many([(n,) for n in range(10)])
        after = await _commandstats(master)
        assert after.get("wait", 0) == before.get("wait", 0)
        assert after["evalsha"] - before["evalsha"] == 11
    finally:
        await app.aclose()


@pytest.mark.timeout(60)
async def test_too_few_replicas_is_not_replicated_and_says_the_job_is_on_the_master(
    setup: SentinelSetup, master: aioredis.Redis
) -> None:
    app = asyncjobs.App(setup.url, min_replicas=2, replica_timeout=0.2)

    @app.job(name="work")
    async def work(n: int) -> None:
        pass

    try:
        t0 = time.monotonic()
        with pytest.raises(asyncjobs.NotReplicated) as info:
            await work.defer(1)
        assert 0.2 <= time.monotonic() - t0 < 3
        assert (info.value.acked, info.value.wanted) == (1, 2)
        assert "reached 1 replica(s) of the 2 asked" in str(info.value)
        assert "deferring it again may run it twice" in str(info.value)
        assert await master.llen(app.keys.queue("default")) == 1
        with pytest.raises(asyncjobs.NotReplicated):
            await work.defer_many([(2,), (3,)])
        assert await master.llen(app.keys.queue("default")) == 3
    finally:
        await app.aclose()


@pytest.mark.timeout(30)
async def test_durable_mode_on_a_server_without_replicas(redis_url: str) -> None:
    app = asyncjobs.App(redis_url, min_replicas=1, replica_timeout=0.05)

    @app.job(name="work")
    async def work(n: int) -> None:
        pass

    try:
        with pytest.raises(asyncjobs.NotReplicated) as info:
            await work.defer(1)
        assert info.value.acked == 0
        # A first use on this server: NOSCRIPT, then the source, then WAIT again.
        client = await app.connect()
        await client.script_flush()
        with pytest.raises(asyncjobs.NotReplicated):
            await work.configure(delay=5).defer(2)
        assert await client.zcard(app.keys.schedule) == 1
    finally:
        await app.aclose()


@pytest.mark.timeout(60)
async def test_concurrent_durable_defers_share_their_waits(
    setup: SentinelSetup, master: aioredis.Redis, replica: aioredis.Redis
) -> None:
    app = asyncjobs.App(setup.url, min_replicas=1, replica_timeout=5)

    @app.job(name="work")
    async def work(n: int) -> None:
        pass

    queue = app.keys.queue("default")
    try:
        await work.defer(0)
        before = await _commandstats(master)
        missing: list[str] = []
        reads = anyio.Semaphore(10)  # the test's own client: a few connections

        async def one(n: int) -> None:
            jid = await work.defer(n)
            assert jid is not None
            # Durable: the replica has this job already, though its WAIT was shared.
            async with reads:
                held = " ".join(text(x) for x in await replica.lrange(queue, 0, -1))
            if jid not in held:
                missing.append(jid)

        async with anyio.create_task_group() as tg:
            for n in range(1, 201):
                tg.start_soon(one, n)
        after = await _commandstats(master)
        assert await replica.llen(queue) == 201
        assert not missing
        waits = after.get("wait", 0) - before.get("wait", 0)
        assert 1 <= waits < 100, waits  # grouped: far fewer than one per defer
    finally:
        await app.aclose()


@pytest.mark.timeout(60)
async def test_a_missing_replica_costs_concurrent_defers_one_timeout_not_one_each(
    setup: SentinelSetup, master: aioredis.Redis
) -> None:
    app = asyncjobs.App(setup.url, min_replicas=2, replica_timeout=0.3)

    @app.job(name="work")
    async def work(n: int) -> None:
        pass

    refused: list[float] = []

    async def one(n: int) -> None:
        t0 = time.monotonic()
        with pytest.raises(asyncjobs.NotReplicated):
            await work.defer(n)
        refused.append(time.monotonic() - t0)

    try:
        await app.connect()
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(one, n)
        # Ten WAITs of 0.3 s one after another on the shared connection would take 3 s.
        assert len(refused) == 10
        assert time.monotonic() - t0 < 1.5, refused
        assert await master.llen(app.keys.queue("default")) == 10
    finally:
        await app.aclose()


def _spawn_worker(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*WORKER_CMD, "worker", "tests.apps.results:app", "--redis-url", url, "-c", "5"],
        env=subprocess_env(url),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.timeout(60)
async def test_a_worker_process_runs_jobs_through_the_sentinels(setup: SentinelSetup) -> None:
    from tests.apps.results import app, double

    proc = _spawn_worker(setup.url)
    saved, app.redis_url = app.redis_url, setup.url
    try:
        handles = [await double.defer(n) for n in range(5)]
        assert [await h.result(timeout=30) for h in handles if h] == [0, 2, 4, 6, 8]
    finally:
        await app.aclose()
        app.redis_url = saved
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
