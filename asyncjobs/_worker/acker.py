"""The acker: writes the outcomes of finished jobs, coalesced, one script per batch.

Outcomes reported in the same loop tick go out together (invariant 6). A job stays in the
in-flight hash until its outcome is written, so a crash before the write leaves it to the
reaper (invariant 1). Acks are safe to repeat: the script moves only fields still there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._metrics import Recorder
from .._redis import Conn, mask_url
from .backoff import Backoff, after_failure
from .decisions import plan_ack
from .health import Health, failed
from .metrics import Outbox, Unit

if TYPE_CHECKING:
    from .._store import Store

log = logging.getLogger("asyncjobs.acker")

STATS_TTL = 5 * 365 * 86400  # per-day counters live five years, like Sidekiq's
# Seconds without an outcome after which metrics left unwritten are written alone.
METRICS_IDLE = 0.1


class Acker:
    """Collects outcomes and writes them in as few round trips as the load allows."""

    def __init__(
        self,
        store: Store,
        client: Conn,
        inflight_key: str,
        *,
        on_retry: Callable[[float], None] | None = None,
        health: Health | None = None,
        metrics_key: str | None = None,
    ) -> None:
        self.store = store
        self.health = health  # the launcher's: marks this loop unhealthy on a bug
        self.client = client
        self._inflight = inflight_key
        self._done: list[bytes] = []
        self._moves: list[Any] = []
        self._pending = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.batches = 0
        # Told the due time of retries this process scheduled, so its scheduler wakes
        # for them (a retry_in of 0.05 s must not wait for the poll interval).
        self.on_retry = on_retry
        self._soonest_retry: float | None = None
        self._landing: dict[bytes, tuple[str, asyncio.Future[Any] | None]] = {}
        # Batches whose write is on its way: still pending until Redis confirmed it (or
        # it failed and went back to _done/_moves), so a reconcile that reads the
        # in-flight hash meanwhile does not take their fields for orphans.
        self._writing: list[tuple[list[bytes], list[Any]]] = []
        # Batches (#14): field -> bid of the jobs of a batch whose outcome is pending;
        # only they take ack.lua's batch block (plain jobs never fill this).
        self._bids: dict[bytes, str] = {}
        # While not None, the fields of batches whose every field this process removed
        # itself (the heartbeat asks, to tell its own acks from jobs a reaper took).
        self.written: set[bytes] | None = None
        # App(metrics=True), with the key of this process's last metrics token: the
        # per-job metrics not yet written, sent with acknowledgements (metrics.py). The
        # executors call metrics.record() before reporting each outcome. None: off.
        self._outbox = Outbox(store, metrics_key) if metrics_key is not None else None
        self.metrics: Recorder | None = self._outbox.recorder if self._outbox else None

    # Hot path: called by every finishing job. Appending to a list and setting an event
    # once per batch is the cheapest hand-off measured.
    def done(self, field: bytes) -> None:
        self._done.append(field)
        if not self._pending.is_set():
            self._pending.set()
            self._idle.clear()

    def move(self, field: bytes, target: str, score: float, payload: bytes) -> None:
        """Record a failed job: ``target`` is ``retry``, ``dead`` or ``drop`` (or
        ``schedule``: a job over a rate limit, tried again at ``score``)."""
        self._moves.extend((field, target, repr(score), payload))
        if target in ("retry", "schedule") and (
            self._soonest_retry is None or score < self._soonest_retry
        ):
            self._soonest_retry = score
        if not self._pending.is_set():
            self._pending.set()
            self._idle.clear()

    def batch(self, field: bytes, bid: str) -> None:
        """A job of batch ``bid`` (#14): its outcome, reported next, is counted there by
        the script that writes it."""
        self._bids[field] = bid

    def _batch_args(self, done: list[bytes], moves: list[Any]) -> list[Any]:
        """(field, bid, outcome) triples for the batch jobs of a write."""
        bids = self._bids
        out: list[Any] = []
        for f in done:
            bid = bids.get(f)
            if bid is not None:
                out.extend((f, bid, "done"))
        for i in range(0, len(moves), 4):
            bid = bids.get(moves[i])
            if bid is not None:
                out.extend((moves[i], bid, moves[i + 1]))
        return out

    def landing(self, field: bytes, landing_key: str, sent: asyncio.Future[Any] | None) -> None:
        """A job an idle fetcher took with BLMOVE: ``sent`` is the reply of the land
        script the fetcher wrote on its own connection (None if it could not). Its ack
        waits for that reply, and lands everything itself if the land failed, so an
        ack never reaches Redis before the job is in the in-flight hash."""
        self._landing[field] = (landing_key, sent)

    async def _ensure_landed(self, fields: list[bytes]) -> None:
        entries = [(f, self._landing[f]) for f in fields if f in self._landing]
        if not entries:
            return
        failed: set[str] = set()
        for _, (key, sent) in entries:
            if sent is None:
                failed.add(key)
                continue
            try:
                await asyncio.shield(sent)
            except Exception:
                failed.add(key)
        for key in failed:  # land everything of that list, on this connection, first
            await self.store.land(key, self._inflight, conn=self.client)
        for f, _ in entries:
            self._landing.pop(f, None)

    def landing_fields(self) -> set[bytes]:
        """Jobs an idle fetcher took with BLMOVE whose ack has not yet checked the land."""
        return set(self._landing)

    def pending_fields(self) -> set[bytes]:
        """Fields whose outcome is known here but not yet confirmed written."""
        fields = {*self._done, *self._moves[0::4]}
        for done, moves in self._writing:
            fields.update(done, moves[0::4])
        return fields

    async def run(self) -> None:
        """Flush whenever outcomes are pending, until cancelled."""
        failures = 0  # metrics writes failed in a row (Redis away)
        while True:
            outbox = self._outbox
            if outbox is not None and outbox.pending:
                # Metrics left after the last outcome: written once idle for a moment
                # (longer and longer while Redis is away).
                idle = min(5.0, METRICS_IDLE * 2**failures)
                try:
                    await asyncio.wait_for(self._pending.wait(), idle)
                except TimeoutError:
                    ok = await self.flush_metrics(raise_errors=False)
                    failures = 0 if ok else min(failures + 1, 10)
                    continue
            else:
                await self._pending.wait()
            await self.flush()

    async def wait_flushed(self) -> None:
        await self._idle.wait()

    async def flush(self) -> None:
        """Write all pending outcomes; on a Redis outage, keep them and retry."""
        backoff: Backoff | None = None
        warned = False
        while self._done or self._moves:
            self._pending.clear()
            done, moves = self._done, self._moves
            self._done, self._moves = [], []
            metrics = self._outbox.take() if self._outbox is not None else None
            batch = (done, moves)
            self._writing.append(batch)
            try:
                removed = await self._write(done, moves, metrics)
            except BaseException as exc:
                self._writing.remove(batch)
                # Cancelled (shutdown) or failed: keep the batch, in front of anything
                # newer. Writing it again is safe (only fields still in flight move);
                # dropping it would let shutdown put finished jobs back to run twice.
                self._done[:0] = done
                self._moves[:0] = moves
                if not isinstance(exc, Exception):
                    raise
                backoff = backoff or Backoff()
                if not await failed(self.health, "acker", exc, log, self.store):
                    await asyncio.sleep(backoff.next())  # a bug: logged at ERROR
                    continue
                await after_failure(self.store, exc, self.client)
                if not warned:
                    log.warning(
                        "cannot reach Redis at %s to acknowledge %d jobs (%s); retrying",
                        mask_url(self.store.url),
                        len(done) + len(moves) // 4,
                        exc,
                    )
                    warned = True
                backoff = backoff or Backoff()
                await asyncio.sleep(backoff.next())
                continue
            self._writing.remove(batch)
            if metrics is not None and self._outbox is not None:
                self._outbox.sent()
            if self.written is not None and removed == len(done) + len(moves) // 4:
                self.written.update(done, moves[0::4])
            self.batches += 1
            if self.health is not None:
                self.health.ok("acker")
            if self._soonest_retry is not None and self.on_retry is not None:
                soonest, self._soonest_retry = self._soonest_retry, None
                self.on_retry(soonest)
            if warned:
                log.info("Redis is back; acknowledgements written")
                warned = False
        self._pending.clear()
        self._idle.set()

    async def flush_metrics(self, *, raise_errors: bool = True) -> bool:
        """Write the metrics not yet written (the worker is idle, or stops): one script
        call, without outcomes. Errors are raised, or (``raise_errors=False``) logged
        if a bug, and False is returned: the metrics stay, for the next call."""
        outbox = self._outbox
        if outbox is None:
            return True
        metrics = outbox.take(force=True)
        if metrics is None:
            return True
        try:
            await self._write([], [], metrics)
        except Exception as exc:
            if raise_errors:
                raise
            if await failed(self.health, "acker", exc, log, self.store):
                await after_failure(self.store, exc, self.client)
            return False
        outbox.sent()
        return True

    async def _write(self, done: list[bytes], moves: list[Any], metrics: Unit | None = None) -> int:
        """Write a batch (and metrics, in the same call); returns how many of its fields
        were still in flight."""
        if self._landing:
            await self._ensure_landed([*done, *moves[0::4]])
        now = time.time()
        if self._bids:  # batches (#14): ack.lua counts them in the same step
            triples = self._batch_args(done, moves)
            if triples:
                removed = await self.store.ack(
                    self._inflight,
                    done,
                    moves,
                    now=now,
                    ttl=STATS_TTL,
                    conn=self.client,
                    batch=triples,
                )
                for f in triples[0::3]:
                    self._bids.pop(f, None)
                return removed
        batch = plan_ack(done, len(moves))
        if batch.lean:
            today = dt.datetime.fromtimestamp(now, dt.UTC).date()
            return await self.store.done(
                self._inflight, done, day=today, ttl=STATS_TTL, conn=self.client, metrics=metrics
            )
        return await self.store.ack(
            self._inflight,
            done,
            moves,
            now=now,
            ttl=STATS_TTL,
            conn=self.client,
            split=(batch.plain, batch.other),
            metrics=metrics,
        )
