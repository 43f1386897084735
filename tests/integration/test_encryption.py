"""Encrypted and compressed arguments (#15) against a real redis-server and worker:
what Redis holds, what the worker runs, rotation, refusals (unknown key, tampering, no
cryptography: the dead set, never a crash), retries stored sealed, and every surface
that shows arguments (API, CLI, dashboard, logs, asyncjobs.testing)."""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

import asyncjobs
from asyncjobs import api, testing
from asyncjobs.web import create_app
from tests.conftest import WORKER_CMD, cli, loads, running, subprocess_env, text, wait_for

pytestmark = pytest.mark.timeout(60)

K1 = base64.b64encode(bytes(range(32))).decode()
K2 = base64.b64encode(bytes(range(100, 132))).decode()
SECRET = "4111-1111-1111-1111"


@pytest.fixture
async def keyed(redis_url: str) -> AsyncIterator[asyncjobs.App]:
    application = asyncjobs.App(redis_url, encryption_keys={1: K1})
    yield application
    await application.aclose()


async def queued(redis: aioredis.Redis, app: asyncjobs.App, queue: str = "default") -> list[bytes]:
    return [text(r).encode() for r in await redis.lrange(app.keys.queue(queue), 0, -1)]


async def members(redis: aioredis.Redis, key: str) -> list[bytes]:
    return [text(r).encode() for r in await redis.zrange(key, 0, -1) if isinstance(r, bytes | str)]


def sealed_args(raw: bytes) -> str:
    value = json.loads(raw)["args"]
    assert isinstance(value, str)
    return value


async def test_sealed_arguments_reach_the_job_and_redis_never_holds_them(
    keyed: asyncjobs.App, redis: aioredis.Redis
) -> None:
    seen: list[tuple[str, int, list[str], dict[str, Any]]] = []

    @keyed.job(encrypt=True)
    async def charge(card: str, cents: int, *tags: str, **extra: Any) -> None:
        seen.append((card, cents, list(tags), extra))

    jid = await charge.defer(SECRET, 1299, "vip", note="first order")
    [raw] = await queued(redis, keyed)
    assert SECRET.encode() not in raw and b"first order" not in raw
    assert sealed_args(raw).startswith("sealed:1:")
    assert json.loads(raw)["jid"] == jid  # the rest of the payload stays readable
    async with running(keyed.worker()):
        await wait_for(lambda: seen)
    assert seen == [(SECRET, 1299, ["vip"], {"note": "first order"})]


async def test_a_failed_sealed_job_is_stored_sealed_in_the_retry_and_dead_sets(
    keyed: asyncjobs.App, redis: aioredis.Redis
) -> None:
    runs: list[str] = []

    # The first retry waits an hour (it is read in the retry set), later ones 10 ms.
    @keyed.job(encrypt=True, retry=1, retry_in=lambda count, exc: 3600 if len(runs) == 1 else 0.01)
    async def charge(card: str) -> None:
        runs.append(card)
        raise RuntimeError("card declined")

    jid = await charge.defer(SECRET)
    assert jid is not None
    async with running(keyed.worker()):
        await wait_for(lambda: api.RetrySet(keyed).size())
        [raw] = await members(redis, keyed.keys.retry)
        assert SECRET.encode() not in raw and sealed_args(raw).startswith("sealed:1:")
        # Run it now (a retry by hand gives one more run): it fails until it dies.
        await api.RetrySet(keyed).retry(jid)
        await wait_for(lambda: api.DeadSet(keyed).size())
    [dead] = await members(redis, keyed.keys.dead)
    assert SECRET.encode() not in dead and sealed_args(dead).startswith("sealed:1:")
    assert json.loads(dead)["error_message"] == "card declined"
    assert len(runs) >= 2 and set(runs) == {SECRET}  # retries open what failures stored


async def test_keys_rotate_without_a_flag_day(redis_url: str, redis: aioredis.Redis) -> None:
    seen: list[str] = []
    apps = [
        asyncjobs.App(redis_url, encryption_keys=keys)
        for keys in ({1: K1}, {2: K2, 1: K1}, {2: K2})
    ]
    jobs = []
    for a in apps:

        @a.job(name="charge", encrypt=True)
        async def charge(card: str) -> None:
            seen.append(card)

        jobs.append(charge)
    old, both, new = apps
    try:
        await jobs[0].defer("sealed-with-1")
        # A worker with both keys opens what version 1 sealed; its own defers seal with 2.
        async with running(both.worker()):
            await wait_for(lambda: seen == ["sealed-with-1"])
        await jobs[1].defer("sealed-with-2")
        [raw] = await queued(redis, both)
        assert sealed_args(raw).startswith("sealed:2:")
        # Key 1 retired too early: its job goes to the dead set, the worker goes on.
        lost = await jobs[0].defer("still-sealed-with-1")
        async with running(new.worker()):
            await wait_for(lambda: api.DeadSet(new).size())
            await wait_for(lambda: "sealed-with-2" in seen)
        record = await api.DeadSet(new).find(str(lost))
        assert record.error_class == "DecryptionError"
        assert "key version 1, which this worker does not have (its versions: 2)" in str(
            record.error_message
        )
        assert record.args == "<encrypted>" and record.encrypted
        assert "still-sealed-with-1" not in seen
        # Given its key back, a worker runs it once it is retried from the dead set.
        await api.DeadSet(both).retry(str(lost))
        async with running(both.worker()):
            await wait_for(lambda: "still-sealed-with-1" in seen)
    finally:
        for a in apps:
            await a.aclose()


async def test_tampered_or_moved_sealed_arguments_go_to_the_dead_set(
    keyed: asyncjobs.App, redis: aioredis.Redis
) -> None:
    seen: list[str] = []

    @keyed.job(encrypt=True)
    async def charge(card: str) -> None:
        seen.append(card)

    flipped = await charge.defer("one")
    moved = await charge.defer("two")
    raws = await queued(redis, keyed)  # newest first (LPUSH)
    first, second = json.loads(raws[1]), json.loads(raws[0])
    # One bit of the first job's ciphertext flipped.
    prefix, blob = first["args"].rsplit(":", 1)
    data = bytearray(base64.b64decode(blob))
    data[-1] ^= 1
    first["args"] = f"{prefix}:{base64.b64encode(bytes(data)).decode()}"
    # The second job given another job's sealed arguments (same job, another jid).
    second["args"] = json.loads(raws[1])["args"]
    await redis.delete(keyed.keys.queue("default"))
    await redis.lpush(keyed.keys.queue("default"), json.dumps(first), json.dumps(second))
    async with running(keyed.worker()):

        async def both_dead() -> bool:
            return await api.DeadSet(keyed).size() == 2

        await wait_for(both_dead)
        await charge.defer("three")  # the worker is alive and goes on
        await wait_for(lambda: seen == ["three"])
    for jid in (flipped, moved):
        record = await api.DeadSet(keyed).find(str(jid))
        assert record.error_class == "DecryptionError"
        assert "fail authentication" in str(record.error_message)


async def test_a_worker_without_cryptography_dead_sets_sealed_jobs(
    keyed: asyncjobs.App, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    @keyed.job(name="charge", encrypt=True)
    async def charge(card: str) -> None:
        seen.append(card)

    jid = await charge.defer(SECRET)
    # The worker's process cannot import the package (as if not installed); its app
    # has the key, but has built no cipher yet.
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    worker_app = asyncjobs.App(redis_url, encryption_keys={1: K1})

    @worker_app.job(name="charge", encrypt=True)
    async def charge2(card: str) -> None:
        seen.append(card)

    @worker_app.job
    async def plain(n: int) -> None:
        seen.append(str(n))

    try:
        async with running(worker_app.worker()):
            await wait_for(lambda: api.DeadSet(keyed).size())
            await plain.defer(7)
            await wait_for(lambda: seen == ["7"])
        record = await api.DeadSet(keyed).find(str(jid))
        assert record.error_class == "DecryptionError"
        assert "cryptography package is not installed" in str(record.error_message)
        assert "pip install 'asyncjobs-redis[crypto]'" in str(record.error_message)
    finally:
        await worker_app.aclose()


async def test_a_tracked_job_that_cannot_be_opened_fails_its_waiters(
    redis_url: str,
) -> None:
    sender = asyncjobs.App(redis_url, encryption_keys={1: K1})
    worker_app = asyncjobs.App(redis_url, encryption_keys={2: K2})
    for a in (sender, worker_app):

        @a.job(name="lookup", encrypt=True, keep_result=60)
        async def lookup(token: str) -> str:
            return token.upper()

    try:
        ok = await sender.jobs["lookup"].defer("abc")
        assert ok is not None
        async with running(sender.worker()):
            assert await ok.result(timeout=5) == "ABC"
        handle = await sender.jobs["lookup"].defer("abc")
        assert handle is not None
        async with running(worker_app.worker()):
            with pytest.raises(asyncjobs.JobFailed, match="DecryptionError"):
                await handle.result(timeout=5)
    finally:
        await sender.aclose()
        await worker_app.aclose()


async def test_large_arguments_are_compressed_and_shown_decoded(
    redis_url: str, redis: aioredis.Redis
) -> None:
    # 100 KB of JSON under a 50 KB payload limit: it fits once compressed.
    app = asyncjobs.App(redis_url, compress_over=16 * 1024, max_payload_bytes=50_000)
    rows = [{"id": i, "email": f"user{i}@example.com", "status": "shipped"} for i in range(1800)]
    seen: list[int] = []

    @app.job
    async def export(rows: list[dict[str, Any]], title: str) -> None:
        seen.append(len(rows))

    try:
        assert len(json.dumps(rows)) > 100_000
        jid = await export.defer(rows, "november")
        small = await export.defer(rows[:2], "tiny")
        big_raw, small_raw = (await queued(redis, app))[1], (await queued(redis, app))[0]
        assert sealed_args(big_raw).startswith("zlib:") and len(big_raw) < 20_000
        assert json.loads(small_raw)["args"]["title"] == "tiny"  # under the threshold
        [first, _] = await api.queue_entries(app, "default")
        assert first.jid == jid and first.args == {"rows": rows, "title": "november"}
        assert not first.encrypted
        assert small
        async with running(app.worker()):
            await wait_for(lambda: sorted(seen) == [2, 1800])
    finally:
        await app.aclose()


async def test_api_cli_and_dashboard_show_encrypted_never_the_plaintext(
    redis_url: str, redis: aioredis.Redis
) -> None:
    app = asyncjobs.App(redis_url, encryption_keys={1: K1}, compress_over=100)

    @app.job(queue="default", encrypt=True)
    async def charge(card: str) -> None: ...

    @app.job(queue="default")
    async def export(lines: list[str]) -> None: ...

    lines = [f"line {i} of the export" for i in range(40)]
    try:
        queued_jid = await charge.defer(SECRET)
        dead_jid = await charge.configure(delay=3600).defer(SECRET)
        assert dead_jid is not None
        await api.ScheduledSet(app).kill(dead_jid, notify=False)
        packed_jid = await export.defer(lines)
        # API
        records = await api.queue_entries(app, "default")
        by_jid = {r.jid: r for r in records}
        assert by_jid[str(queued_jid)].args == "<encrypted>"
        assert by_jid[str(queued_jid)].encrypted
        assert by_jid[str(packed_jid)].args == {"lines": lines}
        dead = await api.DeadSet(app).find(dead_jid)
        assert dead.args == "<encrypted>" and SECRET not in json.dumps(dead.to_dict())
        # CLI: a queue's table and JSON, the dead set's JSON, one job
        for args in (
            ("queues", "default"),
            ("queues", "default", "--json"),
            ("dead", "--json"),
            ("job", dead_jid),
            ("job", str(queued_jid)),
        ):
            r = await cli(redis_url, *args)
            assert r.returncode == 0, r.stderr
            out = text(r.stdout)
            assert "<encrypted>" in out and SECRET not in out, (args, out)
            assert '"<encrypted>"' not in out or "--json" in args, (args, out)
        r = await cli(redis_url, "dead")  # no arguments column; nothing to leak either
        assert r.returncode == 0 and SECRET not in text(r.stdout)
        for args in (("job", str(packed_jid)), ("queues", "default", "--json")):
            r = await cli(redis_url, *args)
            assert r.returncode == 0, r.stderr
            assert "line 39 of the export" in text(r.stdout) and "zlib:" not in text(r.stdout)
        [entry] = loads((await cli(redis_url, "dead", "--json")).stdout)
        assert entry["args"] == "<encrypted>"
        # Dashboard
        web = create_app(app, auth=None, secret="test-secret")
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            for path in ("/queues/default", "/dead", f"/job/{dead_jid}", f"/job/{queued_jid}"):
                page = await client.get(path)
                assert page.status_code == 200, path
                assert "&lt;encrypted&gt;" in page.text and SECRET not in page.text, path
            page = await client.get(f"/job/{packed_jid}")
            assert "line 39 of the export" in page.text
            assert "zlib:" not in page.text.split("Arguments", 1)[1][:2000]
    finally:
        await app.aclose()


async def test_logs_never_carry_the_plaintext(
    keyed: asyncjobs.App, caplog: pytest.LogCaptureFixture
) -> None:
    @keyed.job(encrypt=True, retry=0)
    async def charge(card: str) -> None:
        asyncjobs.current_job().logger.info("charging")
        raise ValueError("declined")

    caplog.set_level(logging.DEBUG, logger="asyncjobs")
    await charge.defer(SECRET)
    async with running(keyed.worker()):
        await wait_for(lambda: api.DeadSet(keyed).size())
    messages = [r.getMessage() for r in caplog.records]
    assert any("charging" in m for m in messages)
    assert any("dead" in m and "declined" in m for m in messages)
    assert not [m for m in messages if SECRET in m]


async def test_testing_modes_open_sealed_and_compressed_arguments() -> None:
    app = asyncjobs.App("redis://127.0.0.1:1/0", encryption_keys={1: K1}, compress_over=10)
    seen: list[tuple[str, list[int]]] = []

    @app.job(encrypt=True)
    async def charge(card: str, items: list[int]) -> None:
        seen.append((card, items))

    with testing.capture(app) as jobs:
        await charge.defer(SECRET, list(range(50)))
        [captured] = jobs.for_job(charge)
        assert captured.arguments == {"card": SECRET, "items": list(range(50))}
        await jobs.drain()
    with testing.inline(app):
        await charge.defer("inline", [1])
    assert seen == [(SECRET, list(range(50))), ("inline", [1])]


async def test_a_limiter_keyed_by_an_argument_of_an_encrypted_job(
    keyed: asyncjobs.App, redis: aioredis.Redis
) -> None:
    seen: list[str] = []
    per_account = keyed.limiter("per-account", "concurrent", 1)

    @keyed.job(encrypt=True, limits=[per_account.by("account")])
    async def charge(account: str, card: str) -> None:
        seen.append(account)

    await charge.defer("acct-9", SECRET)
    async with running(keyed.worker()):
        await wait_for(lambda: seen == ["acct-9"])
    state = await api.limiter_state(keyed, "per-account", key="acct-9")
    assert state is not None


async def test_keygen_prints_a_key_the_environment_takes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await cli(redis_url, "keygen")
    second = await cli(redis_url, "keygen", "--key-version", "2")
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    k1, k2 = text(first.stdout).strip(), text(second.stdout).strip()
    assert k1.startswith("1:") and k2.startswith("2:") and k1[2:] != k2[2:]
    monkeypatch.setenv("ASYNCJOBS_ENCRYPTION_KEYS", f"{k2},{k1}")
    app = asyncjobs.App(redis_url)
    assert app.packer.keyring is not None and app.packer.keyring.newest == 2
    bad = await cli(redis_url, "keygen", "--key-version", "0")
    assert bad.returncode == 2 and "Traceback" not in text(bad.stderr)


async def test_a_worker_says_at_start_which_encrypted_jobs_it_cannot_open(
    redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASYNCJOBS_ENCRYPTION_KEYS", raising=False)
    keyless = asyncjobs.App(redis_url)

    @keyless.job(name="charge", encrypt=True)
    async def charge(card: str) -> None: ...

    caplog.set_level(logging.WARNING, logger="asyncjobs.worker")
    try:
        async with running(keyless.worker()):
            pass
    finally:
        await keyless.aclose()
    [line] = [r.getMessage() for r in caplog.records if "encrypt=True" in r.getMessage()]
    assert "jobs with encrypt=True (charge) but no encryption keys" in line
    caplog.clear()
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    keyed_app = asyncjobs.App(redis_url, encryption_keys={1: K1})
    try:
        async with running(keyed_app.worker()):
            pass
    finally:
        await keyed_app.aclose()
    assert any("cryptography package is not installed" in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.delitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead")
    fine = asyncjobs.App(redis_url, encryption_keys={1: K1})

    @fine.job(name="charge", encrypt=True)
    async def charge2(card: str) -> None: ...

    try:
        async with running(fine.worker()):
            pass
    finally:
        await fine.aclose()
    assert not [r for r in caplog.records if "encrypt" in r.getMessage()]


async def test_defer_many_and_unique_jobs_with_sealed_arguments(
    keyed: asyncjobs.App, redis: aioredis.Redis
) -> None:
    seen: list[str] = []

    @keyed.job(encrypt=True)
    async def charge(card: str) -> None:
        seen.append(card)

    @keyed.job(encrypt=True, unique=True)
    async def sync(account: str) -> None:
        seen.append(account)

    jids = await charge.defer_many([("a",), ("b",), {"card": "c"}])
    assert None not in jids
    assert await sync.defer("acct-1") is not None
    assert await sync.defer("acct-1") is None  # the lock is of the plain arguments
    raws = await queued(redis, keyed)
    assert len(raws) == 4 and all(sealed_args(r).startswith("sealed:1:") for r in raws)
    assert len({sealed_args(r) for r in raws}) == 4  # a nonce each
    async with running(keyed.worker()):
        await wait_for(lambda: sorted(seen) == ["a", "acct-1", "b", "c"])
    assert await sync.defer("acct-1") is not None  # released when it succeeded


async def test_match_finds_compressed_jobs_by_their_arguments_never_sealed_ones(
    redis_url: str,
) -> None:
    app = asyncjobs.App(redis_url, encryption_keys={1: K1}, compress_over=100)

    @app.job
    async def export(lines: list[str]) -> None: ...

    @app.job(encrypt=True)
    async def charge(card: str) -> None: ...

    try:
        packed = await export.configure(delay=3600).defer([f"needle {i}" for i in range(40)])
        plain = await export.configure(delay=3600).defer(["needle"])
        await charge.configure(delay=3600).defer("needle-card")
        scheduled = api.ScheduledSet(app)
        found = {r.jid for r in await scheduled.entries(match="*needle 39*")}
        assert found == {packed}
        found = {r.jid for r in await scheduled.entries(match="needle")}
        assert found == {packed, plain}  # not the sealed one
        [record] = [r for r in await scheduled.entries() if r.jid == packed]
        assert record.compressed and not record.encrypted
    finally:
        await app.aclose()


async def test_bad_keys_in_the_environment_stop_the_cli_in_one_line(redis_url: str) -> None:
    env = subprocess_env(redis_url, ASYNCJOBS_ENCRYPTION_KEYS=f"1:{K1[:20]}")
    for args in (["queues"], ["worker", "tests.apps.recorder:app"]):
        r = await anyio.run_process([*WORKER_CMD, *args], env=env, check=False)
        err = text(r.stderr)
        assert r.returncode == 2, (args, err)
        assert err.strip().splitlines() == [
            "asyncjobs: error: ASYNCJOBS_ENCRYPTION_KEYS: key version 1 is 15 bytes; "
            "AES-256 needs 32 (`asyncjobs keygen` makes one)"
        ], err
