"""The retry rules (issue 11, "Retries and failures"): pure decisions, and the
executor's outcomes with a recording sink (no Redis: the executor never writes)."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import pytest

import asyncjobs
from asyncjobs._payload import DECODER, ENCODER, Payload, decode_backtrace, encode_backtrace
from asyncjobs._retry import decide
from asyncjobs._worker.executor import Executor, Running


class Recorder:
    """A sink that keeps the outcomes."""

    def __init__(self) -> None:
        self.finished: list[bytes] = []
        self.moves: list[tuple[str, float, bytes]] = []

    def done(self, field: bytes) -> None:
        self.finished.append(field)

    def move(self, field: bytes, target: str, at: float, data: bytes) -> None:
        self.moves.append((target, at, data))

    def batch(self, field: bytes, bid: str) -> None:
        pass

    def last(self) -> tuple[str, float, Payload | None]:
        target, at, data = self.moves[-1]
        return target, at, DECODER.decode(data) if data else None


def make_app() -> asyncjobs.App:
    return asyncjobs.App("redis://localhost:1/0")  # never connected


def payload_of(job: asyncjobs.Job[Any, Any], *args: Any, **changes: Any) -> bytes:
    import msgspec

    p = job._build(job._opts, args, {}, time.time())
    return ENCODER.encode(msgspec.structs.replace(p, **changes))


async def run(app: asyncjobs.App, raw: bytes) -> Recorder:
    sink = Recorder()
    ex = Executor(app, sink)
    await ex.run(Running(b"jid", raw))
    assert await ex.wait_background(5)
    return sink


# -- 1. retry_in ------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [0, 0.0, -5, -0.1, None, float("inf"), float("nan")])
def test_retry_in_not_positive_falls_back_to_the_default_backoff(answer: Any) -> None:
    for count in (0, 3):
        d = decide(
            exc=ValueError(),
            retry_count=count,
            retry=25,
            dead=True,
            now=1000.0,
            rng=random.Random(1),
            retry_in=lambda c, e: answer,
        )
        assert d.target == "retry"
        delay = d.at - 1000.0
        assert count**4 + 15 <= delay < count**4 + 15 + 9 * (count + 1) + 1, (answer, delay)
        assert d.hook_error is None


def test_retry_in_positive_is_used_as_given() -> None:
    d = decide(
        exc=ValueError(),
        retry_count=0,
        retry=25,
        dead=True,
        now=1000.0,
        rng=random.Random(1),
        retry_in=lambda c, e: 0.5,
    )
    assert (d.target, d.at) == ("retry", 1000.5)


def test_retry_in_that_raises_uses_the_default_and_says_why() -> None:
    boom = ZeroDivisionError("division by zero")

    def broken(count: int, exc: BaseException) -> float:
        raise boom

    d = decide(
        exc=ValueError(),
        retry_count=0,
        retry=25,
        dead=True,
        now=1000.0,
        rng=random.Random(1),
        retry_in=broken,
    )
    assert d.target == "retry" and 15 <= d.at - 1000.0 < 26
    assert d.hook_error is boom


async def test_retry_in_that_raises_is_logged_with_job_jid_and_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()

    def broken(count: int, exc: BaseException) -> float:
        raise ZeroDivisionError("the hook divided by zero")

    @app.job(name="hooked", retry_in=broken)
    async def hooked() -> None:
        raise ValueError("job failed")

    raw = payload_of(hooked, jid="abc123")
    with caplog.at_level(logging.WARNING, logger="asyncjobs.job"):
        sink = await run(app, raw)
    target, at, _ = sink.last()
    assert target == "retry" and at - time.time() > 10
    [line] = [r for r in caplog.records if "retry_in" in r.getMessage()]
    assert line.levelno == logging.WARNING
    msg = line.getMessage()
    assert "hooked" in msg and "abc123" in msg
    assert "ZeroDivisionError" in msg and "the hook divided by zero" in msg


# -- 3. error details -------------------------------------------------------------------


def deep(n: int) -> None:
    # Two functions in turn: Python's traceback folds a frame that repeats the last.
    if n == 0:
        raise ValueError("deep down")
    deeper(n - 1)


def deeper(n: int) -> None:
    deep(n)


async def test_error_message_keeps_10000_chars_and_the_log_line_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()

    @app.job(name="long")
    async def long() -> None:
        raise ValueError("x" * 20_000)

    with caplog.at_level(logging.WARNING, logger="asyncjobs.job"):
        sink = await run(app, payload_of(long))
    _, _, p = sink.last()
    assert p is not None and p.error_message == "x" * 10_000
    [line] = [r.getMessage() for r in caplog.records if r.name == "asyncjobs.job"]
    assert len(line) < 700 and "x" * 499 + "…" in line


async def test_unprintable_exception_gets_a_placeholder() -> None:
    app = make_app()

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    @app.job(name="unprintable")
    async def unprintable() -> None:
        raise Unprintable()

    _, _, p = (await run(app, payload_of(unprintable))).last()
    assert p is not None and p.error_message == "<Unprintable: str() failed>"


@pytest.mark.parametrize(
    ("option", "expected"),
    [(False, None), (0, None), (3, 3), (True, "all"), (20, 20)],
)
async def test_backtrace_option_chooses_the_lines_nearest_the_error(
    option: bool | int, expected: int | str | None
) -> None:
    app = make_app()

    @app.job(name="tb", backtrace=option)
    async def tb() -> None:
        deep(30)

    _, _, p = (await run(app, payload_of(tb))).last()
    assert p is not None
    if expected is None:
        assert p.error_backtrace is None
        return
    assert isinstance(p.error_backtrace, str)  # packed, as Sidekiq stores it
    lines = decode_backtrace(p.error_backtrace)
    assert lines is not None and lines[-1] == "ValueError: deep down"
    if expected == "all":
        assert lines[0] == "Traceback (most recent call last):" and len(lines) > 60
    else:
        assert len(lines) == expected


async def test_default_backtrace_is_20_lines_and_a_cleaner_edits_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    app.backtrace_cleaner = lambda lines: [ln for ln in lines if "deeper(n - 1)" not in ln]

    @app.job(name="tb")
    async def tb() -> None:
        deep(30)

    _, _, p = (await run(app, payload_of(tb))).last()
    assert p is not None
    lines = decode_backtrace(p.error_backtrace)
    assert lines is not None and len(lines) == 20
    assert not any("deeper(n - 1)" in ln for ln in lines)

    def broken(lines: list[str]) -> list[str]:
        raise RuntimeError("cleaner bug")

    app.backtrace_cleaner = broken
    with caplog.at_level(logging.WARNING, logger="asyncjobs.executor"):
        _, _, p = (await run(app, payload_of(tb))).last()
    assert p is not None and len(decode_backtrace(p.error_backtrace) or []) == 20
    assert any("cleaner bug" in r.getMessage() for r in caplog.records)


def test_backtrace_option_is_checked_at_registration() -> None:
    app = make_app()
    for bad in (-1, "all", 2.5):
        with pytest.raises(asyncjobs.ConfigError, match="backtrace must be"):

            @app.job(name="bad", backtrace=bad)  # type: ignore[arg-type]
            async def bad_job() -> None: ...


def test_backtrace_of_older_payloads_and_damaged_ones_still_reads() -> None:
    assert decode_backtrace(["a", "b"]) == ["a", "b"]
    assert decode_backtrace(encode_backtrace(["a", "é"])) == ["a", "é"]
    assert decode_backtrace(None) is None
    [line] = decode_backtrace("not base64 zlib") or []
    assert line.startswith("<undecodable backtrace")


# -- 4. default_job_options -------------------------------------------------------------


def test_default_job_options_apply_and_job_options_override() -> None:
    app = asyncjobs.App(
        "redis://localhost:1/0", default_job_options={"retry": 5, "backtrace": False}
    )

    @app.job(name="a")
    async def a() -> None: ...

    @app.job(name="b", retry=2, backtrace=3)
    async def b() -> None: ...

    assert (a.retry, a.backtrace) == (5, False)
    assert (b.retry, b.backtrace) == (2, 3)
    assert a._build(a._opts, (), {}, 1.0).retry == 5  # what the payload carries

    app.default_job_options["queue"] = "low"  # Sidekiq's default_job_options=, later

    @app.job(name="c")
    async def c() -> None: ...

    assert (c.queue, c.retry) == ("low", 5)


def test_default_job_options_refuses_unknown_options_and_bad_values() -> None:
    with pytest.raises(asyncjobs.ConfigError, match="unknown option.*'retries'"):
        asyncjobs.App("redis://localhost:1/0", default_job_options={"retries": 5})
    app = asyncjobs.App("redis://localhost:1/0", default_job_options={"retry": -1})
    with pytest.raises(asyncjobs.ConfigError, match="retry must be"):

        @app.job(name="d")
        async def d() -> None: ...

    app = asyncjobs.App("redis://localhost:1/0")
    app.default_job_options["name"] = "x"  # a job's own, not a default
    with pytest.raises(asyncjobs.ConfigError, match="unknown option.*'name'"):

        @app.job
        async def e() -> None: ...


# -- 5. retry_for, retry_queue ----------------------------------------------------------


def test_retry_for_retries_whatever_the_count_until_the_first_failure_is_that_old() -> None:
    kw: dict[str, Any] = {"exc": ValueError(), "dead": True, "rng": random.Random(1)}
    young = decide(retry_count=100, retry=25, now=1000.0, failed_at=900.0, retry_for=3600, **kw)
    assert young.target == "retry"
    first = decide(retry_count=0, retry=0, now=1000.0, failed_at=None, retry_for=1, **kw)
    assert first.target == "retry"  # retry=0 would kill it: retry_for wins
    old = decide(retry_count=1, retry=25, now=5000.0, failed_at=1000.0, retry_for=3600, **kw)
    assert (old.target, old.reason) == ("dead", "retry_for exhausted (3600s)")
    gone = decide(
        retry_count=1,
        retry=25,
        now=5000.0,
        failed_at=1000.0,
        retry_for=3600,
        **kw | {"dead": False},
    )
    assert gone.target == "discard"


def test_retry_for_and_retry_queue_are_checked_at_registration() -> None:
    import datetime as dt

    app = make_app()

    @app.job(name="ok", retry_for=dt.timedelta(hours=48), retry_queue="slow")
    async def ok() -> None: ...

    assert (ok.retry_for, ok.retry_queue) == (48 * 3600.0, "slow")
    for bad in ({"retry_for": 0}, {"retry_for": -1}, {"retry_for": "1h"}):
        with pytest.raises(asyncjobs.ConfigError, match="retry_for"):

            @app.job(name="bad", **bad)
            async def bad_for() -> None: ...

    for queue in ("", "a b", "x:y"):
        with pytest.raises(asyncjobs.ConfigError, match="retry_queue: invalid queue name"):

            @app.job(name="bad", retry_queue=queue)
            async def bad_queue() -> None: ...


# -- 6. on_exhausted, death handlers, discarded_at --------------------------------------


async def test_on_exhausted_runs_before_the_outcome_and_sees_the_error() -> None:
    app = make_app()
    sink = Recorder()
    seen: list[tuple[str, Any, Any, Any, int]] = []

    async def on_exhausted(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        seen.append(("hook", ctx.error_class, ctx.error_message, ctx.discarded_at, len(sink.moves)))

    async def handler(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        seen.append(("handler", ctx.error_class, ctx.error_message, ctx.discarded_at, 1))

    app.death_handlers.append(handler)

    @app.job(name="dies", retry=0, on_exhausted=on_exhausted)
    async def dies() -> None:
        raise KeyError("gone")

    ex = Executor(app, sink)
    await ex.run(Running(b"jid", payload_of(dies)))
    assert await ex.wait_background(5)
    assert [t for t, *_ in sink.moves] == ["dead"]
    assert seen == [
        ("hook", "KeyError", "'gone'", None, 0),  # nothing reported yet
        ("handler", "KeyError", "'gone'", None, 1),
    ]


async def test_on_exhausted_discard_skips_the_dead_set_and_handlers_see_discarded_at() -> None:
    app = make_app()
    seen: list[Any] = []

    async def on_exhausted(ctx: asyncjobs.JobContext, exc: BaseException) -> str:
        return "discard"

    async def handler(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        seen.append((ctx.error_class, ctx.discarded_at))

    app.death_handlers.append(handler)

    @app.job(name="dropped", retry=0, on_exhausted=on_exhausted)
    async def dropped() -> None:
        raise ValueError("no")

    before = time.time()
    sink = await run(app, payload_of(dropped))
    assert [t for t, *_ in sink.moves] == ["drop"]
    [(error_class, discarded_at)] = seen
    assert error_class == "ValueError"
    assert discarded_at is not None and discarded_at.timestamp() >= before


async def test_dead_false_stamps_discarded_at_and_a_raising_on_exhausted_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    seen: list[Any] = []

    async def broken(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        raise RuntimeError("hook bug")

    async def handler(ctx: asyncjobs.JobContext, exc: BaseException) -> None:
        seen.append(ctx.discarded_at)

    app.death_handlers.append(handler)

    @app.job(name="quiet", retry=0, dead=False)
    async def quiet() -> None:
        raise ValueError("no")

    @app.job(name="loud", retry=0, on_exhausted=broken)
    async def loud() -> None:
        raise ValueError("no")

    sink = await run(app, payload_of(quiet))
    assert [t for t, *_ in sink.moves] == ["drop"] and seen[0] is not None
    with caplog.at_level(logging.ERROR, logger="asyncjobs.executor"):
        sink = await run(app, payload_of(loud))
    assert [t for t, *_ in sink.moves] == ["dead"] and seen[1] is None
    assert any("on_exhausted" in r.getMessage() for r in caplog.records)
