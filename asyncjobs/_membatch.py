"""Batches in the test modes of :mod:`asyncjobs.testing` (#14): an in-memory stand-in
for the batch bookkeeping that Redis does, used only while a test mode is active.

It counts as the scripts do, rule for rule, so that a test without Redis sees the
callbacks a worker would push, in the same order:

- ``batch.lua``: open (a child counted in its parent), open once (nothing if the batch
  exists), reopen, close, and the gate of ``configure(after=...)``;
- ``batch_lib.lua``: ``bcheck`` (complete, success, each once; nothing while a block
  holds the batch open; a child's event counted in its parent) and ``bdeath``;
- the batch block of ``ack.lua``: a batch job's outcome (``done`` is a success;
  ``retry``, ``dead`` and ``drop`` are failures; ``dead`` is a death too);
- the after block of ``result.lua``: a tracked job's outcome counted in the gates that
  wait for it.

A callback is not run here: its payload, as stored when the batch was made, is handed
to ``deliver`` (the mode's: capture records it, inline runs it) once the step that
fired it is over, as the script pushes it and a worker runs it later. The tests in
``tests/integration/test_testing.py`` run the same scenarios against Redis and a worker.
Nothing expires: a test mode lasts one ``with`` block.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["MemoryBatches"]


class _Batch:
    """One batch: the fields of ``{ns}:batch:<bid>`` and its failed set."""

    __slots__ = (
        "complete_at",
        "death_at",
        "failed",
        "fields",
        "holds",
        "kids",
        "kidss",
        "parent",
        "pending",
        "success_at",
        "total",
    )

    def __init__(self, parent: str | None, holds: int) -> None:
        self.holds = holds
        self.total = 0
        self.pending = 0
        self.kids = 0  # child batches not complete
        self.kidss = 0  # child batches not succeeded
        self.parent = parent
        self.complete_at: str | None = None
        self.success_at: str | None = None
        self.death_at: str | None = None
        # desc, created_at, cb:<event> (a callback's payload), cbq:<event>.
        self.fields: dict[str, bytes] = {}
        self.failed: set[str] = set()


def _now() -> str:
    return repr(time.time())


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


class MemoryBatches:
    """The store's batch operations (``asyncjobs._batching.BatchStore``), in memory,
    plus what a worker's acknowledgement and a tracked job's outcome count.

    Args:
        deliver: called with the payloads of the callbacks an operation fired, in the
            order the scripts push them, once the operation is done.
    """

    # The test modes make no retries, and inline raises a job's own failure out of
    # ``defer`` (it ran): a chain step's block that raised closes, as any block.
    batch_reruns = False

    def __init__(self, deliver: Callable[[list[bytes]], Awaitable[None]]) -> None:
        self._deliver = deliver
        self._batches: dict[str, _Batch] = {}
        # Tracked jobs (keep_result, track_status): those deferred (a status), those
        # ended (their outcome's state), and the gates waiting for each.
        self._tracked: set[str] = set()
        self._ended: dict[str, str] = {}
        self._gates: dict[str, list[str]] = {}
        self._fired: list[bytes] = []

    # -- the store's batch operations (batch.lua) ----------------------------------------

    async def batch_open(self, bid: str, parent: str | None, fields: Sequence[Any]) -> bool:
        b = _Batch(parent or None, holds=1)
        for i in range(0, len(fields), 2):
            b.fields[str(fields[i])] = _bytes(fields[i + 1])
        if parent:
            p = self._batches.get(parent)
            if p is None:
                return False
            p.kids += 1
            p.kidss += 1
            # listed in its parent, as batch.lua does (kid:<bid> = its created_at)
            p.fields[f"kid:{bid}"] = b.fields.get("created_at", b"%f" % time.time())
        self._batches[bid] = b
        return True

    async def batch_open_once(self, bid: str, parent: str | None, fields: Sequence[Any]) -> int:
        b = self._batches.get(bid)
        if b is not None:
            return 3 if b.holds > 0 else 2
        return 1 if await self.batch_open(bid, parent, fields) else 0

    async def batch_reopen(self, bid: str, *, member: bool) -> int:
        b = self._batches.get(bid)
        if b is None:
            return 0
        if not member and b.complete_at is not None:
            return -1
        b.holds += 1
        return 1

    async def batch_close(self, bid: str, added: int) -> bool:
        b = self._batches.get(bid)
        if b is None:
            return False
        if added > 0:
            b.total += added
            b.pending += added
        b.holds -= 1
        self._check(bid)
        await self.flush()
        return True

    async def batch_after(
        self, gate: str, payload: bytes, queue: str, desc: str, jids: Sequence[str]
    ) -> str | None:
        for jid in jids:
            if jid not in self._tracked and jid not in self._ended:
                return jid
        b = _Batch(None, holds=0)
        b.total = b.pending = len(jids)
        b.fields.update(
            {
                "desc": desc.encode(),
                "created_at": _now().encode(),
                "cb:success": payload,
                "cbq:success": queue.encode(),
            }
        )
        self._batches[gate] = b
        for jid in jids:
            state = self._ended.get(jid)
            if state is None:
                self._gates.setdefault(jid, []).append(gate)
            elif state == "succeeded":
                b.pending -= 1
            else:  # an outcome already stored counts as a failure, not a death
                b.failed.add(jid)
        self._check(gate)
        await self.flush()
        return None

    async def batch_read(self, bid: str) -> tuple[dict[bytes, bytes], list[bytes]]:
        b = self._batches.get(bid)
        if b is None:
            return {}, []
        fields = dict(b.fields)
        fields.update(
            holds=b"%d" % b.holds,
            total=b"%d" % b.total,
            pending=b"%d" % b.pending,
            kids=b"%d" % b.kids,
            kidss=b"%d" % b.kidss,
        )
        for name in ("parent", "complete_at", "success_at", "death_at"):
            value = getattr(b, name)
            if value is not None:
                fields[name] = value.encode()
        return {k.encode(): v for k, v in fields.items()}, [j.encode() for j in b.failed]

    # -- what a worker's acknowledgement and a tracked job's outcome count ---------------

    def deferred(self, jid: str) -> None:
        """A tracked job was deferred: it has a status, so ``after=`` can wait for it."""
        self._tracked.add(jid)

    def ended(self, jid: str, state: str) -> None:
        """A tracked job's outcome (``result.lua``): succeeded, failed, dead or
        cancelled; counted in the gates waiting for it."""
        self._ended[jid] = state
        for gate in self._gates.pop(jid, ()):
            b = self._batches.get(gate)
            if b is None:
                continue
            if state == "succeeded":
                b.pending -= 1
            else:
                b.failed.add(jid)
                if state == "dead":
                    self._death(gate)
            self._check(gate)

    def acked(self, jid: str, bid: str, outcome: str) -> None:
        """A batch job's outcome, as the worker acknowledges it (``ack.lua``): ``done``,
        or the failure's move, ``retry``, ``dead`` or ``drop``."""
        b = self._batches.get(bid)
        if b is None or outcome == "schedule":
            return
        if outcome == "done":
            b.failed.discard(jid)  # a retry that succeeded leaves the failures
            b.pending -= 1
        else:
            b.failed.add(jid)
            if outcome == "dead":
                self._death(bid)
        self._check(bid)

    async def flush(self) -> None:
        """Hand the callbacks fired so far to the mode, in the order they fired."""
        while self._fired:
            fired, self._fired = self._fired, []
            await self._deliver(fired)

    # -- batch_lib.lua -------------------------------------------------------------------

    def _fire(self, b: _Batch, event: str) -> None:
        payload = b.fields.get(f"cb:{event}")
        if payload is not None and f"cbq:{event}" in b.fields:
            self._fired.append(payload)

    def _death(self, bid: str) -> None:
        """bdeath: the death callback, once; the parent learns of it too."""
        b = self._batches.get(bid)
        if b is None or b.death_at is not None:
            return
        b.death_at = _now()
        self._fire(b, "death")
        if b.parent is not None:
            self._death(b.parent)

    def _check(self, bid: str) -> None:
        """bcheck: complete when every job ran once and every child completed; success
        when every job and child succeeded; nothing while a block holds it open. The
        counters are read once, before either event (as the script does)."""
        b = self._batches.get(bid)
        if b is None or b.holds > 0:
            return
        pending, kids, kidss = b.pending, b.kids, b.kidss
        complete_at, success_at, parent = b.complete_at, b.success_at, b.parent
        if complete_at is None and kids <= 0 and pending <= len(b.failed):
            b.complete_at = _now()
            self._fire(b, "complete")
            if parent is not None and parent in self._batches:
                self._batches[parent].kids -= 1
                self._check(parent)
        if success_at is None and kids <= 0 and kidss <= 0 and pending <= 0:
            b.success_at = _now()
            self._fire(b, "success")
            if parent is not None and parent in self._batches:
                self._batches[parent].kidss -= 1
                self._check(parent)
