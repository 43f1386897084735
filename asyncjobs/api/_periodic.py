"""Periodic entries: list them (last run, next run, recent history), pause, resume, run
now, remove. Read from what the workers reconciled in Redis: no job code is needed."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import msgspec

from .._errors import AsyncJobsError
from .._payload import ENCODER
from .._periodic import ENTRY_DECODER, Cron, EntrySpec
from .._store._periodic import ENQUEUED, LOST, REMOVED
from ._common import _store

if TYPE_CHECKING:
    from .._app import App


class PeriodicNotFound(AsyncJobsError, LookupError):
    """No periodic entry of this name is stored (a worker writes them at its start)."""


class PeriodicRun(msgspec.Struct, frozen=True, kw_only=True):
    """One enqueue of a periodic entry. ``how``: ``tick`` (on schedule), ``missed``
    (the latest missed tick, at start) or ``now`` (run by hand; ``tick`` is the time)."""

    tick: float
    enqueued_at: float
    jid: str
    how: str


class PeriodicInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A periodic entry as the workers last reconciled it, and its state."""

    name: str
    job: str
    cron: str
    tz: str
    queue: str
    args: dict[str, Any]
    missed: str
    paused: bool
    last_tick: float | None
    """The last tick enqueued (not counting runs by hand), Unix seconds."""
    last_jid: str | None
    last_enqueued_at: float | None
    next_tick: float | None
    """The next tick after now (None while paused)."""
    history: list[PeriodicRun]
    """Recent enqueues, newest first."""


def _float(value: bytes | None) -> float | None:
    return float(value) if value is not None else None


async def periodic_entries(app: App, *, history: int = 10) -> list[PeriodicInfo]:
    """Every periodic entry, by name, with ``history`` recent runs each."""
    store = await _store(app)
    stored = await store.periodic_entries(history)
    now = time.time()
    out: list[PeriodicInfo] = []
    for name, (definition, state, runs) in stored.items():
        spec = _decode(name, definition)
        paused = state.get(b"paused") == b"1"
        try:
            upcoming = None if paused else Cron(spec.cron, spec.tz).next_after(now)
        except AsyncJobsError:
            upcoming = None  # written by a newer version this one cannot read
        jid = state.get(b"last_jid")
        out.append(
            PeriodicInfo(
                name=name,
                job=spec.job,
                cron=spec.cron,
                tz=spec.tz,
                queue=spec.queue,
                args=json.loads(bytes(spec.args)),
                missed=spec.missed,
                paused=paused,
                last_tick=_float(state.get(b"last")),
                last_jid=jid.decode() if jid is not None else None,
                last_enqueued_at=_float(state.get(b"last_at")),
                next_tick=upcoming,
                history=[_run(r) for r in runs],
            )
        )
    return out


def _decode(name: str, definition: bytes) -> EntrySpec:
    try:
        return ENTRY_DECODER.decode(definition)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise AsyncJobsError(
            f"periodic entry {name!r}: its stored definition is unreadable ({exc}); a "
            "worker of your app rewrites it at start"
        ) from None


def _run(raw: bytes) -> PeriodicRun:
    tick, at, jid, how = raw.decode().split(" ")
    return PeriodicRun(tick=float(tick), enqueued_at=float(at), jid=jid, how=how)


async def pause_periodic(app: App, name: str) -> None:
    """Pause entry ``name``: no worker enqueues its ticks until it is resumed (the
    ticks meanwhile are skipped, whatever the missed-tick policy)."""
    if not await (await _store(app)).periodic_pause(name, True):
        raise _not_found(name)


async def resume_periodic(app: App, name: str) -> None:
    """Resume entry ``name``: it ticks again from its next tick (the ticks of the pause
    stay skipped, also for a ``missed="latest"`` entry)."""
    store = await _store(app)
    definition = await store.periodic_definition(name)
    if definition is None:
        raise _not_found(name)
    spec = _decode(name, definition)
    try:
        skip_to = Cron(spec.cron, spec.tz).latest_at_or_before(time.time())
    except AsyncJobsError:
        skip_to = None
    if not await store.periodic_pause(name, False, skip_to):
        raise _not_found(name)


async def run_periodic(app: App, name: str) -> str:
    """Enqueue one run of entry ``name`` now (also when paused); returns its jid. The
    schedule is unchanged."""
    store = await _store(app)
    definition = await store.periodic_definition(name)
    if definition is None:
        raise _not_found(name)
    spec = _decode(name, definition)
    now = time.time()
    payload = spec.payload(now)
    result = await store.periodic_enqueue(
        name,
        int(now),
        spec.queue,
        ENCODER.encode(payload),
        payload.jid,
        now,
        history=spec.history,
        mode="now",
    )
    if result in (REMOVED, LOST):
        raise _not_found(name)
    assert result == ENQUEUED
    return payload.jid


async def remove_periodic(app: App, name: str, *names: str) -> None:
    """Remove the entries named, with their state and history, in one transaction: no
    worker enqueues them any more, also one running code that declares them (until a
    worker with that code starts, and writes them again). An unknown name raises
    ``PeriodicNotFound`` and nothing is removed."""
    store = await _store(app)
    _, unknown = await store.periodic_remove(list(dict.fromkeys((name, *names))), time.time())
    if unknown:
        raise _not_found(*unknown, nothing_removed=bool(names))


async def clear_periodic(app: App) -> list[str]:
    """Remove every periodic entry, as ``remove_periodic`` does each; returns their names
    (none: an empty list). The way to stop the entries of an app that declares none any
    more: its workers write no schedule, so they delete none."""
    removed, _ = await (await _store(app)).periodic_remove(None, time.time())
    return removed


def _not_found(*names: str, nothing_removed: bool = False) -> PeriodicNotFound:
    which = f"entry {names[0]!r}" if len(names) == 1 else f"entries {', '.join(map(repr, names))}"
    return PeriodicNotFound(
        f"no periodic {which} (asyncjobs periodic list shows them; a worker writes the "
        "entries of its app at start)" + ("; nothing removed" if nothing_removed else "")
    )
