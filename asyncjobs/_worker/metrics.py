"""The per-job metrics a worker has yet to write (``App(metrics=True)``).

The executors record each job's times in a :class:`~asyncjobs._metrics.Recorder`; the
acker takes them from here and sends them with an acknowledgement it writes anyway, at
most every :data:`EVERY` seconds (so the cost of building and sending the increments is
shared by hundreds of jobs in a drain, not by the few of one batch), and once more when
the worker goes idle or stops. Each set of increments carries a token, and is sent
again with the same token until a call is confirmed: the script writes a token once,
so a call whose reply was lost counts nothing twice.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .._metrics import Recorder
from .._store._metrics import metrics_args

if TYPE_CHECKING:
    from .._store import Store

__all__ = ["EVERY", "Outbox"]

# Seconds between two writes of metrics while outcomes keep coming.
EVERY = 0.1

Unit = tuple[list[str], list[Any]]


class Outbox:
    """The recorder, and the increments on their way to Redis."""

    __slots__ = ("_due", "_last_key", "_seq", "_store", "recorder", "unsent")

    def __init__(self, store: Store, last_key: str) -> None:
        self.recorder = Recorder()
        self.unsent: Unit | None = None  # taken, not yet confirmed written
        self._store = store
        self._last_key = last_key
        self._seq = 0
        self._due = 0.0

    @property
    def pending(self) -> bool:
        """Whether anything is left to write."""
        return self.unsent is not None or bool(self.recorder)

    def take(self, force: bool = False) -> Unit | None:
        """The keys and arguments to send with the next call: the unconfirmed unit, or
        a new one of everything recorded if :data:`EVERY` has passed (or ``force``);
        None when there is nothing to send yet."""
        if self.unsent is not None:
            return self.unsent
        if not self.recorder:
            return None
        now = time.monotonic()
        if not force and now < self._due:
            return None
        self._due = now + EVERY
        self._seq += 1
        self.unsent = metrics_args(
            self._store.keys, time.time(), self.recorder.take(), self._last_key, str(self._seq)
        )
        return self.unsent

    def sent(self) -> None:
        """The last unit taken is written (its call was confirmed)."""
        self.unsent = None
