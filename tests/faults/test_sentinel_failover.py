"""Failovers under load, through Redis Sentinel: accepted jobs lost, duplicates, time
to resume, with durable enqueue off and on.

A master, a replica and three Sentinels (``tests.sentinel``); producers defer jobs
continuously through a ``redis+sentinel://`` URL while an in-process worker runs them;
then (a) ``SENTINEL FAILOVER`` (a planned switch), or (b) the master is SIGKILLed (and
restarted once the Sentinels have promoted the replica, so that it comes back as a
replica). A job is *accepted* when ``defer`` returned; it is *lost* if it never runs.

Durable mode (``min_replicas=1``) must lose none: ``defer`` returned only once the
replica had the job, and the replica is what the Sentinels promote. Without it, jobs the
old master acknowledged but had not sent on yet are lost: the figures say how many.
Either way, every job accepted once the new master is named runs, and the producers and
the worker go on without a restart. Figures are printed (``pytest -s`` or ``-rA``).
"""

from __future__ import annotations

import gc
import os
import signal
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import anyio
import pytest

import asyncjobs
from tests.conftest import running, text, wait_for
from tests.faults._support import client, report, where_are
from tests.sentinel import SentinelSetup
from tests.servers import redis_command

# solo: scripts/check runs this file after the others, alone on the machine. Its
# failovers hinge on the Sentinels' 1 s down-after and on reconnects racing a close; with
# the other test process's load beside them, two of four two-process runs failed here.
pytestmark = [pytest.mark.faults, pytest.mark.solo]


@pytest.fixture(autouse=True, scope="module")
def _abandoned_connections_of_a_dying_master() -> Iterator[None]:
    """Known gap, not hidden elsewhere: a worker stopped while one of its loops is
    connecting through the Sentinels to a master that just died leaves redis-py's
    half-made connection behind (its clean-up in ``ConnectionPool.get_connection`` is
    interrupted by anyio's repeated cancellation), finalized by the garbage collector
    in a later test. Collected here, at the end of this module, without the warning."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(autouse=True)
def _collect_each_test() -> Iterator[None]:
    """The same, after each test of this module (before the suite's own collection,
    which would report them)."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


PRODUCERS = 4
JOB_TIME = 0.01  # with 10 runners, fewer jobs run than are deferred: a backlog builds
LOAD_BEFORE = 1.5  # seconds of load before the fault
LOAD_AFTER = 1.5  # seconds of load once the new master defers jobs again


@dataclass
class Producer:
    """Defers ``work(n)`` continuously; records what was accepted and what was not."""

    app: asyncjobs.App
    job: asyncjobs.Job[..., None]
    first: int
    accepted: list[int] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)
    accepted_by: list[int] = field(default_factory=list)  # the master's port
    errors: Counter[str] = field(default_factory=Counter)
    last_error_at: float = 0.0
    slowest: float = 0.0
    stop: bool = False

    async def run(self) -> None:
        n = self.first
        while not self.stop:
            t0 = time.monotonic()
            try:
                await self.job.defer(n)
            except asyncjobs.AsyncJobsError as exc:
                # Not accepted: Redis away (RedisUnavailable), the old master demoted
                # (RedisRefused readonly), or too few replicas (NotReplicated).
                self.errors[type(exc).__name__] += 1
                self.last_error_at = time.monotonic()
                self.slowest = max(self.slowest, self.last_error_at - t0)
                await anyio.sleep(0.02)
            else:
                self.accepted.append(n)
                self.accepted_at.append(time.monotonic())
                store = self.app.store
                address = store.fast.address if store and store.fast else None
                self.accepted_by.append(address[1] if address else 0)
                await anyio.sleep(0.002)
            n += 1


async def _scenario(fault: str, durable: bool, replicas: int = 1) -> dict[str, object]:
    with SentinelSetup(replicas=replicas) as setup:
        app = asyncjobs.App(setup.url, min_replicas=1 if durable else 0, replica_timeout=0.5)
        ran: list[int] = []
        ran_at: list[float] = []

        @app.job(name="work", retry=3)
        async def work(n: int) -> None:
            await anyio.sleep(JOB_TIME)
            ran.append(n)
            ran_at.append(time.monotonic())

        producers = [Producer(app, work, first=i * 1_000_000) for i in range(PRODUCERS)]
        try:
            async with (
                running(app.worker(concurrency=10, heartbeat_interval=0.5, heartbeat_ttl=5)),
                anyio.create_task_group() as tg,
            ):
                for p in producers:
                    tg.start_soon(p.run)
                await anyio.sleep(LOAD_BEFORE)
                old, new = setup.master, setup.replica
                t_fault = time.monotonic()
                if fault == "failover":
                    assert setup.sentinel_command("SENTINEL", "FAILOVER", setup.name) == "OK"
                elif fault == "kill":
                    old.kill()
                else:
                    # The replica lags: stopped for half a second (under the Sentinels'
                    # down-after), its link cut so the master sends it nothing more;
                    # the master dies meanwhile, with the writes it had not sent on.
                    assert new.pid is not None
                    os.kill(new.pid, signal.SIGSTOP)
                    redis_command(old.port, "CLIENT", "KILL", "TYPE", "replica")
                    await anyio.sleep(0.5)
                    old.kill()
                    os.kill(new.pid, signal.SIGCONT)
                # In a thread: the event loop goes on meanwhile (producers, worker,
                # the store's watch of the Sentinels).
                port, switch = await anyio.to_thread.run_sync(setup.wait_new_master, old.port)
                new = setup.server(port)  # with two replicas, either may be promoted
                if fault != "failover":
                    # Back after the promotion, as a replica of the new master (not
                    # as an empty master the Sentinels could fail over to: rejoin).
                    await anyio.to_thread.run_sync(setup.rejoin, old, port)
                t_named = time.monotonic()

                def accepted_since(t: float) -> int:
                    return sum(1 for p in producers for a in p.accepted_at if a > t)

                # Load goes on until every producer had jobs accepted at the new master.
                await wait_for(lambda: accepted_since(t_named) >= 50, timeout=30)
                await anyio.sleep(LOAD_AFTER)
                for p in producers:
                    p.stop = True
            accepted = [n for p in producers for n in p.accepted]
            after = {
                n
                for p in producers
                for n, a in zip(p.accepted, p.accepted_at, strict=True)
                if a > t_named
            }
            evidence = client(setup.server_url(new.port))
            try:

                async def queued() -> int:
                    return int(await evidence.llen(app.keys.queue("default")))

                async with running(app.worker(concurrency=50)):
                    # Every job accepted at the new master runs; the others that will
                    # run, run in this time too (the worker's queue is drained first).
                    await _drain(ran, set(accepted), queued, timeout=30)
                runs = Counter(ran)
                lost = set(accepted) - set(runs)
                lost_where = await where_are(evidence, lost)
            finally:
                await evidence.aclose()
            watch = app.store.watch if app.store is not None else None
            switches = watch.switches if watch is not None else 0
        finally:
            await app.aclose()
        # Defers resumed: the first one the new master accepted. (Not "the first after a
        # producer's last error": a WAIT that timed out later, while the old master
        # resynced on a loaded machine, once made that NaN with 3,419 jobs accepted.)
        first_ok = min(
            (
                a
                for p in producers
                for a, port in zip(p.accepted_at, p.accepted_by, strict=True)
                if a > t_fault and port == new.port
            ),
            default=float("nan"),
        )
        # The worker's outage: the longest time without a job run, from the fault on.
        times = [t_fault, *sorted(t for t in ran_at if t > t_fault)]
        gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
        figures: dict[str, object] = {
            "accepted": len(accepted),
            "lost": len(lost),
            "duplicates": sum(c - 1 for c in runs.values() if c > 1),
            "not_accepted": dict(sum((p.errors for p in producers), Counter())),
            "sentinels_switched_s": round(switch, 2),
            "slowest_refused_defer_s": round(max(p.slowest for p in producers), 2),
            "defer_resumed_s": round(first_ok - t_fault, 2),
            "worker_longest_gap_s": round(gap, 2),
            # More than one: the Sentinels switched again (the jobs went with it).
            "switches_seen": switches,
        }
        by = Counter(
            f"{'new' if port == new.port else 'old' if port == old.port else port} "
            f"{'after' if a > t_named else 'before'}"
            for p in producers
            for n, a, port in zip(p.accepted, p.accepted_at, p.accepted_by, strict=True)
            if n in lost
        )
        figures["lost_by_master"] = dict(by)
        figures["lost_where_now"] = lost_where
        report(
            f"sentinel {fault} durable={'on' if durable else 'off'} replicas={replicas}",
            **figures,
        )
        assert after <= set(runs), f"jobs accepted by the new master did not run: {figures}"
        if durable:
            assert not lost, f"durable mode lost accepted jobs: {sorted(lost)[:10]} {figures}"
        return figures


async def _drain(
    ran: list[int],
    accepted: set[int],
    queued: Callable[[], Awaitable[int]],
    timeout: float,
) -> None:
    """Until every accepted job ran, or none ran for two seconds with the queue empty
    (what did not run is lost), or ``timeout``. What did not run is counted after.
    While jobs are queued it waits on. (Seen once in CI: 935 jobs still queued when a
    two-second quiet spell ended the wait. Reproduced here, not a worker slow to
    start: the Sentinels had failed over a second time, to the old master restarted
    empty, and the drain worker followed them there; see ``SentinelSetup.rejoin``.)"""
    with anyio.move_on_after(timeout):
        count, since = -1, time.monotonic()
        while not accepted <= set(ran):
            if len(ran) != count:
                count, since = len(ran), time.monotonic()
            elif time.monotonic() - since > 2 and not await queued():
                return
            await anyio.sleep(0.05)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("durable", [False, True], ids=["durable-off", "durable-on"])
async def test_sentinel_failover_under_load(durable: bool) -> None:
    await _scenario("failover", durable)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("durable", [False, True], ids=["durable-off", "durable-on"])
async def test_master_sigkilled_under_load(durable: bool) -> None:
    await _scenario("kill", durable)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("durable", [False, True], ids=["durable-off", "durable-on"])
async def test_master_sigkilled_while_its_replica_lags(durable: bool) -> None:
    await _scenario("lag-kill", durable)


@pytest.mark.timeout(60)
async def test_durable_mode_with_two_replicas_resumes_at_the_switch() -> None:
    """With one replica, durable defers are refused until the old master is back as a
    replica and synced; with two, the other replica acknowledges as soon as it follows
    the new master."""
    figures = await _scenario("kill", durable=True, replicas=2)
    assert isinstance(figures["defer_resumed_s"], float)
    assert figures["defer_resumed_s"] < 10, figures


@pytest.mark.timeout(60)
async def test_defers_follow_a_planned_failover_at_once() -> None:
    """After ``SENTINEL FAILOVER`` the old master answers as a master for about ten more
    seconds: a client that waited for an error to reconnect would write there, and lose
    the jobs when it becomes a replica. The store follows ``+switch-master`` instead."""
    with SentinelSetup() as setup:
        app = asyncjobs.App(setup.url)

        @app.job(name="work")
        async def work(n: int) -> None:
            pass

        old, new = setup.master, setup.replica
        on_new = client(setup.server_url(new.port))
        try:
            await work.defer(0)
            assert app.store is not None and app.store.fast is not None
            assert app.store.fast.address == ("127.0.0.1", old.port)
            assert setup.sentinel_command("SENTINEL", "FAILOVER", setup.name) == "OK"
            await anyio.to_thread.run_sync(setup.wait_master, new.port)
            t_named = time.monotonic()
            queue = app.keys.queue("default")
            sent = 0

            async def lands_on_new() -> bool:
                nonlocal sent
                sent += 1
                try:
                    jid = await work.defer(sent)
                except asyncjobs.AsyncJobsError:
                    return False
                held = " ".join(text(x) for x in await on_new.lrange(queue, 0, -1))
                return jid is not None and jid in held

            await wait_for(lands_on_new, timeout=3, interval=0.05)
            report("sentinel follows +switch-master", seconds=time.monotonic() - t_named)
        finally:
            await app.aclose()
            await on_new.aclose()


@pytest.mark.timeout(60)
async def test_jobs_survive_a_second_failover_to_the_rejoined_old_master() -> None:
    """The killed master comes back as a replica of the new one (``SentinelSetup.
    rejoin``); when the new master then misses the Sentinels' pings, they fail over to
    it and the queued jobs are still there for a worker. Restarted as an empty master
    instead, it was what they promoted, and the jobs were gone (a drain worker that
    looked slow to start was on that empty master)."""
    jobs = 50
    with SentinelSetup() as setup:
        # Durable: a job is accepted once the replica has it, so the kill loses none.
        app = asyncjobs.App(setup.url, min_replicas=1, replica_timeout=2)
        ran: set[int] = set()

        @app.job(name="work")
        async def work(n: int) -> None:
            ran.add(n)

        old, new = setup.master, setup.replica
        assert new.pid is not None
        try:
            for n in range(jobs):
                await work.defer(n)
            old.kill()
            port, _ = await anyio.to_thread.run_sync(setup.wait_new_master, old.port)
            assert port == new.port
            await anyio.to_thread.run_sync(setup.rejoin, old, port)
            # The new master stops answering for longer than the Sentinels' down-after.
            os.kill(new.pid, signal.SIGSTOP)
            try:
                second, _ = await anyio.to_thread.run_sync(setup.wait_new_master, new.port)
            finally:
                os.kill(new.pid, signal.SIGCONT)
            assert second == old.port
            queued = int(redis_command(second, "LLEN", app.keys.queue("default")))
            assert queued == jobs, (
                f"{queued} of {jobs} jobs on the master after the second failover"
            )
            async with running(app.worker()):
                await wait_for(lambda: len(ran) == jobs, timeout=10)
        finally:
            await app.aclose()
