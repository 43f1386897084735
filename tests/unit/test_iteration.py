"""The pure half of iterable jobs (#14): sources, the item loop (when it saves, where it
stops), the spec's checks and cursor types. No Redis: saves are recorded in a list."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from asyncjobs import ConfigError, Iteration
from asyncjobs.iteration import IterableSpec, drive, from_ids, from_range

pytestmark = pytest.mark.timeout(10)


async def collect(source: AsyncIterator[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    return [pair async for pair in source]


async def test_from_range_starts_after_its_cursor() -> None:
    assert await collect(from_range(0, 4)) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert await collect(from_range(0, 4, cursor=1)) == [(2, 2), (3, 3)]
    assert await collect(from_range(0, 10, 3, cursor=3)) == [(6, 6), (9, 9)]
    assert await collect(from_range(5, 0, -2, cursor=5)) == [(3, 3), (1, 1)]
    assert await collect(from_range(0, 4, cursor=3)) == []
    with pytest.raises(ValueError, match="step"):
        await collect(from_range(0, 4, 0))


async def test_from_ids_uses_the_index_as_cursor() -> None:
    assert await collect(from_ids(["a", "b", "c"])) == [("a", 0), ("b", 1), ("c", 2)]
    assert await collect(from_ids(["a", "b", "c"], cursor=0)) == [("b", 1), ("c", 2)]
    assert await collect(from_ids([], cursor=None)) == []


def spec_of(fn: Any, **options: Any) -> IterableSpec:
    opts: dict[str, Any] = {"save_every": 3, "save_interval": None, "state_ttl": 60.0}
    opts.update(options)
    return IterableSpec(fn, name="t", **opts)


async def ten(it: Iteration[int]) -> AsyncIterator[int]:
    async for _, cursor in from_range(0, 10, cursor=it.cursor):
        yield cursor


async def test_drive_saves_every_n_items_and_not_after_the_last() -> None:
    it: Iteration[int] = Iteration("j")
    saves: list[tuple[int | None, int]] = []

    async def save() -> None:
        saves.append((it.cursor, it.items))

    assert await drive(spec_of(ten), it, (), {}, save=save) is True
    # Every 3 items; the 10th is not saved (the run completes: the state goes anyway).
    assert saves == [(2, 3), (5, 6), (8, 9)]
    assert it.cursor == 9 and it.items == 10


async def test_drive_saves_by_time_with_the_clock_it_is_given() -> None:
    now = [0.0]

    async def slow(it: Iteration[int]) -> AsyncIterator[int]:
        async for _, cursor in from_range(0, 6, cursor=it.cursor):
            now[0] += 2.0  # each item takes 2 s
            yield cursor

    it: Iteration[int] = Iteration("j")
    saves: list[int | None] = []

    async def save() -> None:
        saves.append(it.cursor)

    spec = spec_of(slow, save_every=None, save_interval=5.0)
    assert await drive(spec, it, (), {}, save=save, clock=lambda: now[0]) is True
    assert saves == [2, 5]  # at 6 s and 12 s: each 5 s or more after the last


async def test_drive_stops_at_the_item_boundary_saves_and_closes_the_generator() -> None:
    closed: list[int | None] = []

    async def job(it: Iteration[int]) -> AsyncIterator[int]:
        try:
            async for _, cursor in from_range(0, 100, cursor=it.cursor):
                yield cursor
        finally:
            closed.append(it.cursor)

    it: Iteration[int] = Iteration("j", 9, items=10, runs=2)
    saves: list[int | None] = []

    async def save() -> None:
        saves.append(it.cursor)

    assert (
        await drive(spec_of(job), it, (), {}, save=save, stopping=lambda: it.items >= 14) is False
    )
    assert it.cursor == 13 and saves == [12, 13] and closed == [13]
    assert it.resumed


async def test_drive_lets_a_failure_through_with_the_last_item_done() -> None:
    async def job(it: Iteration[int]) -> AsyncIterator[int]:
        async for n, cursor in from_range(0, 10, cursor=it.cursor):
            if n == 4:
                raise RuntimeError("boom")
            yield cursor

    it: Iteration[int] = Iteration("j")
    with pytest.raises(RuntimeError, match="boom"):
        await drive(spec_of(job), it, (), {})
    assert it.cursor == 3 and it.items == 4


def test_the_cursor_type_comes_from_the_annotation() -> None:
    async def by_time(it: Iteration[dt.datetime]) -> AsyncIterator[dt.datetime]:
        yield dt.datetime.now(dt.UTC)

    async def bare(it: Iteration) -> AsyncIterator[Any]:  # type: ignore[type-arg]
        yield 1

    when = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
    assert spec_of(by_time).decode_cursor(msgspec.json.encode(when)) == when
    assert spec_of(bare).decode_cursor(b'{"page": "x"}') == {"page": "x"}
    with pytest.raises(msgspec.ValidationError):
        spec_of(ten).decode_cursor(b'"not an int"')


def test_bad_specs_are_refused_in_one_line() -> None:
    async def plain(it: Iteration[int]) -> None: ...

    async def untyped_cursor(it: Iteration[slice]) -> AsyncIterator[slice]:
        yield slice(1)

    async def keyword_only(*, it: Iteration[int]) -> AsyncIterator[int]:
        yield 1

    cases: list[tuple[Any, dict[str, Any], str]] = [
        (plain, {}, "async generator"),
        (untyped_cursor, {}, "cannot be stored as JSON"),
        (keyword_only, {}, "first parameter"),
        (ten, {"save_every": True}, "save_every"),
        (ten, {"save_interval": float("inf")}, "save_interval"),
        (ten, {"state_ttl": 0}, "state_ttl"),
        (ten, {"max_runtime": -1}, "max_runtime"),
        (ten, {"save_every": None, "save_interval": None}, "save_every or save_interval"),
    ]
    for fn, options, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            spec_of(fn, **options)
        assert "\n" not in str(info.value)


def test_only_the_iteration_hint_is_resolved() -> None:
    """The return annotation may name what is imported under TYPE_CHECKING only."""

    async def job(it: Iteration[int]) -> NotImportedAtRuntime:  # type: ignore[name-defined] # noqa: F821
        yield 1

    assert spec_of(job).cursor_type is int

    async def broken(it: Iteration[NotImported]) -> AsyncIterator[int]:  # type: ignore[name-defined] # noqa: F821
        yield 1

    with pytest.raises(ConfigError, match="cannot resolve the type of 'it'"):
        spec_of(broken)
