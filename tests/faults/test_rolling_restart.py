"""Rolling restart of a ``--processes 2`` group (SIGUSR2 to the supervisor), under a
steady stream of jobs.

Asserted: every child is replaced (no pid of before is left, two new ones registered);
at every sampled moment (the process records, read every 50 ms) two processes are
fetching (registered and not quiet; the issue asks for one); no job is lost or run twice.
Also: the new children read the settings file afresh, and a new child that cannot start
stops the roll, leaving the old children fetching.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from tests.apps import faulty
from tests.conftest import text, wait_for
from tests.devserver import RedisProcess
from tests.faults._support import (
    PROCESSES,
    Fleet,
    Producer,
    client,
    counts,
    report,
    runs,
    write_config,
)

pytestmark = pytest.mark.faults

NS = "{asyncjobs}"
SAMPLE = 0.05


async def fetching(r: aioredis.Redis) -> dict[int, bool]:
    """pid → fetching (its record is there and not quiet), read in one transaction."""
    ids = [text(m) for m in await r.smembers(PROCESSES)]
    async with r.pipeline(transaction=True) as pipe:
        for pid in ids:
            pipe.hget(f"{NS}:process:{pid}", "quiet")
        quiet = await pipe.execute()
    return {
        int(pid.split(":")[-2]): q is not None and text(q) == "0"
        for pid, q in zip(ids, quiet, strict=True)
    }


async def wait_exit(popen: subprocess.Popen[bytes], timeout: float) -> None:
    with anyio.fail_after(timeout):
        while popen.poll() is None:
            await anyio.sleep(0.05)


@pytest.mark.timeout(90)
async def test_rolling_restart_keeps_fetching_and_loses_nothing(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    with RedisProcess() as server:
        r = client(server.url)
        try:
            await _rolling(r, server.url, tmp_path, fleets)
        finally:
            await faulty.app.aclose()
            await r.aclose()


async def _rolling(
    r: aioredis.Redis, url: str, tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    fleet = fleets(url, write_config(tmp_path, timeout=10.0))
    sup = fleet.start("--processes", "2")

    async def two() -> bool:
        states = await fetching(r)
        return len(states) == 2 and all(states.values())

    await wait_for(two, timeout=30)
    before = set(await fetching(r))
    samples: list[tuple[float, dict[int, bool]]] = []
    producer = Producer(job_sleep=0.2, pause=0.01)  # jobs are running at every stop
    faulty.app.redis_url = url
    done = False

    async def sample() -> None:
        while not done:
            samples.append((time.monotonic(), await fetching(r)))
            await anyio.sleep(SAMPLE)

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer.run)
        tg.start_soon(sample)
        await anyio.sleep(1.0)
        t0 = time.monotonic()
        sup.signal(signal.SIGUSR2)

        async def rolled() -> bool:
            states = await fetching(r)
            return (
                "rolling restart done" in sup.output()
                and len(states) == 2
                and not set(states) & before
                and all(states.values())
            )

        await wait_for(rolled, timeout=60)
        took = time.monotonic() - t0
        await anyio.sleep(1.0)  # the new children take the stream
        done = True
        producer.stop = True

    accepted = set(producer.accepted)

    async def all_ran() -> bool:
        return set(counts(await runs(r))) >= accepted

    await wait_for(all_ran, timeout=30)
    out = sup.output()
    during = [s for t, s in samples if t >= t0 - SAMPLE]
    fewest = min(sum(s.values()) for s in during)
    # The brief asks for one; the new child fetches before the old one quiets, so both
    # slots are fetching at every moment (a stop-then-start roll would show 1 here).
    assert fewest >= 2, [s for s in during if sum(s.values()) < 2][:5]
    after = set(await fetching(r))
    assert len(after) == 2 and not after & before, (before, after, out)
    ran, started = counts(await runs(r)), counts(await runs(r, "test:started"))
    assert set(ran) == accepted, sorted(accepted - set(ran))[:10]
    twice = {n: c for n, c in started.items() if c != 1}
    assert not twice, f"started more than once: {twice}"
    assert not {n: c for n, c in ran.items() if c != 1}
    pids = {run.pid for run in await runs(r)}
    assert pids & before and pids & after, out  # old and new children both ran jobs
    assert out.count("is fetching; stopping pid") == 2, out
    assert "cancelling" not in out, out  # the old children finished their jobs
    sup.signal(signal.SIGTERM)
    await wait_exit(sup.popen, 30)
    assert sup.popen.returncode == 0, out
    report(
        "rolling_restart",
        jobs=len(accepted),
        roll_seconds=round(took, 2),
        samples=len(during),
        fewest_fetching=fewest,
    )


@pytest.mark.timeout(90)
async def test_a_new_child_that_cannot_start_stops_the_roll(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    """The roll re-reads the settings file: a broken one (a deploy gone wrong) makes the
    first new child exit 2, and the roll stops there with the old children fetching."""
    with RedisProcess() as server:
        r = client(server.url)
        try:
            config = write_config(tmp_path, tag="v1")
            fleet = fleets(server.url, config)
            sup = fleet.start("--processes", "2")

            async def two() -> bool:
                states = await fetching(r)
                return len(states) == 2 and all(states.values())

            await wait_for(two, timeout=30)
            before = set(await fetching(r))
            config.write_text(config.read_text() + "concurency = 5\n")
            sup.signal(signal.SIGUSR2)
            await wait_for(lambda: "rolling restart stopped" in sup.output(), timeout=30)
            out = sup.output()
            assert "exited with 2 before fetching" in out, out
            assert "unknown field `concurency`" in out, out
            states = await fetching(r)
            assert set(states) == before and all(states.values()), (states, out)
            # Fixed, rolled again: the new children carry the new settings (their tag).
            fixed = config.read_text().replace("concurency = 5\n", "")
            config.write_text(fixed.replace('tag = "v1"', 'tag = "v2"'))
            sup.signal(signal.SIGUSR2)

            async def rolled() -> bool:
                states = await fetching(r)
                return len(states) == 2 and not set(states) & before and all(states.values())

            await wait_for(rolled, timeout=60)
            for m in await r.smembers(PROCESSES):
                info = await r.hget(f"{NS}:process:{text(m)}", "info")
                assert info is not None and b'"tag":"v2"' in info, info
            sup.signal(signal.SIGTERM)
            await wait_exit(sup.popen, 30)
            assert sup.popen.returncode == 0, sup.output()
        finally:
            await r.aclose()


@pytest.mark.timeout(60)
async def test_a_quiet_group_refuses_a_roll(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet]
) -> None:
    """New children would fetch: after SIGTSTP, SIGUSR2 changes nothing."""
    with RedisProcess() as server:
        r = client(server.url)
        try:
            sup = fleets(server.url, write_config(tmp_path)).start("--processes", "2")

            async def two() -> bool:
                states = await fetching(r)
                return len(states) == 2 and all(states.values())

            await wait_for(two, timeout=30)
            before = set(await fetching(r))
            sup.signal(signal.SIGTSTP)

            async def quiet() -> bool:
                states = await fetching(r)
                return len(states) == 2 and not any(states.values())

            await wait_for(quiet, timeout=10)
            sup.signal(signal.SIGUSR2)
            await wait_for(
                lambda: "no rolling restart of quiet worker processes" in sup.output(),
                timeout=10,
            )
            assert sup.output().count("started worker process") == 2, sup.output()
            assert set(await fetching(r)) == before
            sup.signal(signal.SIGTERM)
            await wait_exit(sup.popen, 30)
            assert sup.popen.returncode == 0, sup.output()
        finally:
            await r.aclose()


@pytest.mark.timeout(60)
async def test_supervisor_tells_systemd_ready_once_every_child_fetches(
    tmp_path: Path, fleets: Callable[[str, Path], Fleet], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Type=notify`` for ``--processes``: READY=1 comes from the supervisor's pid (the
    children's own go to the supervisor), after both children registered; STOPPING=1 at
    SIGTERM."""
    import socket
    import struct

    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.setblocking(False)
    messages: list[tuple[int, str]] = []

    def read() -> list[tuple[int, str]]:
        while True:
            try:
                data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return messages
            pid = next(struct.unpack("iII", p[:12])[0] for _, _, p in anc)
            messages.append((pid, data.decode()))

    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    with RedisProcess() as server:
        r = client(server.url)
        try:
            sup = fleets(server.url, write_config(tmp_path)).start("--processes", "2")
            await wait_for(lambda: any("READY=1" in m for _, m in read()), timeout=30)
            states = await fetching(r)
            assert len(states) == 2 and all(states.values()), states
            assert {pid for pid, _ in messages} == {sup.pid}, messages
            assert messages[0][1].startswith("READY=1\n"), messages
            sup.signal(signal.SIGTERM)
            await wait_exit(sup.popen, 30)
            assert sup.popen.returncode == 0, sup.output()
            assert (sup.pid, "STOPPING=1") in read(), messages
            assert sum("READY=1" in m for _, m in messages) == 1, messages
        finally:
            sock.close()
            await r.aclose()
