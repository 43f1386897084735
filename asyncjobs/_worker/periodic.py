"""The periodic loop: enqueues each tick of the app's periodic entries, once.

Every process runs it; none leads. For each due tick every live process calls
periodic.lua, which sets the tick's claim key (``SET NX``, with a TTL) and pushes the
job in the same atomic step: the first call enqueues, the others find the claim and do
nothing. So a tick is enqueued once while any process lives, whichever die. The loop
sleeps until the next tick (a monotonic deadline from the wall-clock tick, checked
again against the wall clock on waking: never early), like the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .._middleware import run_client
from .._payload import ENCODER, Payload
from .._periodic import CATCH_UP, PeriodicEntry, due_ticks, start_cursor
from .._store._periodic import ENQUEUED, LOST, PAUSED, REMOVED
from .backoff import Backoff, after_failure
from .health import Health

if TYPE_CHECKING:
    from .._middleware import Chain, ClientMiddleware
    from .._store import Store

log = logging.getLogger("asyncjobs.periodic")

CLAIM_TTL_MS = int(2 * CATCH_UP * 1000)
# The last stretch before a tick, polled rather than left to a timer (see _sleep_until).
SPIN = 0.002


class Periodic:
    def __init__(
        self,
        store: Store,
        entries: Mapping[str, PeriodicEntry],
        chain: Chain[ClientMiddleware],
        *,
        health: Health | None = None,
    ) -> None:
        self.store = store
        self.entries = dict(entries)
        self.chain = chain
        self.health = health or Health()
        self.quiet = False
        self.enqueued = 0
        # The next tick each entry waits for.
        self.cursors: dict[str, float] = {}
        # Tick lateness (enqueue reply time - tick), for the benchmark and the tests.
        self.lateness: list[float] = []
        # Entries periodic.lua refused as no longer stored, logged once: the loop goes on
        # calling it for them each tick, so that an entry written again (a worker with
        # that code started) ticks again here too.
        self.removed: set[str] = set()
        self._wake = asyncio.Event()

    def quiet_down(self) -> None:
        """A quiet process enqueues nothing more; the other processes go on."""
        self.quiet = True
        self._wake.set()

    async def reconcile(self) -> None:
        """Write the entries declared in code to Redis and delete the others (worker
        start): an entry removed from the code stops everywhere, as periodic.lua
        refuses names that are not stored."""
        stale = await self.store.periodic_reconcile(
            {name: e.definition for name, e in self.entries.items()}
        )
        if stale:
            log.info("periodic entries no longer declared, deleted: %s", ", ".join(stale))

    async def start(self) -> None:
        """Place each entry's cursor; enqueue the latest missed tick where the entry's
        policy says so."""
        now = time.time()
        last = await self.store.periodic_last(list(self.entries))
        for name, entry in self.entries.items():
            self.cursors[name] = start_cursor(entry.cron, now, last[name])
            if entry.spec.missed == "latest" and last[name] is not None:
                missed = entry.cron.latest_at_or_before(now - CATCH_UP)
                if missed is not None and missed > (last[name] or 0):
                    await self.enqueue(entry, missed, mode="missed")

    async def run(self) -> None:
        backoff = Backoff()
        started = False
        while not self.quiet:
            try:
                if not started:
                    await self.start()
                    started = True
                await self._round()
                await self._sleep_until(min(self.cursors.values(), default=None))
            except Exception as exc:
                if await self.health.failed("periodic", exc, log, self.store):
                    await after_failure(self.store, exc)
                    log.debug("periodic: Redis unavailable: %s", exc)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            self.health.ok("periodic")

    async def _round(self) -> None:
        """Enqueue every due tick; move each cursor past what was done. A cursor moves
        only after its calls succeeded, so a tick whose call failed is tried again."""
        now = time.time()
        calls = []
        moves: dict[str, float] = {}
        for name, entry in self.entries.items():
            ticks, missed, cursor = due_ticks(entry.cron, self.cursors[name], now)
            if missed is not None and entry.spec.missed == "latest":
                calls.append(self.enqueue(entry, missed, mode="missed"))
            elif missed is not None:
                log.warning("periodic %s: ticks missed up to %s, skipped", name, missed)
            calls.extend(self.enqueue(entry, t) for t in ticks)
            moves[name] = cursor
        if calls:
            # Pipelined on one connection: entries due at the same second cost one
            # round trip together.
            await asyncio.gather(*calls)
        self.cursors.update(moves)

    async def enqueue(self, entry: PeriodicEntry, tick: float, *, mode: str = "tick") -> int:
        """One tick of ``entry``: through the client middleware, then periodic.lua."""
        now = time.time()
        payload = entry.spec.payload(now)
        if self.chain.entries:
            passed: list[Payload] = []

            async def collect(p: Payload) -> str | None:
                passed.append(p)
                return p.jid

            await run_client(self.chain.entries, payload, collect)
            if not passed:
                return 0  # a client middleware stopped it
            payload = passed[0]
        spec = entry.spec
        for _ in range(2):
            result = await self.store.periodic_enqueue(
                spec.name,
                int(tick),
                payload.queue,
                ENCODER.encode(payload),
                payload.jid,
                now,
                history=spec.history,
                mode=mode,
                claim_ttl_ms=CLAIM_TTL_MS,
            )
            if result != LOST:
                break
            # The schedule is gone: Redis lost its data (a restart without persistence,
            # a flush, a failover to an empty replica). Write it again and go on.
            log.warning("periodic: the schedule is gone from Redis; writing it again")
            await self.reconcile()
        if result != REMOVED:
            self.removed.discard(spec.name)
        if result == ENQUEUED:
            self.enqueued += 1
            self.lateness.append(time.time() - tick)
            log.info("periodic %s: tick %s enqueued as %s", spec.name, int(tick), payload.jid)
        elif result == PAUSED:
            log.debug("periodic %s: paused, tick %s skipped", spec.name, int(tick))
        elif result == REMOVED and spec.name not in self.removed:
            self.removed.add(spec.name)
            log.warning(
                "periodic %s: no longer in the schedule (removed by a newer deploy or by "
                "asyncjobs periodic remove): its ticks are not enqueued",
                spec.name,
            )
        return result

    async def _sleep_until(self, tick: float | None) -> None:
        """Sleep until the wall clock reaches ``tick``, never earlier. The timer runs on
        the event loop's monotonic clock and libuv rounds it to the millisecond, so it
        is set ``SPIN`` short of the tick, and the last stretch yields to the loop
        (other tasks run) until the wall clock is there: on time to a fraction of a
        millisecond, at the cost of a millisecond or two of polling per tick."""
        if tick is None:
            await self._wake.wait()
            return
        while not self.quiet:
            left = tick - time.time()
            if left <= 0:
                return
            if left <= SPIN:
                await asyncio.sleep(0)
                continue
            try:
                # At most a minute at a time: a step of the wall clock is seen then.
                await asyncio.wait_for(self._wake.wait(), min(left - SPIN, 60.0))
            except TimeoutError:
                continue
            return
