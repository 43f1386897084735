"""Scenario 5 of issue 5: 1,000 malformed payloads pushed raw into a queue.

Garbage is pushed with a plain ``LPUSH`` into ``{asyncjobs}:queue:default`` while a
worker subprocess runs, interleaved with good jobs deferred the normal way. Ten kinds,
100 of each, every payload distinct: not JSON, binary, JSON of the wrong shape, missing
fields, fields of the wrong type, a truncated payload, a job name no worker knows,
arguments of the wrong type, arguments the function no longer accepts, and a payload
nested too deeply to decode.

Asserted: every malformed payload lands in the dead set ``{asyncjobs}:dead`` with a
reason (and, when undecodable, its raw text); every good job runs once; the worker
stays up, holds nothing in flight at the end, and exits 0 on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tests.apps import faulty
from tests.conftest import loads, wait_for
from tests.devserver import RedisProcess
from tests.faults._support import (
    DEAD,
    INFLIGHT,
    PROCESSES,
    QUEUE,
    Fleet,
    anything_in_flight,
    client,
    counts,
    held,
    report,
    runs,
    write_config,
)

pytestmark = pytest.mark.faults

N_BAD = 1000
GOOD_EVERY = 5  # one good job deferred after every 5 malformed payloads
GOOD_BASE = 1_000_000  # job numbers of the good jobs


def dumps(obj: object) -> bytes:
    """Compact JSON, as asyncjobs writes it (so that the ``{"jid":"`` prefix matches)."""
    return json.dumps(obj, separators=(",", ":")).encode()


def _payload(jid: str, job: str, args: object, **extra: object) -> dict[str, object]:
    return {
        "jid": jid,
        "class": job,
        "queue": "default",
        "args": args,
        "created_at": time.time(),
        "retry": 0,
        **extra,
    }


def malformed(i: int) -> tuple[bytes, str]:
    """Malformed payload number ``i`` and the error class the dead set must give it."""
    record = faulty.record.name
    kind = i % 10
    if kind == 0:  # not JSON at all
        return f"not json {i}".encode(), "PayloadError"
    if kind == 1:  # binary, not even UTF-8
        return b"\xff\xfe\x00" + i.to_bytes(4, "big") + b"\x80garbage", "PayloadError"
    if kind == 2:  # JSON, but not an object
        return dumps([i, "not", "a", "job"]), "PayloadError"
    if kind == 3:  # an object missing required fields
        return dumps({"jid": f"missing-{i}", "class": record}), "PayloadError"
    if kind == 4:  # fields of the wrong type
        bad = _payload(f"types-{i}", record, {"n": i}, created_at="yesterday", retry="many")
        return dumps(bad), "PayloadError"
    if kind == 5:  # a job name no worker has registered
        gone = _payload(f"unknown-{i}", "tests.apps.faulty.removed_long_ago", {"n": i})
        return dumps(gone), "UnknownJobError"
    if kind == 6:  # arguments of the wrong type
        return dumps(_payload(f"argtype-{i}", record, {"n": f"seven-{i}"})), ("ArgumentError")
    if kind == 7:  # arguments the function no longer accepts: unknown, or missing
        args: dict[str, object] = {"n": i, "colour": "red"} if i % 20 == 7 else {"sleep": 0}
        return dumps(_payload(f"args-{i}", record, args)), "ArgumentError"
    if kind == 8:  # truncated
        return dumps(_payload(f"trunc-{i}", record, {"n": i}))[:50], "PayloadError"
    # kind 9: nested too deeply for any decoder (in meta, so the start looks fine)
    depth = 5000
    head = dumps(_payload(f"deep-{i}", record, {"n": i}))[:-1]
    return head + b',"meta":{"x":' + b"[" * depth + b"]" * depth + b"}}", "PayloadError"


@pytest.mark.timeout(120)
async def test_malformed_payloads_are_dead_lettered_and_good_jobs_run(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    t_start = time.monotonic()
    bad = [malformed(i) for i in range(N_BAD)]
    assert len({raw for raw, _ in bad}) == N_BAD, "every malformed payload is distinct"
    with RedisProcess() as server:
        r = client(server.url)
        faulty.app.redis_url = server.url
        try:
            fleet = fleets(server.url, write_config(tmp_path))
            worker = fleet.start()
            await wait_for(lambda: worker.registered(r), timeout=20)
            good: list[int] = []
            for i, (raw, _) in enumerate(bad):
                await r.lpush(QUEUE, raw)
                if i % GOOD_EVERY == GOOD_EVERY - 1:
                    good.append(GOOD_BASE + i)
                    await faulty.record.defer(GOOD_BASE + i, 0.0)

            async def settled() -> bool:
                return (
                    int(await r.zcard(DEAD)) >= N_BAD
                    and set(good) <= set(counts(await runs(r)))
                    and not await r.llen(QUEUE)
                )

            try:
                await wait_for(settled, timeout=20, interval=0.1)
            except TimeoutError:
                pass  # the assertions below say what is missing
            await anyio.sleep(0.2)  # let the last acknowledgements land
            dead = [loads(m) for m in await r.zrange(DEAD, 0, -1)]
            ran = counts(await runs(r))
            in_flight = await anything_in_flight(r)
            alive = worker.alive()
            worker.signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(worker.popen.wait, 15)
            log = worker.output()

            by_class = Counter(d.get("error_class") for d in dead)
            expected = Counter(cls for _, cls in bad)
            raw_dead = {d["meta"]["raw"] for d in dead if d.get("error_class") == "PayloadError"}
            jid_dead = {d["jid"] for d in dead if d.get("error_class") != "PayloadError"}
            missing = [
                raw[:60]
                for raw, cls in bad
                if (
                    raw.decode(errors="replace") not in raw_dead
                    if cls == "PayloadError"
                    else json.loads(raw)["jid"] not in jid_dead
                )
            ]
            report(
                "scenario5_bad_payloads",
                malformed=N_BAD,
                dead=len(dead),
                dead_by_class=dict(by_class),
                not_dead_lettered=len(missing),
                stuck_in_flight=in_flight,
                good=len(good),
                good_not_run=len(set(good) - set(ran)),
                good_run_twice=sum(1 for n in good if ran[n] > 1),
                worker_alive=alive,
                worker_exit=code,
                tracebacks_in_log=log.count("Traceback"),
                runtime_s=round(time.monotonic() - t_start, 1),
            )
            assert alive, f"the worker died:\n{log[-3000:]}"
            assert set(good) <= set(ran), f"good jobs did not run: {sorted(set(good) - set(ran))}"
            assert all(ran[n] == 1 for n in good)
            assert not missing, (
                f"{len(missing)} malformed payloads not in the dead set "
                f"({in_flight} stuck in flight), e.g. {missing[:3]}"
            )
            assert by_class == expected, f"dead set reasons {dict(by_class)} != {dict(expected)}"
            assert all(d.get("error_message") for d in dead), "every dead entry has a reason"
            assert not in_flight, f"{in_flight} payloads stuck in flight"
            assert code == 0
            assert "Traceback" not in log, log[-3000:]
        finally:
            await faulty.app.aclose()
            await r.aclose()


@pytest.mark.timeout(60)
async def test_reaper_survives_malformed_payloads_of_a_dead_process(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    """Malformed payloads in the in-flight hash of a dead process (one of every kind)
    go back to the queue and on to the dead set; the worker that reaps them stays up."""
    bad = [malformed(i) for i in range(10)]
    dead_process = "otherhost:4242:c0ffee"  # another host: its missing heartbeat is enough
    with RedisProcess() as server:
        r = client(server.url)
        try:
            await r.sadd(PROCESSES, dead_process)
            for i, (raw, _) in enumerate(bad):
                await r.hset(INFLIGHT + dead_process, f"field-{i}", raw)
            worker = fleets(server.url, write_config(tmp_path)).start()

            async def all_dead() -> bool:
                return int(await r.zcard(DEAD)) >= len(bad) or not worker.alive()

            try:
                await wait_for(all_dead, timeout=20, interval=0.05)
            except TimeoutError:
                pass
            left = await held(r, dead_process)
            dead = [loads(m) for m in await r.zrange(DEAD, 0, -1)]
            alive = worker.alive()
            worker.signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(worker.popen.wait, 15)
            report(
                "scenario5b_reap_malformed",
                worker_alive=alive,
                left_in_dead_process=left,
                dead=len(dead),
                worker_exit=code,
            )
            assert alive, f"the reaping worker died:\n{worker.output()[-3000:]}"
            assert left == 0
            assert sorted(d.get("error_class") for d in dead) == sorted(c for _, c in bad)
            assert code == 0
        finally:
            await r.aclose()
