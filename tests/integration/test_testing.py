"""``asyncjobs.testing`` against the real path: the same job scenarios, with the same
assertions, run three ways:

- ``capture``: ``testing.capture(app)``, then ``drain()``;
- ``inline``: ``testing.inline(app)``, jobs run inside ``defer``;
- ``redis``: the real client pushes to the private redis-server, then a real worker
  (``app.run_worker``, in this event loop) runs everything until Redis is empty.

The scenarios cover batches (callbacks, deaths, retries pending, nesting), chains,
results and ``after=``: the test modes' in-memory batches are checked against the
scripts they stand in for, down to the order callbacks are pushed in. The in-memory
modes use an app whose Redis URL points at a closed port, so any Redis call they made
would fail the test. The second half tests what only the helpers do (failures,
timeouts, drain options, restoring the app).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

import asyncjobs
from asyncjobs import api, testing
from asyncjobs._payload import ENCODER, Payload, new_jid
from tests.conftest import all_sent, wait_for, wait_settled

QUEUES = ["critical", "default", "low"]
# Nothing listens here: an in-memory mode that touched Redis would raise.
NO_REDIS = "redis://127.0.0.1:1/0"


@dataclasses.dataclass(frozen=True)
class Deferred:
    """What a test can see of a deferred job before it runs, in every mode."""

    jid: str
    name: str
    queue: str
    scheduled: bool


class Harness:
    """One way of running the scenarios; ``app`` is where the scenario registers jobs."""

    # Inline runs a job inside its defer: nothing is ever seen waiting.
    runs_at_defer = False

    def __init__(self, app: asyncjobs.App) -> None:
        self.app = app

    async def deferred(self) -> list[Deferred]:
        """The jobs deferred so far and not yet settled, by jid."""
        raise NotImplementedError

    async def settle(self, *, raise_errors: bool = True) -> None:
        """Run every deferred job, and every job they defer, to the end.
        ``raise_errors=False``: a failing job does not stop it (capture's drain option;
        the other modes never raise here)."""
        raise NotImplementedError

    def raises(self, exc: type[Exception]) -> contextlib.AbstractContextManager[Any]:
        """Around a ``defer`` (or ``app.chain``) whose job fails: inline raises the
        failure there, the other modes later (or never)."""
        return contextlib.nullcontext()

    async def redeliver(self, payload: Payload) -> None:
        """Deliver a job that already ran once more, as is (at-least-once delivery: a
        worker killed before its acknowledgement, the reaper gives the job back)."""
        raise NotImplementedError


class CaptureHarness(Harness):
    def __init__(self, app: asyncjobs.App, captured: testing.Capture) -> None:
        super().__init__(app)
        self.captured = captured

    async def deferred(self) -> list[Deferred]:
        return sorted(
            (Deferred(c.jid, c.name, c.queue, c.at is not None) for c in self.captured.jobs),
            key=lambda d: d.jid,
        )

    async def settle(self, *, raise_errors: bool = True) -> None:
        await self.captured.drain(raise_errors=raise_errors)

    async def redeliver(self, payload: Payload) -> None:
        await self.captured.accept([payload])


class InlineHarness(Harness):
    runs_at_defer = True

    def __init__(self, app: asyncjobs.App, state: testing.Inline) -> None:
        super().__init__(app)
        self.state = state

    async def deferred(self) -> list[Deferred]:
        # Inline jobs ran inside defer; what was deferred is what ran.
        return sorted(
            (Deferred(c.jid, c.name, c.queue, c.at is not None) for c in self.state.ran),
            key=lambda d: d.jid,
        )

    async def settle(self, *, raise_errors: bool = True) -> None:
        pass

    def raises(self, exc: type[Exception]) -> contextlib.AbstractContextManager[Any]:
        return pytest.raises(exc)

    async def redeliver(self, payload: Payload) -> None:
        await self.state.accept([payload])


class RedisHarness(Harness):
    async def redeliver(self, payload: Payload) -> None:
        store = await self.app.open_store()
        await store.push(payload.queue, ENCODER.encode(payload))

    async def deferred(self) -> list[Deferred]:
        out = [
            Deferred(r.jid, r.job, r.queue, False)
            for q in await api.queues(self.app)
            for r in await api.queue_entries(self.app, q.name, limit=1000)
        ]
        out.extend(
            Deferred(r.jid, r.job, r.queue, True)
            for r in await api.ScheduledSet(self.app).entries(limit=1000)
        )
        return sorted(out, key=lambda d: d.jid)

    async def settle(self, *, raise_errors: bool = True) -> None:
        async with self.app.run_worker(queues=QUEUES, concurrency=4) as worker:
            await wait_settled(self.app, worker, QUEUES)


@pytest.fixture(params=["capture", "inline", "redis"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "redis":
        app = asyncjobs.App(request.getfixturevalue("redis_url"))
        try:
            yield RedisHarness(app)
        finally:
            await app.aclose()
        return
    app = asyncjobs.App(NO_REDIS)
    if request.param == "capture":
        with testing.capture(app) as captured:
            yield CaptureHarness(app, captured)
    else:
        with testing.inline(app) as state:
            yield InlineHarness(app, state)
    assert app._redis is None  # never connected


# -- the scenarios: identical assertions in every mode -------------------------------------


class Point(msgspec.Struct, frozen=True):
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Size:
    width: int
    height: int


WHEN = dt.datetime(2024, 5, 17, 9, 30, 15, 123000, tzinfo=dt.UTC)
IDS = [uuid.UUID(int=1), uuid.UUID(int=2)]


async def test_typed_arguments_arrive_decoded(harness: Harness) -> None:
    got: list[dict[str, Any]] = []

    @harness.app.job
    async def typed(
        when: dt.datetime,
        day: dt.date,
        ids: list[uuid.UUID],
        amount: Decimal,
        point: Point,
        size: Size,
        tags: frozenset[str],
        note: str | None = None,
        *,
        scale: float = 1.0,
    ) -> None:
        ctx = asyncjobs.current_job()
        got.append(
            {
                "jid": ctx.jid,
                "name": ctx.name,
                "queue": ctx.queue,
                "retry_count": ctx.retry_count,
                "args": (when, day, ids, amount, point, size, tags, note, scale),
            }
        )

    ids = list(IDS)
    jid = await typed.defer(
        WHEN,
        WHEN.date(),
        ids,
        Decimal("12.30"),
        Point(1, 2),
        Size(640, 480),
        frozenset({"a", "b"}),
        scale=2,  # an int where a float is declared: the job gets a float
    )
    # The job gets the arguments as they were at defer (a copy, as Redis would hold),
    # not the caller's objects.
    ids.append(uuid.UUID(int=3))
    await harness.settle()

    [run] = got
    assert run["jid"] == jid
    assert run["name"] == typed.name
    assert run["queue"] == "default"
    assert run["retry_count"] == 0
    expected = (
        WHEN,
        WHEN.date(),
        IDS,
        Decimal("12.30"),
        Point(1, 2),
        Size(640, 480),
        frozenset({"a", "b"}),
        None,
        2.0,
    )
    assert run["args"] == expected
    assert [type(v) for v in run["args"]] == [type(v) for v in expected]
    assert str(run["args"][3]) == "12.30"  # Decimal keeps its digits
    assert run["args"][0].tzinfo is not None
    assert run["args"][2] is not ids


async def test_job_defers_another_job(harness: Harness) -> None:
    events: list[tuple[str, int, str, bool]] = []

    @harness.app.job(queue="low")
    async def child(n: int) -> None:
        ctx = asyncjobs.current_job()
        events.append(("child", n, ctx.queue, True))

    @harness.app.job
    async def parent(n: int) -> None:
        me = asyncjobs.current_job().jid
        events.append(("parent", n, asyncjobs.current_job().queue, True))
        await child.configure(queue="critical").defer(n * 10)
        await child.defer(n * 100)
        # After deferring (inline: after the child ran), this is still the parent.
        events.append(("parent-after", n, asyncjobs.current_job().queue, me == current_jid()))

    await parent.defer(1)
    await harness.settle()

    assert events[0] == ("parent", 1, "default", True)
    assert sorted(events[1:]) == [
        ("child", 10, "critical", True),
        ("child", 100, "low", True),
        ("parent-after", 1, "default", True),
    ]
    assert len(events) == 4


def current_jid() -> str:
    return asyncjobs.current_job().jid


async def test_bad_argument_is_refused_and_nothing_runs(harness: Harness) -> None:
    ran: list[int] = []

    @harness.app.job
    async def resize(image_id: int, size: str = "thumb") -> None:
        ran.append(image_id)

    with pytest.raises(asyncjobs.ArgumentError) as info:
        await resize.defer("x")  # type: ignore[arg-type]
    assert info.value.job == resize.name
    assert info.value.argument == "image_id"
    assert "Expected `int`, got `str`" in str(info.value)

    with pytest.raises(asyncjobs.ArgumentError) as info:
        await resize.configure(queue="low").defer(1, size=2)  # type: ignore[arg-type]
    assert info.value.argument == "size"

    # defer_many validates every item first: one bad item defers none.
    with pytest.raises(asyncjobs.ArgumentError) as info:
        await resize.defer_many([(1,), (2,), ("three",)])
    assert "[2]" not in str(info.value)  # names the argument, not the item
    assert info.value.argument == "image_id"

    assert await harness.deferred() == []
    await harness.settle()
    assert ran == []


async def test_configure_queue_is_recorded_and_seen_by_the_job(harness: Harness) -> None:
    seen: list[tuple[str, str, str]] = []

    @harness.app.job
    async def notify(user: str) -> None:
        ctx = asyncjobs.current_job()
        seen.append((ctx.jid, user, ctx.queue))

    jid = await notify.configure(queue="critical", retry=3).defer("ada")
    assert jid is not None
    assert await harness.deferred() == [Deferred(jid, notify.name, "critical", False)]
    await harness.settle()
    assert seen == [(jid, "ada", "critical")]


async def test_defer_many_runs_each_once(harness: Harness) -> None:
    seen: list[tuple[str, int]] = []

    @harness.app.job
    async def add(a: int, b: int = 0) -> None:
        seen.append((asyncjobs.current_job().jid, a + b))

    jids = all_sent(await add.configure(queue="low").defer_many([(1,), (2, 3), {"a": 10, "b": 5}]))
    assert len(set(jids)) == 3
    assert await harness.deferred() == sorted(
        (Deferred(j, add.name, "low", False) for j in jids), key=lambda d: d.jid
    )
    await harness.settle()
    assert sorted(seen) == sorted(zip(jids, [1, 5, 15], strict=True))


async def test_scheduled_job_is_recorded_then_runs(harness: Harness) -> None:
    seen: list[str] = []

    @harness.app.job
    async def remind(text: str) -> None:
        seen.append(text)

    jid = await remind.configure(delay=0.2).defer("later")
    assert jid is not None
    assert await harness.deferred() == [Deferred(jid, remind.name, "default", True)]
    await harness.settle()
    assert seen == ["later"]


async def test_middleware_carries_a_field_from_defer_to_the_job(harness: Harness) -> None:
    seen: list[tuple[str, Any]] = []
    app = harness.app

    async def add_request_id(
        payload: Payload, call_next: Callable[[Payload], Awaitable[str | None]]
    ) -> str | None:
        meta = {**payload.meta, "request_id": "req-7"}
        return await call_next(msgspec.structs.replace(payload, meta=meta))

    async def log_request_id(
        ctx: asyncjobs.JobContext, call_next: Callable[[], Awaitable[Any]]
    ) -> Any:
        seen.append(("server", ctx.meta.get("request_id")))
        return await call_next()

    app.client_middleware.append(add_request_id)
    app.server_middleware.append(log_request_id)

    @app.job
    async def work() -> None:
        seen.append(("job", asyncjobs.current_job().meta.get("request_id")))

    await work.defer()
    await work.defer_many([(), ()])
    await harness.settle()
    assert seen == [("server", "req-7"), ("job", "req-7")] * 3


async def test_server_middleware_gets_the_return_value(harness: Harness) -> None:
    """call_next() returns what the job returned, for a plain job and for one that
    keeps its result (the executor's other path) alike."""
    app = harness.app
    seen: list[tuple[str, Any]] = []

    async def look(ctx: asyncjobs.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        value = await call_next()
        seen.append((ctx.name.rsplit(".", 1)[-1], value))
        return value

    app.server_middleware.append(look)

    @app.job(name="mw.plain")
    async def plain() -> int:
        return 1

    @app.job(name="mw.kept", keep_result=60)
    async def kept() -> int:
        return 2

    await plain.defer()
    await kept.defer()
    await harness.settle()
    assert sorted(seen) == [("kept", 2), ("plain", 1)]


# -- batches, chains and after=: the same scenarios, every mode --------------------------


def _status(s: asyncjobs.BatchStatus) -> tuple[Any, ...]:
    """What a batch's status says, less its timestamps (which differ run to run)."""
    return (
        s.description,
        s.total,
        s.pending,
        s.failures,
        s.failed_jids,
        s.complete,
        s.success,
        s.dead,
        s.parent,
        s.children,
        s.open,
    )


class Calls:
    """What the jobs of a scenario saw: work runs, and callback calls with the batch id
    and arguments each got."""

    def __init__(self, app: asyncjobs.App) -> None:
        self.log: list[tuple[Any, ...]] = []
        log = self.log

        @app.job(name="tb.work")
        async def work(n: int) -> None:
            log.append(("work", n))

        @app.job(name="tb.noted")
        async def noted(bid: str, event: str, tag: str = "") -> None:
            log.append((event, bid, tag))

        self.work = work
        self.noted = noted

    def runs(self) -> list[tuple[Any, ...]]:
        return sorted(c for c in self.log if c[0] == "work")

    def callbacks(self) -> list[tuple[Any, ...]]:
        return sorted(c for c in self.log if c[0] != "work")


async def test_batch_fires_complete_and_success_once(harness: Harness) -> None:
    app = harness.app
    calls = Calls(app)
    async with app.batch(
        description="three",
        on_complete=calls.noted.s("complete", tag="t"),
        on_success=calls.noted.s(event="success", tag="t"),
        on_death=calls.noted.s(event="death", tag="t"),
    ) as batch:
        await calls.work.defer(1)
        await calls.work.defer_many([(2,), (3,)])
        assert batch.added == 3
    await harness.settle()

    bid = batch.bid
    assert calls.runs() == [("work", 1), ("work", 2), ("work", 3)]
    assert calls.callbacks() == [("complete", bid, "t"), ("success", bid, "t")]
    status = await app.batch_status(bid)
    assert _status(status) == ("three", 3, 0, 0, [], True, True, False, None, 0, False)
    assert status.complete_at is not None and status.success_at is not None
    assert status.complete_at <= status.success_at
    assert await batch.status() == status


async def test_batch_with_a_death_or_a_discard_completes_and_never_succeeds(
    harness: Harness,
) -> None:
    app = harness.app
    calls = Calls(app)

    @app.job(name="tb.doomed", retry=0)
    async def doomed() -> None:
        raise RuntimeError("dies")

    @app.job(name="tb.skipped", retry=5, discard_on=(KeyError,))
    async def skipped() -> None:
        raise KeyError("not worth a retry")

    def events(tag: str) -> dict[str, Any]:
        return {
            f"on_{e}": calls.noted.s(event=e, tag=tag) for e in ("complete", "success", "death")
        }

    dead_jid, discarded_jid = new_jid(), new_jid()
    async with app.batch(**events("dies")) as dies:
        await calls.work.defer(1)
        with harness.raises(RuntimeError):
            await doomed.configure(jid=dead_jid).defer()
        await calls.work.defer(2)
    async with app.batch(**events("discards")) as discards:
        with harness.raises(KeyError):
            await skipped.configure(jid=discarded_jid).defer()
        await calls.work.defer(3)
    await harness.settle(raise_errors=False)

    assert calls.runs() == [("work", 1), ("work", 2), ("work", 3)]
    assert calls.callbacks() == sorted(
        [
            ("complete", dies.bid, "dies"),
            ("complete", discards.bid, "discards"),
            ("death", dies.bid, "dies"),  # a discard is a failure, not a death
        ]
    )
    assert _status(await dies.status()) == (
        *(None, 3, 1, 1, [dead_jid]),
        *(True, False, True, None, 0, False),
    )
    assert _status(await discards.status()) == (
        *(None, 2, 1, 1, [discarded_jid]),
        *(True, False, False, None, 0, False),
    )


async def test_a_failure_waiting_for_its_retry_completes_the_batch_only(
    harness: Harness,
) -> None:
    """Sidekiq's rule: a failed job counts as run (complete), not as succeeded. Test
    modes make no retries, so the batch stays where Redis has it until the retry runs
    (here an hour away)."""
    app = harness.app
    calls = Calls(app)

    @app.job(name="tb.flaky", retry=3, retry_in=lambda count, exc: 3600)
    async def flaky() -> None:
        raise ConnectionError("try again later")

    failed_jid = new_jid()
    async with app.batch(
        on_complete=calls.noted.s(event="complete"),
        on_success=calls.noted.s(event="success"),
        on_death=calls.noted.s(event="death"),
    ) as batch:
        with harness.raises(ConnectionError):
            await flaky.configure(jid=failed_jid).defer()
        await calls.work.defer(1)
    await harness.settle(raise_errors=False)

    assert calls.callbacks() == [("complete", batch.bid, "")]
    assert _status(await batch.status()) == (
        *(None, 2, 1, 1, [failed_jid]),
        *(True, False, False, None, 0, False),
    )


async def test_nested_batches_count_their_children(harness: Harness) -> None:
    """A batch made in a batch block, or by a job of a batch, is a child: its parent
    completes and succeeds only after it."""
    app = harness.app
    calls = Calls(app)
    made: list[str] = []

    def events(tag: str) -> dict[str, Any]:
        return {f"on_{e}": calls.noted.s(event=e, tag=tag) for e in ("complete", "success")}

    @app.job(name="tb.spawner")
    async def spawner() -> None:
        async with app.batch(**events("grandchild")) as grandchild:
            await calls.work.defer(3)
        made.append(grandchild.bid)

    async with app.batch(**events("parent")) as parent:
        await calls.work.defer(1)
        async with app.batch(**events("child")) as child:
            await calls.work.defer(2)
            await spawner.defer()
    await harness.settle()

    [grandchild] = made
    assert calls.runs() == [("work", 1), ("work", 2), ("work", 3)]
    assert calls.callbacks() == sorted(
        (event, bid, tag)
        for bid, tag in ((parent.bid, "parent"), (child.bid, "child"), (grandchild, "grandchild"))
        for event in ("complete", "success")
    )
    p, c, g = [await app.batch_status(b) for b in (parent.bid, child.bid, grandchild)]
    assert _status(p) == (None, 1, 0, 0, [], True, True, False, None, 0, False)
    assert _status(c) == (None, 2, 0, 0, [], True, True, False, parent.bid, 0, False)
    assert _status(g) == (None, 1, 0, 0, [], True, True, False, child.bid, 0, False)
    assert g.success_at and c.success_at and p.success_at
    assert g.success_at <= c.success_at <= p.success_at
    # Each lists its children, as the dashboard's batch page shows them.
    assert (p.child_bids, c.child_bids, g.child_bids) == ([child.bid], [grandchild], [])
    assert p.state == c.state == g.state == "succeeded"
    assert p.callbacks == {"complete": "tb.noted", "success": "tb.noted"}


async def test_chain_runs_steps_in_order_passing_results(harness: Harness) -> None:
    app = harness.app
    log: list[tuple[Any, ...]] = []

    @app.job(name="tb.add", keep_result=60)
    async def add(x: int, y: int) -> int:
        log.append(("add", x, y))
        return x + y

    @app.job(name="tb.times", keep_result=60)
    async def times(prev: int, k: int) -> int:
        log.append(("times", prev, k))
        return prev * k

    @app.job(name="tb.report")
    async def report(prev: list[int], label: str) -> None:
        log.append(("report", prev, label))

    @app.job(name="tb.plain")
    async def plain(tag: str) -> int:  # keeps no result: the next step gets nothing
        log.append(("plain", tag))
        return 7

    bid = await app.chain(
        add.s(1, 2),
        [times.s(k=10), times.s(k=100)],  # fan-in: both get 3, the next step both results
        report.s(label="total"),
        plain.s("after"),
        plain.s("last"),
        description="sums",
    )
    await harness.settle()

    assert log[0] == ("add", 1, 2), log
    assert sorted(log[1:3]) == [("times", 3, 10), ("times", 3, 100)]
    assert log[3:] == [("report", [30, 300], "total"), ("plain", "after"), ("plain", "last")]
    first = await app.batch_status(bid)
    assert _status(first) == ("sums: step 1", 1, 0, 0, [], True, True, False, None, 0, False)


async def test_chain_stops_at_a_death_or_goes_on_with_none(harness: Harness) -> None:
    app = harness.app
    log: list[tuple[Any, ...]] = []

    @app.job(name="tb.fails", keep_result=60, retry=0)
    async def fails(tag: str) -> int:
        raise RuntimeError(f"{tag} dies")

    @app.job(name="tb.next")
    async def after(prev: int | None, tag: str) -> None:
        log.append(("next", prev, tag))

    with harness.raises(RuntimeError):
        await app.chain(fails.s("stop"), after.s("stop"))
    with harness.raises(RuntimeError):
        await app.chain(fails.s("go"), after.s("go"), on_failure="continue")
    await harness.settle(raise_errors=False)

    assert log == [("next", None, "go")]


async def test_a_chain_step_delivered_again_defers_nothing(harness: Harness) -> None:
    """A step job (``asyncjobs.chain``) that runs a second time, after it deferred the
    next step, defers nothing: every job of the chain runs once."""
    app = harness.app
    log: list[tuple[Any, ...]] = []
    steps: list[Payload] = []

    async def keep_steps(ctx: asyncjobs.JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        if ctx.name == "asyncjobs.chain":
            steps.append(ctx._payload)
        return await call_next()

    app.server_middleware.append(keep_steps)

    @app.job(name="tb.first", keep_result=60)
    async def first() -> int:
        log.append(("first",))
        return 1

    @app.job(name="tb.second", keep_result=60)
    async def second(prev: int, n: int) -> int:
        log.append(("second", prev, n))
        return prev + n

    @app.job(name="tb.third")
    async def third(prev: list[int]) -> None:
        log.append(("third", prev))

    bid = await app.chain(first.s(), [second.s(n=1), second.s(n=2)], third.s())
    await harness.settle()
    first_runs = steps.copy()  # inline, each redelivery runs (and is appended) at once
    assert len(first_runs) == 2
    for step in first_runs:
        await harness.redeliver(step)
    await harness.settle()

    assert sorted(log) == [("first",), ("second", 1, 1), ("second", 1, 2), ("third", [2, 3])]
    assert len(steps) == 4  # each step job ran twice, and no other
    assert (await app.batch_status(bid)).success


async def test_results_of_tracked_jobs(harness: Harness) -> None:
    app = harness.app

    @app.job(name="tb.sum", keep_result=60)
    async def total(values: list[int]) -> int:
        return sum(values)

    @app.job(name="tb.broken", keep_result=60, retry=0)
    async def broken() -> int:
        raise ValueError("no result")

    handle = await total.defer([1, 2, 3])
    assert handle is not None
    dead_jid = new_jid()
    with harness.raises(ValueError):
        await broken.configure(jid=dead_jid).defer()
    await harness.settle(raise_errors=False)

    assert await handle.result(timeout=5) == 6
    assert await app.result(handle, timeout=5) == 6
    with pytest.raises(asyncjobs.JobFailed) as info:
        await broken.result(dead_jid, timeout=5)
    assert (info.value.state, info.value.error_class) == ("dead", "ValueError")
    assert info.value.error_message == "no result"


async def test_after_holds_a_job_until_the_jobs_it_waits_for_succeeded(
    harness: Harness,
) -> None:
    app = harness.app
    log: list[tuple[str, str]] = []

    @app.job(name="tb.download", track_status=True)
    async def download(url: str) -> None:
        log.append(("download", url))

    @app.job(name="tb.broken_download", track_status=True, retry=0)
    async def broken_download(url: str) -> None:
        raise OSError(f"{url}: gone")

    @app.job(name="tb.merge")
    async def merge(name: str) -> None:
        log.append(("merge", name))

    first = await download.defer("a.csv")
    second = await download.defer("b.csv")
    assert first is not None and second is not None
    await merge.configure(after=[first, second]).defer("report.csv")
    gone = new_jid()
    with harness.raises(OSError):
        await broken_download.configure(jid=gone).defer("c.csv")
    await merge.configure(after=[first, gone]).defer("never.csv")  # a dead one: never runs
    with pytest.raises(asyncjobs.ConfigError, match="has no status"):
        await merge.configure(after=[new_jid()]).defer("unknown.csv")
    await harness.settle(raise_errors=False)

    assert sorted(log[:2]) == [("download", "a.csv"), ("download", "b.csv")]
    assert log[2:] == [("merge", "report.csv")]


async def test_jobs_of_a_batch_add_to_it_and_defer_others_outside_it(harness: Harness) -> None:
    app = harness.app
    calls = Calls(app)
    crawled: list[int] = []

    @app.job(name="tb.crawl")
    async def crawl(depth: int) -> None:
        crawled.append(depth)
        await calls.work.defer(depth)  # a plain defer from a batch job: not in the batch
        if depth < 2:
            bid = asyncjobs.current_job().bid
            assert bid is not None
            async with app.batch(bid=bid):  # a job of the batch may always add to it
                await crawl.defer(depth + 1)

    async with app.batch(on_success=calls.noted.s(event="success")) as batch:
        await crawl.defer(0)
    await harness.settle()

    assert crawled == [0, 1, 2]
    assert calls.runs() == [("work", 0), ("work", 1), ("work", 2)]
    assert calls.callbacks() == [("success", batch.bid, "")]
    assert _status(await batch.status()) == (None, 3, 0, 0, [], True, True, False, None, 0, False)
    with pytest.raises(asyncjobs.BatchError, match="is complete"):
        async with app.batch(bid=batch.bid):  # from outside, once complete: refused
            pass  # pragma: no cover
    with pytest.raises(asyncjobs.BatchError, match="no batch"):
        await app.batch_status(new_jid())


# The order the scripts push a nested batch's callbacks (parent: job 1 and a child
# batch with job 2) depends on when the jobs end: after both blocks closed, in the
# order deferred, or each inside its still-open block.
PUSH_ORDER = {
    "after": ["complete child", "complete parent", "success child", "success parent"],
    "inside": ["complete child", "success child", "complete parent", "success parent"],
}


@pytest.mark.parametrize(
    "mode,timeline",
    [("redis", "after"), ("capture", "after"), ("redis", "inside"), ("capture", "inside")]
    + [("inline", "inside")],  # inline jobs always end inside the block
)
async def test_callbacks_come_in_the_order_redis_pushes_them(
    mode: str, timeline: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url") if mode == "redis" else NO_REDIS
    app = asyncjobs.App(url)

    @app.job(name="po.work")
    async def work(n: int) -> None:
        pass

    @app.job(name="po.noted", queue="callbacks")  # a queue no worker here reads
    async def noted(bid: str, event: str, tag: str) -> None:
        pass

    def events(tag: str) -> dict[str, Any]:
        return {f"on_{e}": noted.s(event=e, tag=tag) for e in ("complete", "success")}

    async def nested(between: Callable[[], Awaitable[Any]]) -> None:
        async with app.batch(**events("parent")):
            await work.defer(1)
            await between()
            async with app.batch(**events("child")):
                await work.defer(2)
                await between()

    async def nothing() -> None:
        pass

    def named(args: list[dict[str, Any]]) -> list[str]:
        return [f"{a['event']} {a['tag']}" for a in args]

    try:
        if mode == "redis":
            if timeline == "after":
                await nested(nothing)
            async with app.run_worker(queues=["default"], concurrency=1) as worker:
                if timeline == "inside":
                    await nested(lambda: _acked(app, worker.process_id))
                store = await app.open_store()
                await wait_for(lambda: _has(store.client.llen(store.keys.queue("callbacks"))), 10)
                await _acked(app, worker.process_id)
            pushed = named([r.args for r in await api.queue_entries(app, "callbacks")])
        elif mode == "capture":
            with testing.capture(app) as captured:
                await nested(nothing if timeline == "after" else lambda: captured.drain(work))
                await captured.drain(work)
                pushed = named([c.arguments for c in captured.for_queue("callbacks")])
        else:
            with testing.inline(app) as state:
                await nested(nothing)
                pushed = named([c.arguments for c in state.for_job(noted)])
        assert pushed == PUSH_ORDER[timeline]
    finally:
        await app.aclose()


async def _has(n: Awaitable[int], at_least: int = 4) -> bool:
    return await n >= at_least


async def _acked(app: asyncjobs.App, process_id: str) -> None:
    """Wait until the worker has run and acknowledged every job of queue default."""
    store = await app.open_store()
    places = [
        store.keys.queue("default"),
        store.keys.landing(process_id),
        store.keys.inflight(process_id),
    ]

    async def done() -> bool:
        return not await store.client.exists(*places)

    await wait_for(done, 10)


# -- status: app.status and handle.status, the same scenarios, every mode -------------------

# A worker's process id, host:pid:random: what a running job's status names.
PROCESS = re.compile(r"^[^:]+:\d+:[0-9a-f]{6}$")


def _check(st: asyncjobs.JobStatus, since: float, state: str, **fields: Any) -> None:
    """``st`` is ``state`` since a time from ``since`` to now, with ``fields`` and
    nothing else set."""
    assert st.at is not None and since <= st.at <= time.time(), st
    assert st == asyncjobs.JobStatus(jid=st.jid, state=state, at=st.at, **fields)


def _progress(st: asyncjobs.JobStatus, since: float) -> tuple[Any, ...]:
    """What a status's progress says, less its time (checked here)."""
    assert st.progress is not None, st
    assert since <= st.progress.at <= time.time()
    return (st.progress.fraction, st.progress.message, st.progress.meta)


async def test_status_of_tracked_jobs_from_defer_to_their_end(harness: Harness) -> None:
    """``queued`` or ``scheduled`` from defer (inline has run the job by then),
    ``succeeded`` after; a job that keeps no status, and a jid never deferred, are
    ``unknown``."""
    app = harness.app

    @app.job(name="ts.kept", keep_result=60)
    async def kept(n: int) -> int:
        return 2 * n

    @app.job(name="ts.tracked", track_status=True, queue="low")
    async def tracked() -> None:
        pass

    @app.job(name="ts.plain")
    async def plain() -> None:
        asyncjobs.current_job().progress(1.0, "not kept")  # untracked: a no-op

    since = time.time()
    handle = await kept.defer(21)
    later = await kept.configure(delay=0.2).defer(1)
    low = await tracked.defer()
    many = all_sent(await tracked.defer_many([(), ()]))
    untracked = await plain.defer()
    assert handle is not None and later is not None and low is not None
    assert untracked is not None

    if not harness.runs_at_defer:
        _check(await app.status(handle), since, "queued", queue="default")
        st = await later.status()
        _check(st, since, "scheduled", queue="default", next_at=st.next_at)
        assert st.at is not None and st.next_at == pytest.approx(st.at + 0.2)
        _check(await low.status(), since, "queued", queue="low")
        for jid in many:
            _check(await app.status(jid), since, "queued", queue="low")
    await harness.settle()

    for kept_jid in (handle, later):
        _check(await app.status(kept_jid), since, "succeeded", has_result=True)
    for tracked_jid in (low, *many):  # track_status alone keeps no result
        _check(await app.status(tracked_jid), since, "succeeded")
    assert await handle.status() == await app.status(handle)
    assert await api.job_status(app, handle) == await app.status(handle)
    assert await handle.result() == 42
    for jid in (untracked, new_jid()):
        assert await app.status(jid) == asyncjobs.JobStatus(jid=jid, state="unknown")


class Skipped(Exception):
    """Not worth a retry (``discard_on``)."""


async def test_status_of_jobs_that_fail(harness: Harness) -> None:
    """``dead``, ``failed`` (discarded, or dropped unrun by its ``expires_in``) and
    ``retrying`` carry the error as a worker stores it; the death handlers see the
    outcome already stored."""
    app = harness.app
    seen: list[asyncjobs.JobStatus] = []

    @app.job(name="ts.doomed", keep_result=60, retry=0)
    async def doomed() -> int:
        raise ValueError("no good")

    @app.job(name="ts.skipped", track_status=True, discard_on=Skipped)
    async def skipped() -> None:
        raise Skipped("not worth a retry")

    @app.job(name="ts.flaky", track_status=True, retry=3, retry_in=lambda count, exc: 3600)
    async def flaky() -> None:
        raise ConnectionError("try again later")

    @app.job(name="ts.late", track_status=True)
    async def late() -> None:
        pass

    async def died(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        seen.append(await app.status(ctx.jid))

    app.death_handlers.append(died)
    since = time.time()
    dead, discarded, retrying = new_jid(), new_jid(), new_jid()
    with harness.raises(ValueError):
        await doomed.configure(jid=dead).defer()
    with harness.raises(Skipped):
        await skipped.configure(jid=discarded).defer()
    with harness.raises(ConnectionError):
        await flaky.configure(jid=retrying).defer()
    stale = await late.configure(expires_in=0.05).defer()
    assert stale is not None
    expired = time.time() + 0.05
    await wait_for(lambda: time.time() > expired)  # capture and Redis: it expires unrun
    await harness.settle(raise_errors=False)

    _check(await app.status(dead), since, "dead", error_class="ValueError", error_message="no good")
    _check(
        await app.status(discarded),
        since,
        "failed",
        error_class="Skipped",
        error_message="not worth a retry",
    )
    st = await app.status(retrying)
    _check(
        st,
        since,
        "retrying",
        queue="default",
        retry_count=1,
        next_at=st.next_at,
        error_class="ConnectionError",
        error_message="try again later",
    )
    assert st.at is not None and st.next_at == pytest.approx(st.at + 3600)
    if harness.runs_at_defer:
        _check(await stale.status(), since, "succeeded")  # track_status: no result kept
    else:
        _check(
            await stale.status(),
            since,
            "failed",
            error_class="NotRun",
            error_message="expired (expires_in), or replaced by a later unique job",
        )
    assert sorted((s.jid, s.state) for s in seen) == sorted([(dead, "dead"), (discarded, "failed")])


async def test_status_of_a_running_job_and_its_progress(harness: Harness) -> None:
    """A running job sees itself ``running``, with the process that runs it and its last
    progress (a worker writes both in the background: the job waits for them); what an
    untracked job it defers reports goes nowhere; the last progress outlives the run."""
    app = harness.app
    seen: list[asyncjobs.JobStatus] = []

    @app.job(name="ts.child")
    async def child() -> None:
        asyncjobs.current_job().progress(0.9, "the child's")

    @app.job(name="ts.export", track_status=True, queue="low")
    async def export(rows: int) -> None:
        ctx = asyncjobs.current_job()
        ctx.progress(0.5, "half way", meta={"rows": rows // 2})

        async def reported() -> bool:
            st = await app.status(ctx.jid)
            return st.state == "running" and st.progress is not None

        await wait_for(reported)
        seen.append(await app.status(ctx.jid))
        await child.defer()  # inline: runs now, inside this job
        seen.append(await app.status(ctx.jid))
        ctx.progress(1.0, "done", meta={"rows": rows})

    since = time.time()
    handle = await export.defer(10)
    assert handle is not None
    await harness.settle()

    first, second = seen
    assert first.process is not None and PROCESS.match(first.process), first
    assert _progress(first, since) == (0.5, "half way", {"rows": 5})
    _check(first, since, "running", queue="low", process=first.process, progress=first.progress)
    assert second == first
    st = await handle.status()
    assert _progress(st, since) == (1.0, "done", {"rows": 10})
    _check(st, since, "succeeded", progress=st.progress)  # track_status: no result kept


async def test_what_json_cannot_hold(harness: Harness) -> None:
    """A progress ``meta`` that JSON cannot hold raises ValueError in the job; a return
    value it cannot hold is stored as ``null`` (an error logged), the job succeeded."""
    app = harness.app

    @app.job(name="ts.odd_progress", track_status=True, retry=0)
    async def odd_progress() -> None:
        asyncjobs.current_job().progress(0.1, meta={"what": object()})

    @app.job(name="ts.odd_result", keep_result=60)
    async def odd_result() -> object:
        return object()

    since = time.time()
    failing = new_jid()
    with harness.raises(ValueError):
        await odd_progress.configure(jid=failing).defer()
    handle = await odd_result.defer()
    assert handle is not None
    await harness.settle(raise_errors=False)

    _check(
        await app.status(failing),
        since,
        "dead",
        error_class="ValueError",
        error_message="progress meta cannot be encoded as JSON: "
        "Encoding objects of type object is unsupported",
    )
    _check(await handle.status(), since, "succeeded", has_result=True)
    assert await handle.result() is None


# -- cancel: app.cancel and handle.cancel, the same scenarios, every mode -------------------


async def test_cancel_a_job_that_has_not_run(harness: Harness) -> None:
    """A job waiting in its queue or the schedule is removed and never runs; a tracked
    one is ``cancelled`` (its result raises JobCancelled), an untracked one ``unknown``;
    cancelling it again, or a jid never deferred: ``"not found"``. Inline has run each
    job inside its defer (``delay`` and ``at`` too): ``"not found"``, as a finished job."""
    app = harness.app
    ran: list[int] = []

    @app.job(name="tc.kept", keep_result=60)
    async def kept(n: int) -> int:
        ran.append(n)
        return n

    @app.job(name="tc.tracked", track_status=True, queue="low")
    async def tracked(n: int) -> None:
        ran.append(n)

    @app.job(name="tc.plain")
    async def plain(n: int) -> None:
        ran.append(n)

    since = time.time()
    queued = await kept.defer(1)
    scheduled = await kept.configure(delay=600).defer(2)
    status_only = await tracked.defer(3)
    untracked = await plain.configure(at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).defer(4)
    other = await plain.defer(5)
    assert queued is not None and scheduled is not None and status_only is not None
    assert untracked is not None and other is not None

    expected = "not found" if harness.runs_at_defer else "removed"
    assert await queued.cancel() == expected
    for waiting in (scheduled, status_only, untracked):
        assert await app.cancel(waiting) == expected
    for gone in (queued, untracked, new_jid()):
        assert await app.cancel(gone) == "not found"
    if not harness.runs_at_defer:
        assert [d.jid for d in await harness.deferred()] == [other]
    await harness.settle()

    if harness.runs_at_defer:
        assert ran == [1, 2, 3, 4, 5]
        assert await queued.result() == 1
        _check(await status_only.status(), since, "succeeded")
        return
    assert ran == [5]
    for jid in (queued, scheduled, status_only):
        _check(await app.status(jid), since, "cancelled")
        assert await api.job_status(app, jid) == await app.status(jid)
    for handle in (queued, scheduled):
        with pytest.raises(asyncjobs.JobCancelled):
            await handle.result(timeout=1)
    assert await app.status(untracked) == asyncjobs.JobStatus(jid=untracked, state="unknown")


async def test_cancel_a_job_waiting_for_its_retry(harness: Harness) -> None:
    """A job that failed with retries left waits for its retry (the test modes make none:
    it waits for good): removed, as from Redis's retry set; ``cancelled`` if tracked."""
    app = harness.app

    @app.job(name="tc.flaky", track_status=True, retry=3, retry_in=lambda count, exc: 3600)
    async def flaky() -> None:
        raise ConnectionError("try again later")

    @app.job(name="tc.flaky_plain", retry=3, retry_in=lambda count, exc: 3600)
    async def flaky_plain() -> None:
        raise ConnectionError("try again later")

    since = time.time()
    tracked, untracked = new_jid(), new_jid()
    with harness.raises(ConnectionError):
        await flaky.configure(jid=tracked).defer()
    with harness.raises(ConnectionError):
        await flaky_plain.configure(jid=untracked).defer()
    await harness.settle(raise_errors=False)
    assert (await app.status(tracked)).state == "retrying"

    for jid in (tracked, untracked):
        assert await app.cancel(jid) == "removed"
        assert await app.cancel(jid) == "not found"
    _check(await app.status(tracked), since, "cancelled")
    assert await app.status(untracked) == asyncjobs.JobStatus(jid=untracked, state="unknown")


async def test_cancel_a_running_job_from_another_task(harness: Harness) -> None:
    """A running job (capture: while ``drain`` runs it; inline: inside its ``defer``) is
    cancelled at its ``await``: ``"cancelling"``, its outcome ``cancelled`` (its result
    raises JobCancelled), the app's cancel handlers run; then ``"not found"``. The
    caller (drain, defer) goes on: a cancelled job is not a failure."""
    app = harness.app
    started = anyio.Event()
    answers: list[str] = []
    handled: list[tuple[str, str]] = []

    @app.job(name="tc.crawl", keep_result=60)
    async def crawl(site: str) -> int:
        started.set()
        await anyio.sleep(3600)  # a long crawl
        return 0

    async def on_cancel(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        handled.append((ctx.jid, type(exc).__name__))

    app.cancel_handlers.append(on_cancel)
    since = time.time()
    jid = new_jid()

    async def cancel_once_started() -> None:
        await started.wait()
        answers.append(await app.cancel(jid))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_once_started)
            handle = await crawl.configure(jid=jid).defer("example.com")
            await harness.settle()
    assert handle is not None
    assert answers == ["cancelling"]
    with pytest.raises(asyncjobs.JobCancelled):
        await handle.result(timeout=5)
    _check(await handle.status(), since, "cancelled")
    await wait_for(lambda: handled == [(jid, "CancelledError")])
    assert await handle.cancel() == "not found"


async def test_a_job_cancels_itself_and_shield_holds_the_request_back(harness: Harness) -> None:
    """A job that cancels itself is cancelled at an ``await`` (on Redis maybe in that
    very ``app.cancel`` call: the request may arrive before its reply). Inside
    ``asyncjobs.shield()`` the request waits for the block's end: ``"cancelling"``."""
    app = harness.app
    answers: list[str] = []
    charged: list[int] = []

    @app.job(name="tc.quitter", track_status=True)
    async def quitter() -> None:
        await app.cancel(asyncjobs.current_job().jid)
        await anyio.sleep(3600)

    @app.job(name="tc.checkout", track_status=True)
    async def checkout(order: int) -> None:
        with asyncjobs.shield():
            answers.append(await app.cancel(asyncjobs.current_job().jid))
            await anyio.sleep(0.2)  # the request is held back meanwhile
            charged.append(order)
        await anyio.sleep(3600)

    since = time.time()
    with anyio.fail_after(10):
        quit_handle = await quitter.defer()
        checkout_handle = await checkout.defer(42)
        assert quit_handle is not None and checkout_handle is not None
        await harness.settle()
    assert answers == ["cancelling"]
    assert charged == [42]
    for handle in (quit_handle, checkout_handle):
        _check(await handle.status(), since, "cancelled")


@pytest.mark.parametrize("harness", ["inline", "redis"], indirect=True)
async def test_a_job_cancels_the_job_that_deferred_it(harness: Harness) -> None:
    """A job cancels the job that deferred it while that one runs: on Redis the two run
    side by side; inline the child runs inside its parent's ``defer`` (in its task), and
    the request reaches the parent at its first ``await`` after the child ended. (Not
    in capture: it runs one job at a time, so the child would run after its parent.)"""
    app = harness.app
    answers: list[str] = []

    @app.job(name="tc.child", track_status=True)
    async def child(parent_jid: str) -> None:
        answers.append(await app.cancel(parent_jid))

    @app.job(name="tc.parent", track_status=True)
    async def parent() -> None:
        handle = await child.defer(asyncjobs.current_job().jid)
        assert handle is not None
        await anyio.sleep(3600)

    since = time.time()
    with anyio.fail_after(10):
        handle = await parent.defer()
        assert handle is not None
        await harness.settle()
    assert answers == ["cancelling"]
    _check(await handle.status(), since, "cancelled")


# -- what only the helpers do ---------------------------------------------------------------


@pytest.fixture
def mem_app() -> Iterator[asyncjobs.App]:
    yield asyncjobs.App(NO_REDIS)


async def test_inline_failure_propagates_to_the_caller(mem_app: asyncjobs.App) -> None:
    @mem_app.job
    async def boom(n: int) -> None:
        raise ValueError(f"boom {n}")

    with testing.inline(mem_app) as state:
        with pytest.raises(ValueError, match="boom 1"):
            await boom.defer(1)
        assert [c.arguments for c in state.for_job(boom)] == [{"n": 1}]
    with pytest.raises(LookupError):
        asyncjobs.current_job()  # the job's context did not leak into the caller


async def test_inline_applies_the_timeout(mem_app: asyncjobs.App) -> None:
    import anyio

    @mem_app.job(timeout=0.05)
    async def slow() -> None:
        await anyio.sleep(5)

    with testing.inline(mem_app), pytest.raises(asyncjobs.JobTimeout, match="timeout of 0.05s"):
        await slow.defer()


async def test_capture_records_and_drains_in_order(mem_app: asyncjobs.App) -> None:
    ran: list[str] = []

    @mem_app.job
    async def a(x: int, *, tag: str = "t") -> None:
        ran.append(f"a{x}")
        if x == 1:
            await b.defer(dt.date(2024, 1, 2))

    @mem_app.job(queue="low", retry=2)
    async def b(day: dt.date) -> None:
        ran.append(f"b{day.day}")

    at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with testing.capture(mem_app) as captured:
        j1 = await a.defer(1, tag="x")
        j2 = await b.configure(at=at).defer(dt.date(2024, 1, 3))
        assert len(captured) == 2
        [c1] = captured.for_job(a)
        assert (c1.jid, c1.name, c1.queue, c1.at) == (j1, a.name, "default", None)
        assert (c1.args, c1.kwargs, c1.arguments) == ((1,), {"tag": "x"}, {"x": 1, "tag": "x"})
        [c2] = captured.for_queue("low")
        assert c2.jid == j2
        assert c2.args == (dt.date(2024, 1, 3),)
        assert c2.at is not None and abs((c2.at - at).total_seconds()) < 1e-3
        assert c2.retry == 2

        assert await captured.drain() == []
        assert ran == ["a1", "b3", "b2"]  # oldest first; b2 was deferred during the drain
        assert captured.jobs == []
        assert [c.jid for c in captured.ran][:2] == [j1, j2]

        await a.defer(2)
        await b.defer(dt.date(2024, 1, 4))
        await captured.drain(b)  # only b's
        assert ran[-1] == "b4"
        assert [c.name for c in captured.jobs] == [a.name]
        captured.clear()
        assert captured.jobs == []
        with pytest.raises(asyncjobs.ArgumentError):
            await b.defer("not a date")  # type: ignore[arg-type]
        assert captured.jobs == []


async def test_drain_raises_or_collects_failures(mem_app: asyncjobs.App) -> None:
    ran: list[int] = []

    @mem_app.job
    async def maybe(n: int) -> None:
        if n % 2:
            raise RuntimeError(f"odd {n}")
        ran.append(n)

    with testing.capture(mem_app) as captured:
        await maybe.defer_many([(0,), (1,), (2,), (3,)])
        with pytest.raises(RuntimeError, match="odd 1"):
            await captured.drain()
        assert ran == [0]
        assert [c.arguments["n"] for c in captured.jobs] == [2, 3]  # 1 is gone, rest wait
        failures = await captured.drain(raise_errors=False)
        assert ran == [0, 2]
        assert [(f.job.arguments["n"], str(f.error)) for f in failures] == [(3, "odd 3")]


async def test_drain_stops_a_job_that_defers_itself(mem_app: asyncjobs.App) -> None:
    @mem_app.job
    async def forever() -> None:
        await forever.defer()

    with testing.capture(mem_app) as captured:
        await forever.defer()
        with pytest.raises(RuntimeError, match="ran 50 jobs"):
            await captured.drain(limit=50)


async def test_capture_refuses_an_oversized_payload() -> None:
    app = asyncjobs.App(NO_REDIS, max_payload_bytes=200)

    @app.job
    async def big(data: str) -> None: ...

    with testing.capture(app) as captured:
        with pytest.raises(asyncjobs.EnqueueError, match="over the limit of 200"):
            await big.defer("x" * 500)
        with pytest.raises(asyncjobs.EnqueueError, match="over the limit of 200"):
            await big.defer_many([("small",), ("x" * 500,)])
        assert captured.jobs == []


async def test_the_app_is_restored_and_drain_needs_the_block(mem_app: asyncjobs.App) -> None:
    @mem_app.job
    async def noop() -> None: ...

    with testing.capture(mem_app) as outer:
        with pytest.raises(RuntimeError, match="do not nest"), testing.inline(mem_app):
            pass  # pragma: no cover
        await noop.defer()
        assert len(outer.jobs) == 1
    assert "_enqueue" not in vars(mem_app)
    assert "_enqueue_many" not in vars(mem_app)
    with pytest.raises(RuntimeError, match="inside the `with capture"):
        await outer.drain()
    with pytest.raises(asyncjobs.RedisUnavailable):
        await noop.defer()  # the real client again: nothing listens at NO_REDIS


async def test_a_mode_covers_its_context_not_unrelated_tasks(app: asyncjobs.App) -> None:
    """A defer from a task that was running before the block (a web server's, say) goes
    to Redis; one from the block, or from a task the block starts, is captured."""

    @app.job
    async def work(where: str) -> None: ...

    go = anyio.Event()
    done = anyio.Event()

    async def unrelated() -> None:
        await go.wait()
        await work.defer("unrelated")
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(unrelated)
        await anyio.lowlevel.checkpoint()
        with testing.capture(app) as captured:
            await work.defer("block")
            go.set()
            await done.wait()
            async with anyio.create_task_group() as inner:
                inner.start_soon(work.defer, "child")
        assert sorted(c.arguments["where"] for c in captured.jobs) == ["block", "child"]
    [raw] = await (await app.connect()).lrange("{asyncjobs}:queue:default", 0, -1)
    assert json.loads(raw)["args"] == {"where": "unrelated"}


async def test_inline_runs_client_chain_then_server_chain_then_the_job(
    mem_app: asyncjobs.App,
) -> None:
    order: list[str] = []

    @mem_app.job
    async def work() -> None:
        order.append("job")

    async def client(payload: asyncjobs.Payload, call_next: Any) -> Any:
        order.append("client before")
        jid = await call_next(payload)
        order.append("client after")
        return jid

    async def server(ctx: asyncjobs.JobContext, call_next: Any) -> Any:
        order.append("server")
        return await call_next()

    mem_app.client_middleware.add(client)
    mem_app.server_middleware.add(server)
    with testing.inline(mem_app):
        await work.defer()
    assert order == ["client before", "client after", "server", "job"]


async def test_captured_jobs_carry_enqueued_at_or_their_due_time(mem_app: asyncjobs.App) -> None:
    @mem_app.job
    async def work() -> None: ...

    before = dt.datetime.now(dt.UTC)
    with testing.capture(mem_app) as captured:
        await work.defer()
        await work.configure(delay=60).defer()
    now, later = captured.jobs
    assert now.enqueued_at is not None and before <= now.enqueued_at <= dt.datetime.now(dt.UTC)
    assert now.at is None
    assert later.enqueued_at is None and later.at is not None and later.at > before


async def test_run_one_runs_the_oldest_and_raises_on_an_empty_capture(
    mem_app: asyncjobs.App,
) -> None:
    ran: list[int] = []

    @mem_app.job
    async def work(n: int) -> None:
        ran.append(n)
        await work.defer(n + 10)  # captured, not run, by run_one

    with testing.capture(mem_app) as captured:
        with pytest.raises(LookupError, match="no job is pending"):
            await captured.run_one()
        await work.defer(1)
        await work.defer(2)
        first = await captured.run_one()
        assert first.arguments == {"n": 1} and ran == [1]
        assert [c.arguments["n"] for c in captured.jobs] == [2, 11]


async def test_death_handlers_and_on_exhausted_run_in_test_modes(mem_app: asyncjobs.App) -> None:
    """The executor is shared: a job out of retries runs its death hooks in tests too."""
    seen: list[str] = []

    async def exhausted(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        seen.append(f"exhausted {ctx.name.rsplit('.', 1)[-1]} {exc}")

    async def died(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        seen.append(f"death {exc}")

    @mem_app.job(retry=0, on_exhausted=exhausted)
    async def fragile() -> None:
        raise ValueError("broken")

    @mem_app.job(retry=3)
    async def sturdy() -> None:
        raise ValueError("again")

    mem_app.death_handlers.append(died)
    with testing.inline(mem_app):
        with pytest.raises(ValueError, match="broken"):
            await fragile.defer()
        with pytest.raises(ValueError, match="again"):
            await sturdy.defer()  # has retries left: no death hooks
    assert seen == ["exhausted fragile broken", "death broken"]


async def test_inline_timeout_leaves_the_caller_usable(mem_app: asyncjobs.App) -> None:
    """The watchdog cancels the job in the caller's task; once JobTimeout is raised the
    caller is not left half-cancelled (it can await, and use timeouts of its own)."""

    @mem_app.job(timeout=0.05)
    async def slow() -> None:
        await anyio.sleep(5)

    with testing.inline(mem_app):
        with pytest.raises(asyncjobs.JobTimeout):
            await slow.defer()
        with anyio.fail_after(1):
            await anyio.sleep(0.01)


async def test_capture_drain_that_raises_leaves_the_batch_pending(mem_app: asyncjobs.App) -> None:
    """A failure stops drain(): the failed job counts as a failure waiting for its retry
    (test modes make none), the jobs after it stay pending, and so does the batch."""
    events: list[str] = []

    @mem_app.job
    async def work(n: int) -> None:
        if n == 1:
            raise ValueError("one fails")

    @mem_app.job
    async def noted(bid: str, event: str) -> None:
        events.append(event)

    with testing.capture(mem_app) as captured:
        async with mem_app.batch(
            on_complete=noted.s(event="complete"), on_success=noted.s(event="success")
        ) as batch:
            await work.defer_many([(1,), (2,), (3,)])
        with pytest.raises(ValueError, match="one fails"):
            await captured.drain()
        status = await batch.status()
        assert (status.pending, status.failures, status.complete) == (3, 1, False)
        assert [c.arguments["n"] for c in captured.jobs] == [2, 3]
        await captured.drain()  # the rest run; the batch completes, never succeeds
        status = await batch.status()
        assert (status.pending, status.failures, status.complete, status.success) == (
            *(1, 1),
            *(True, False),
        )
        assert events == ["complete"]


async def test_inline_batch_block_closes_when_a_job_raises(mem_app: asyncjobs.App) -> None:
    """Inline, a failing job raises out of its defer, and so out of the block: the
    block still closes (the jobs deferred before count), and the callbacks its close
    fires run before the failure reaches the test."""
    events: list[str] = []

    @mem_app.job
    async def work(n: int) -> None:
        if n == 2:
            raise ValueError("two fails")

    @mem_app.job
    async def noted(bid: str, event: str) -> None:
        events.append(event)

    with testing.inline(mem_app):
        with pytest.raises(ValueError, match="two fails"):
            async with mem_app.batch(on_complete=noted.s(event="complete")) as batch:
                await work.defer(1)
                await work.defer(2)
                await work.defer(3)  # pragma: no cover
        status = await batch.status()
        assert (status.total, status.pending, status.failures, status.complete) == (2, 1, 1, True)
        # defer_many stops at the failure: the jobs after it neither run nor count.
        with pytest.raises(ValueError, match="two fails"):
            async with mem_app.batch(on_complete=noted.s(event="complete")) as batch:
                await work.defer_many([(1,), (2,), (3,)])
        status = await batch.status()
        assert (status.total, status.pending, status.failures, status.complete) == (2, 1, 1, True)
    assert events == ["complete", "complete"]


async def test_inline_runs_every_callback_then_raises_the_first_failure(
    mem_app: asyncjobs.App,
) -> None:
    events: list[str] = []

    @mem_app.job
    async def work() -> None:
        pass

    @mem_app.job
    async def noted(bid: str, event: str) -> None:
        events.append(event)
        if event == "complete":
            raise RuntimeError("callback fails")

    with testing.inline(mem_app):
        with pytest.raises(RuntimeError, match="callback fails"):
            async with mem_app.batch(
                on_complete=noted.s(event="complete"), on_success=noted.s(event="success")
            ):
                await work.defer()
    assert events == ["complete", "success"]


async def test_results_in_a_test_mode_wait_for_nothing(mem_app: asyncjobs.App) -> None:
    """A job that has not run (yet) has no result in a test mode: TimeoutError at once,
    whatever the timeout (nothing else would run it meanwhile)."""

    @mem_app.job(keep_result=60)
    async def answer() -> int:
        return 42

    with testing.capture(mem_app) as captured:
        handle = await answer.defer()
        assert handle is not None
        with pytest.raises(TimeoutError, match="drain it first"):
            await handle.result()
        await captured.drain()
        assert await handle.result() == 42


async def test_status_in_a_test_mode_needs_no_redis(
    mem_app: asyncjobs.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """app.status and handle.status answer from the mode, without connecting; outside
    the block they go to Redis again."""

    async def no_connection(self: asyncjobs.App) -> None:
        raise AssertionError("app.status tried to connect to Redis")

    @mem_app.job(keep_result=60)
    async def answer() -> int:
        return 42

    with testing.capture(mem_app) as captured:
        handle = await answer.defer()
        assert handle is not None
        monkeypatch.setattr(asyncjobs.App, "connect", no_connection)
        assert (await mem_app.status(handle)).state == "queued"
        await captured.drain()
        assert (await handle.status()).state == "succeeded"
    with testing.inline(mem_app):
        handle = await answer.defer()
        assert handle is not None
        assert (await handle.status()).state == "succeeded"
    with pytest.raises(AssertionError, match="tried to connect"):
        await mem_app.status(handle)


async def test_cancel_in_a_test_mode_needs_no_redis(
    mem_app: asyncjobs.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """app.cancel and handle.cancel answer from the mode, without connecting: a captured
    job is removed and never runs; inline, the job ran in its defer. Outside the block
    they go to Redis again."""
    ran: list[int] = []

    async def no_connection(self: asyncjobs.App) -> None:
        raise AssertionError("app.cancel tried to connect to Redis")

    @mem_app.job(keep_result=60)
    async def answer(n: int) -> int:
        ran.append(n)
        return n

    monkeypatch.setattr(asyncjobs.App, "connect", no_connection)
    with testing.capture(mem_app) as captured:
        handle = await answer.defer(1)
        assert handle is not None
        assert await mem_app.cancel(handle) == "removed"
        assert captured.jobs == []
        assert await handle.cancel() == "not found"
        assert (await handle.status()).state == "cancelled"
        with pytest.raises(asyncjobs.JobCancelled):
            await handle.result()
        await captured.drain()
    with testing.inline(mem_app):
        handle = await answer.defer(2)
        assert handle is not None
        assert await handle.cancel() == "not found"
    assert ran == [2]
    with pytest.raises(AssertionError, match="tried to connect"):
        await mem_app.cancel(handle)
