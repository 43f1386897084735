"""Unique jobs (Sidekiq Enterprise's ``unique_for``, sidekiq-unique-jobs): the options
and the lock key (pure).

A unique job takes a lock in Redis, ``{ns}:unique:<job>:<digest>``, atomically with its
enqueue (``push_unique.lua``). The digest covers the job's name, its queue and the
chosen arguments, canonically encoded (keys sorted), so the same call made with
positional or keyword arguments takes the same lock. The lock's value starts with the
job's jid (the token: only that job releases it) and holds its payload, so that
``on_conflict="replace"`` can remove the earlier job from its queue or the schedule.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

from ._errors import ConfigError
from ._payload import Lock

__all__ = ["UNTIL", "CONFLICT", "Unique", "lock_for", "resolve"]

UNTIL = ("success", "start", "ttl", "executing")
CONFLICT = ("skip", "raise", "replace")

_CANONICAL = msgspec.json.Encoder(order="sorted")


class Unique(msgspec.Struct, frozen=True, kw_only=True):
    """How a job is unique: ``@app.job(unique=Unique(...))`` or
    ``configure(unique=Unique(...))``; ``unique=True`` takes every default.

    Attributes:
        ttl: seconds the lock lives at most (so a lost job never holds it forever).
        until: when the lock is released: ``"success"`` (the default: held while the
            job waits, runs and retries; released when it succeeds, dies or is
            discarded), ``"start"`` (when it starts to run), ``"ttl"`` (only by its
            TTL), or ``"executing"`` (no lock at enqueue; taken while it runs, so two
            never run at once: a second one waits for the lock, see the docs).
        on_conflict: what ``defer`` does when the lock is held: ``"skip"`` (returns
            None, logs why at DEBUG), ``"raise"`` (:class:`UniqueConflict`) or
            ``"replace"`` (drops the earlier job if it has not started: debounce).
        args: the names of the arguments the lock is made of; None: all of them.
    """

    ttl: float = 3600.0
    until: Literal["success", "start", "ttl", "executing"] = "success"
    on_conflict: Literal["skip", "raise", "replace"] = "skip"
    args: tuple[str, ...] | None = None


def resolve(value: Unique | bool | None, what: str) -> Unique | None:
    """Check a ``unique=`` option; ``True`` is :class:`Unique` with its defaults."""
    if value is None or value is False:
        return None
    if value is True:
        return Unique()
    if not isinstance(value, Unique):
        raise ConfigError(f"{what}: unique= takes True or asyncjobs.Unique(...), got {value!r}")
    if (
        isinstance(value.ttl, bool)
        or not isinstance(value.ttl, int | float)
        or not (0 < value.ttl < float("inf"))
    ):
        raise ConfigError(f"{what}: Unique(ttl=...) must be seconds > 0, got {value.ttl!r}")
    if value.until not in UNTIL:
        raise ConfigError(f"{what}: Unique(until=...) is one of {', '.join(UNTIL)}")
    if value.on_conflict not in CONFLICT:
        raise ConfigError(f"{what}: Unique(on_conflict=...) is one of {', '.join(CONFLICT)}")
    names: object = value.args  # a str would pass as a sequence of one-letter names
    if names is not None and (
        isinstance(names, str)
        or not isinstance(names, tuple | list)
        or not all(isinstance(a, str) for a in names)
    ):
        raise ConfigError(f"{what}: Unique(args=...) is a tuple of argument names")
    return value


def lock_for(job: str, queue: str, raw_args: bytes, spec: Unique) -> Lock:
    """The lock a call of ``job`` on ``queue`` with these encoded arguments takes."""
    args: dict[str, Any] = msgspec.json.decode(raw_args)
    if spec.args is not None:
        args = {k: args.get(k) for k in spec.args}
    digest = hashlib.sha1(
        b"%s\0%s\0%s" % (job.encode(), queue.encode(), _CANONICAL.encode(args)),
        usedforsecurity=False,
    ).hexdigest()
    return Lock(
        key=f"{job}:{digest}",
        until=spec.until,
        ttl=float(spec.ttl),
        conflict=spec.on_conflict,
    )
