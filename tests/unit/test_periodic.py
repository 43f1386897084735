"""The pure side of periodic jobs: cron ticks, time zones and DST, catch-up, and the
registration API's refusals."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

import asyncjobs
from asyncjobs._periodic import CATCH_UP, Cron, due_ticks, start_cursor

PARIS = ZoneInfo("Europe/Paris")


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def ticks(cron: Cron, start: float, end: float) -> list[str]:
    out: list[str] = []
    t = cron.next_after(start)
    while t <= end:
        out.append(dt.datetime.fromtimestamp(t, PARIS).isoformat())
        t = cron.next_after(t)
    return out


def test_0230_daily_runs_once_on_the_spring_forward_day() -> None:
    # 2026-03-29, Paris: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    cron = Cron("30 2 * * *", "Europe/Paris")
    got = ticks(cron, at("2026-03-28T00:00+01:00"), at("2026-03-31T00:00+02:00"))
    assert got == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:30:00+02:00",  # shifted forward by the change, once
        "2026-03-30T02:30:00+02:00",
    ]


def test_0230_daily_runs_once_on_the_fall_back_day() -> None:
    # 2026-10-25, Paris: 03:00 CEST becomes 02:00 CET; 02:30 happens twice that day.
    cron = Cron("30 2 * * *", "Europe/Paris")
    got = ticks(cron, at("2026-10-24T00:00+02:00"), at("2026-10-27T00:00+01:00"))
    assert got == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",  # the first occurrence only
        "2026-10-26T02:30:00+01:00",
    ]


def test_every_hour_entries_follow_real_time_through_both_changes() -> None:
    cron = Cron("*/30 * * * *", "Europe/Paris")
    spring = ticks(cron, at("2026-03-29T01:00+01:00"), at("2026-03-29T03:30+02:00"))
    assert spring == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]
    fall = ticks(cron, at("2026-10-25T01:45+02:00"), at("2026-10-25T03:00+01:00"))
    assert fall == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_monthly_ticks_cross_changes_in_local_time() -> None:
    cron = Cron("0 0 1 * *", "Europe/Paris")
    got = ticks(cron, at("2026-02-15T00:00+01:00"), at("2026-11-02T00:00+01:00"))
    assert got[0] == "2026-03-01T00:00:00+01:00"
    assert got[1] == "2026-04-01T00:00:00+02:00"
    assert got[-1] == "2026-11-01T00:00:00+01:00"
    assert len(got) == 9


def test_seconds_field_first_and_strictly_after() -> None:
    cron = Cron("*/15 * * * * *")
    assert cron.next_after(0) == 15
    assert cron.next_after(14.999) == 15
    assert cron.next_after(15) == 30
    assert Cron("* * * * *").next_after(59.5) == 60
    assert Cron("0 3 * * *", "UTC").next_after(0) == 3 * 3600


def test_latest_at_or_before() -> None:
    assert Cron("*/15 * * * * *").latest_at_or_before(44.0) == 30
    assert Cron("*/15 * * * * *").latest_at_or_before(45.0) == 45
    daily = Cron("30 2 * * *", "Europe/Paris")
    assert daily.latest_at_or_before(at("2026-10-25T12:00+01:00")) == at("2026-10-25T02:30+02:00")
    assert Cron("0 0 29 2 *").latest_at_or_before(at("2027-01-01T00:00+00:00")) == at(
        "2024-02-29T00:00+00:00"
    )


def test_due_ticks_catch_up_and_missed() -> None:
    cron = Cron("* * * * * *")
    # Woken 3 s late: the 4 ticks since the cursor are all due, in order.
    assert due_ticks(cron, 100, 103.5) == ([100, 101, 102, 103], None, 104)
    # Not yet due.
    assert due_ticks(cron, 100, 99.9) == ([], None, 100)
    # Asleep far past CATCH_UP: the recent ticks are due, the last older one is missed.
    due, missed, cursor = due_ticks(cron, 100, 1000.2)
    assert due[0] == 1000 - CATCH_UP + 1 and due[-1] == 1000 and cursor == 1001
    assert missed == 1000 - CATCH_UP


def test_start_cursor() -> None:
    cron = Cron("* * * * * *")
    assert start_cursor(cron, 1000.5, None) == 1001  # a new entry starts from now
    assert start_cursor(cron, 1000.5, 995) == 996  # recent ticks no one enqueued
    assert start_cursor(cron, 1000.5, 10) == 1000 - CATCH_UP + 1  # older: missed


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda app, job: app.periodic(job, "* * *"), "invalid cron expression"),
        (lambda app, job: app.periodic(job, "61 * * * *"), "invalid cron expression"),
        (lambda app, job: app.periodic(job, "* * * * *", tz="Mars/Base"), "unknown time zone"),
        (lambda app, job: app.periodic(job, "* * * * *", missed="all"), "missed='all'"),
        (lambda app, job: app.periodic(job, "* * * * *", name="a:b"), "invalid periodic entry"),
        (lambda app, job: app.periodic(job, "* * * * *", args={"n": "x"}), "argument 'n'"),
        (lambda app, job: app.periodic(job, "* * * * *", queue="a b"), "invalid queue"),
        (lambda app, job: app.periodic(job), "give the cron expression"),
    ],
)
def test_bad_declarations_are_refused_in_one_line(call: object, message: str) -> None:
    app = asyncjobs.App("redis://localhost:1/0")

    @app.job
    async def job(n: int = 1) -> None:
        pass

    with pytest.raises(asyncjobs.AsyncJobsError, match=message) as info:
        call(app, job)  # type: ignore[operator]
    assert "\n" not in str(info.value)


def test_decorator_needs_a_job_without_required_arguments() -> None:
    app = asyncjobs.App("redis://localhost:1/0")
    with pytest.raises(asyncjobs.ArgumentError, match="n"):

        @app.periodic("* * * * *")
        async def needs(n: int) -> None:
            pass


def test_two_entries_of_one_job_need_names() -> None:
    app = asyncjobs.App("redis://localhost:1/0")

    @app.periodic("0 3 * * *", tz="Europe/Paris")
    async def report(kind: str = "daily") -> None:
        pass

    assert isinstance(report, asyncjobs.Job)
    with pytest.raises(asyncjobs.ConfigError, match="two periodic entries"):
        app.periodic(report, "0 4 * * 1", args={"kind": "weekly"})
    app.periodic(report, "0 4 * * 1", args={"kind": "weekly"}, name="weekly-report")
    assert sorted(app.periodic_entries) == [report.name, "weekly-report"]
    assert bytes(app.periodic_entries["weekly-report"].spec.args) == b'{"kind":"weekly"}'
