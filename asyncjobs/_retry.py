"""Retry or dead: what happens to a job that raised (pure).

Sidekiq's backoff: ``count**4 + 15 + rand(10) * (count + 1)`` seconds, with jitter.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from typing import Literal

from ._errors import AsyncJobsError

__all__ = ["Decision", "Permanent", "backoff", "decide", "format_backtrace"]

BACKTRACE_LINES = 20


class Permanent(AsyncJobsError):
    """Raise (a subclass of) this from a job to send it to the dead set without retries."""


class Decision:
    """The outcome for a failed job: retry at ``at``, dead now, or discard.

    ``hook_error`` is what ``retry_in`` raised, if it did: the caller, which knows the
    job's name and jid, logs it (the default backoff was used).
    """

    __slots__ = ("at", "hook_error", "reason", "target")

    def __init__(
        self,
        target: Literal["retry", "dead", "discard"],
        at: float,
        reason: str,
        hook_error: Exception | None = None,
    ) -> None:
        self.target = target
        self.at = at
        self.reason = reason
        self.hook_error = hook_error

    def __repr__(self) -> str:
        return f"Decision({self.target!r}, at={self.at:.3f}, reason={self.reason!r})"


def backoff(count: int, rng: random.Random) -> float:
    """Seconds before retry number ``count + 1`` (``count`` = retries done so far)."""
    return count**4 + 15 + rng.randrange(10) * (count + 1) + rng.random()


def decide(
    *,
    exc: BaseException,
    retry_count: int,
    retry: int,
    dead: bool,
    now: float,
    rng: random.Random,
    retry_in: Callable[[int, BaseException], float | int | str | None] | None = None,
    discard_on: tuple[type[BaseException], ...] = (),
    dead_on: tuple[type[BaseException], ...] = (),
    retry_for: float | None = None,
    failed_at: float | None = None,
) -> Decision:
    """Decide what to do with a job that raised ``exc``; ``retry_count`` is Sidekiq's,
    counting this failure (0 on the first). With ``retry_for`` (seconds), the job is
    retried while its first failure (``failed_at``, else ``now``) is at most that old,
    whatever the count, as Sidekiq's ``retry_for``."""
    exhausted: Literal["dead", "discard"] = "dead" if dead else "discard"
    if discard_on and isinstance(exc, discard_on):
        return Decision("discard", now, f"{type(exc).__name__} is in discard_on")
    if isinstance(exc, Permanent) or (dead_on and isinstance(exc, dead_on)):
        return Decision(exhausted, now, f"{type(exc).__name__} is permanent")
    if retry_for is not None:
        first = now if failed_at is None else failed_at
        if now - first > retry_for:
            return Decision(exhausted, now, f"retry_for exhausted ({retry_for:g}s)")
    elif retry_count >= retry:
        return Decision(exhausted, now, f"retries exhausted ({retry})")
    delay: float | None = None
    hook_error: Exception | None = None
    reason = "backoff"
    if retry_in is not None:
        try:
            answer = retry_in(retry_count, exc)
        except Exception as hook_exc:  # a broken hook must not lose the job
            answer = None
            hook_error = hook_exc
            reason = f"retry_in raised {type(hook_exc).__name__}; default backoff"
        if answer == "discard":
            return Decision("discard", now, "retry_in said discard")
        if answer == "kill":
            return Decision("dead", now, "retry_in said kill")
        # As Sidekiq: only a positive number of seconds replaces the backoff; 0, a
        # negative number, None (or anything else) means the default. Retrying at once
        # would spend the whole budget of retries in a second.
        if (
            isinstance(answer, int | float)
            and not isinstance(answer, bool)
            and 0 < answer < float("inf")
        ):
            delay = float(answer)
            reason = "retry_in"
        elif answer is not None and hook_error is None:
            reason = f"retry_in returned {answer!r}; default backoff"
    if delay is None:
        delay = backoff(retry_count, rng)
    return Decision("retry", now + delay, reason, hook_error)


def format_backtrace(
    exc: BaseException,
    limit: bool | int = BACKTRACE_LINES,
    cleaner: Callable[[list[str]], list[str]] | None = None,
) -> list[str]:
    """The traceback lines to store, as Sidekiq's ``backtrace`` option chooses them:
    ``False`` (or 0) none, ``True`` all, ``N`` the N lines nearest the error. Ruby lists
    the innermost frame first and Sidekiq keeps the first N; Python prints it last, so
    these are the last N lines (ending with the exception's own line). ``cleaner``
    (Sidekiq's ``backtrace_cleaner``) edits the lines before they are cut; what it
    raises propagates. Each line is cut at 500 characters."""
    if limit is False or (not isinstance(limit, bool) and limit <= 0):
        return []
    chunks = traceback.format_exception(type(exc), exc, exc.__traceback__)
    flat = [ln.rstrip() for chunk in chunks for ln in chunk.splitlines() if ln.strip()]
    if cleaner is not None:
        flat = list(cleaner(flat))
    if not isinstance(limit, bool):
        flat = flat[-limit:]
    return [str(ln)[:500] for ln in flat]
