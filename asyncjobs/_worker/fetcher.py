"""The fetcher: takes jobs for one capsule, as many as it has free slots, in one trip.

The fetch script moves jobs from their queues into this process's in-flight hash in one
atomic step (invariant 1). When every queue is empty the fetcher blocks in ``BRPOP`` on
the queues' *wake lists*, which hold hints, never jobs: what ``BRPOP`` takes out of Redis
is only a hint, so a crash there loses nothing, and an idle worker starts a new job
within about one round trip of its enqueue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio

from .._conn import FastRedis
from .._payload import DECODE_ERRORS, DECODER, inflight_field
from .._redis import Conn, mask_url, transient
from .backoff import Backoff, after_failure
from .capsule import Capsule
from .decisions import fetch_request, lane_cap
from .health import Health, failed

if TYPE_CHECKING:
    from .._store import Store

log = logging.getLogger("asyncjobs.fetcher")

# BRPOP wakes at least this often even without a hint: a safety net for a hint lost to
# a connection cut, and the bound on how stale a wake-list view can get.
IDLE_POLL = 2.0

# Concurrent fetches per capsule (see Fetcher.run).
LANES = 2

# The self-check (Fetcher.self_check) looks for stranded jobs this often. A field must be
# unknown to the process at two checks in a row before it counts as stranded: one interval
# is the grace that covers a fetch whose reply is still on its way (FastRedis gives up on a
# reply after 10 s, plus IDLE_POLL for a blocking call, and then the fetcher reconciles).
SELF_CHECK = 15.0


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a land reply's exception retrieved (the acker looks at it when it acks)."""
    if not fut.cancelled():
        fut.exception()


class Fetcher:
    def __init__(
        self,
        capsule: Capsule,
        store: Store,
        client: Conn,
        inflight_key: str,
        landing_key: str,
        *,
        health: Health | None = None,
    ) -> None:
        self.capsule = capsule
        self.store = store
        self.client = client  # its own connection (store.connection()): it blocks
        self.health = health
        keys = store.keys
        names = capsule.order.names
        self._inflight = inflight_key
        self._landing = landing_key
        # A one-queue capsule on a single server waits in BLMOVE on the queue itself:
        # the job moves into our landing list atomically and starts within one round
        # trip of its enqueue. Several queues cannot be waited on that way (no
        # multi-key BLMOVE), so they wait for a wake hint and then fetch.
        self._blmove = (
            len(names) == 1
            and isinstance(client, FastRedis)
            and isinstance(capsule.acker.client, FastRedis)
        )
        self._queue_keys = [keys.queue(n) for n in names]
        self._wake_keys = [keys.wake(n) for n in names]
        self.fetches = 0
        self.quiet = False
        self._scope: anyio.CancelScope | None = None
        self._reconcile = False
        self.reconciled = 0
        self.lanes = LANES
        self._reserved = 0  # slots asked for by fetches on their way
        self.fetching = 0  # fetches on their way
        self._settled = asyncio.Event()  # none is
        self._settled.set()
        self._empty = False  # the last fetch of the first lane found nothing
        # The last BLMOVE pickup found its queue empty behind the job: the first lane
        # blocks again without a fetch, the other lanes stay at rest (_picked_up).
        self._trickle = False
        self._down = False  # Redis is unreachable
        self._resume = asyncio.Event()  # neither: the other lanes may fetch
        self._resume.set()
        self._backoff = Backoff()
        self.self_check_interval = SELF_CHECK
        self._suspects: set[bytes] = set()  # unknown in-flight fields at the last check
        self._checking = asyncio.Lock()  # a reconcile and a self-check never overlap
        self.stranded = 0

    def stop(self) -> None:
        """Quiet: take no more jobs. A blocked ``BRPOP`` is abandoned."""
        self.quiet = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """Fetch until quiet. Two lanes share the capsule's room, each asking for at
        most half of it, so the next fetch is already on its way while the jobs of the
        last one run: Redis and the event loop work at the same time instead of in
        turn. Only the first lane waits for work when the queues are empty (a blocking
        call holds its connection), and only while no other fetch is outstanding."""
        with anyio.CancelScope() as self._scope:
            async with anyio.create_task_group() as tg:
                for lane in range(1, self.lanes):
                    tg.start_soon(self._lane, lane)
                tg.start_soon(self._self_check_loop)
                await self._first_lane()
                tg.cancel_scope.cancel()

    async def _first_lane(self) -> None:
        """The first lane, which also reports Redis going away and coming back."""
        capsule = self.capsule
        while not self.quiet:
            try:
                await self._lane(0)
            except Exception as exc:
                # A fetch whose reply was lost may have moved jobs into our in-flight
                # hash all the same: look for them once Redis answers again.
                self._reconcile = True
                name, store = f"fetcher {capsule.name}", self.store
                if not await failed(self.health, name, exc, log, store):
                    await anyio.sleep(self._backoff.next())  # a bug: logged at ERROR
                    continue
                await after_failure(store, exc, self.client)
                if not self._down:
                    log.warning(
                        "capsule %s: cannot reach Redis at %s (%s); backing off",
                        capsule.name,
                        mask_url(store.url),
                        exc,
                    )
                    self._set(down=True)
                await anyio.sleep(self._backoff.next())

    async def _lane(self, lane: int) -> None:
        capsule = self.capsule
        cap = lane_cap(capsule.concurrency, capsule.prefetch, self.lanes)
        while not self.quiet:
            n = fetch_request(capsule.free, self._reserved, cap)
            if n == 0:
                await capsule.wait_free(lambda: self._reserved)
                continue
            if lane and (self._empty or self._down):
                await self._resume.wait()  # the first lane finds work (or Redis) again
                continue
            isolation = capsule.isolation
            if isolation is not None and isolation.blocking:
                await isolation.wait_clear()  # a suspect runs alone: fetch nothing
                continue
            if self._reconcile and not lane:
                # No other fetch may be on its way: its jobs would look orphaned.
                self._set(empty=True)
                await self.settled()
                await self.reconcile()
                continue
            if self._trickle and not lane:
                # The last pickup found the queue empty: block for the next job now.
                self._trickle = False
                await self._wait_for_hint()
                if not self._trickle:
                    self._set(empty=False)
                continue
            try:
                with self._outstanding(n):
                    got = await self.fetch(n)
            except Exception as exc:
                if not lane:
                    raise
                if not transient(exc):  # a bug: logged at ERROR; this lane rests as below
                    (self.health or Health()).mark(f"fetcher {capsule.name}", exc, log)
                # The first lane meets the same error, reports it, backs off and
                # reconciles; this lane rests until that lane fetches again.
                self._reconcile = True
                self._set(empty=True)
                continue
            if self.health is not None and not lane:
                self.health.ok(f"fetcher {capsule.name}")
            if self._down and not lane:
                log.info("capsule %s: Redis is back; fetching again", capsule.name)
                self._set(down=False)
                self._backoff.reset()
            if got:
                if self._empty:
                    self._set(empty=False)
            elif lane:
                # Nothing there: rest until the first lane finds work. Fetching again at
                # once would poll Redis without end, and, holding a reservation nearly
                # all the time, keep the first lane (the only one that blocks for work)
                # waiting for room it never sees.
                self._set(empty=True)
            else:
                self._set(empty=True)  # the other lanes stop sending
                await self.settled()
                if self._empty:  # no other lane found work meanwhile
                    await self._wait_for_hint()
                    if not self._trickle:
                        self._set(empty=False)

    @contextlib.contextmanager
    def _outstanding(self, n: int) -> Iterator[None]:
        """A fetch of up to ``n`` jobs on its way: its slots are reserved, and
        :meth:`settled` waits for it; the capsule is poked when it is back."""
        self._reserved += n
        self.fetching += 1
        self._settled.clear()
        try:
            yield
        finally:
            self._reserved -= n
            self.fetching -= 1
            if not self.fetching:
                self._settled.set()
            self.capsule.poke()

    async def settled(self) -> None:
        """Wait until no fetch is on its way."""
        await self._settled.wait()

    def _set(self, *, empty: bool | None = None, down: bool | None = None) -> None:
        if empty is not None:
            self._empty = empty
        if down is not None:
            self._down = down
        if self._empty or self._down:
            self._resume.clear()
        else:
            self._resume.set()

    async def fetch(self, slots: int) -> int:
        """Fetch up to ``slots`` jobs and start them; returns how many."""
        order, counts = self.capsule.order.draw(slots)
        if self.capsule.paused:
            order, counts = self._unpaused(order, counts)
            if not order:
                return 0
        qk, wk = self._queue_keys, self._wake_keys
        keys = [self._inflight, *(qk[i] for i in order), *(wk[i] for i in order)]
        # Shielded: once the script has moved jobs into the in-flight hash we must
        # receive them, or they would sit there with no task until shutdown.
        with anyio.CancelScope(shield=True):
            pairs = await self.store.fetch(keys, counts, conn=self.client)
        self.fetches += 1
        if pairs:
            self.capsule.start(pairs)
        return len(pairs) // 2

    def _unpaused(self, order: list[int], counts: list[int]) -> tuple[list[int], list[int]]:
        """A fetch plan without the paused queues: their slots go to the first queue
        left (the script fills slots of empty queues from the others anyway)."""
        paused, names = self.capsule.paused, self.capsule.order.names
        keep = [j for j, i in enumerate(order) if names[i] not in paused]
        if not keep:
            return [], []
        new_counts = [counts[j] for j in keep]
        new_counts[0] += sum(counts) - sum(new_counts)
        return [order[j] for j in keep], new_counts

    async def _wait_resumed(self) -> None:
        """Every queue of the capsule is paused: wait until one is resumed (seen by the
        heartbeat) or IDLE_POLL passes."""
        with anyio.move_on_after(IDLE_POLL):
            await self.capsule.resumed.wait()

    async def reconcile(self) -> None:
        """Start this capsule's jobs that sit in our in-flight hash with nothing running
        them (their fetch reply was lost to a connection cut). Jobs finished but not yet
        acknowledged, or held for isolation, are left alone."""
        async with self._checking:
            await self._reconcile_now()

    async def _reconcile_now(self) -> None:
        capsule = self.capsule
        store = self.store
        await store.land(self._landing, self._inflight)

        def known_now() -> set[bytes]:
            known = set(capsule.running) | capsule.acker.pending_fields()
            known |= {f for f, _ in capsule.ready}
            known |= {f for f, _ in capsule.held}
            if capsule.isolation is not None:
                known |= {f for _, f, _ in capsule.isolation.pending}
            return known

        # Taken before the read too: a job running now may finish and be acknowledged
        # while the read is in flight, and must not look like an orphan.
        before = known_now()
        entries = await store.read_inflight(self._inflight)
        known = before | known_now()
        names = set(capsule.order.names)
        orphans: list[bytes] = []
        for field, raw in entries.items():
            if field in known:
                continue
            try:
                queue = DECODER.decode(raw).queue
            except DECODE_ERRORS:
                queue = capsule.order.names[0]
            if queue in names:
                orphans.extend((field, raw))
        self._reconcile = False
        if orphans:
            log.warning(
                "capsule %s: %d jobs fetched during a connection cut are started now",
                capsule.name,
                len(orphans) // 2,
            )
            self.reconciled += len(orphans) // 2
            capsule.start(orphans)

    def _known(self) -> set[bytes]:
        """Every in-flight field this process knows it holds, in all its capsules: running,
        prefetched, held for isolation, landing, or with an outcome not yet confirmed."""
        capsule = self.capsule
        isolation = capsule.isolation
        others = isolation.capsules if isolation is not None else []
        capsules = [c for c in others if isinstance(c, Capsule)] or [capsule]
        known = capsule.acker.pending_fields() | capsule.acker.landing_fields()
        for c in capsules:
            known.update(c.running)
            known.update(f for f, _ in c.ready)
            known.update(f for f, _ in c.held)
        if isolation is not None:
            known.update(f for _, f, _ in isolation.pending)
        return known

    async def _self_check_loop(self) -> None:
        while not self.quiet:
            await anyio.sleep(self.self_check_interval)
            if self._down or self._reconcile or self.quiet:
                continue  # the reconcile after the outage looks for them
            try:
                await self.self_check()
            except Exception as exc:
                if not transient(exc):
                    raise
                await after_failure(self.store, exc)
                log.debug("capsule %s: self-check failed: %s", self.capsule.name, exc)

    async def self_check(self) -> int:
        """Start this capsule's jobs stranded in our in-flight hash or landing list: a
        fetch or ``BLMOVE`` that Redis ran after the reconcile of a connection cut (a
        late retransmission) leaves jobs there that no task runs, and no reaper touches
        a live process. One round trip when nothing is stranded (``HKEYS``, ``LLEN``); a
        field counts as stranded when it was unknown here at the last check too.
        Returns how many jobs were started."""
        capsule = self.capsule
        store = self.store
        async with self._checking:
            before = self._known()
            fields, landing = await store.inflight_census(self._inflight, self._landing)
            if landing:
                # Usually a job an idle fetcher took a moment ago, about to land; landing
                # everything is harmless then (its own land finds nothing left to move).
                await store.land(self._landing, self._inflight)
                fields = await store.inflight_fields(self._inflight)
            known = before | self._known()
            unknown = {f for f in fields if f not in known}
            stranded = [f for f in unknown if f in self._suspects]
            self._suspects = unknown - set(stranded)
            if not stranded:
                return 0
            raws = await store.inflight_get(self._inflight, stranded)
            known = self._known()
            names = set(capsule.order.names)
            pairs: list[bytes] = []
            for field, raw in zip(stranded, raws, strict=True):
                if raw is None or field in known:
                    continue  # acknowledged, or given back, meanwhile
                try:
                    queue = DECODER.decode(raw).queue
                except DECODE_ERRORS:
                    queue = capsule.order.names[0]
                if queue in names:
                    pairs.extend((field, raw))
            if not pairs or self.quiet:
                return 0  # another capsule's, or shutdown puts them back
            log.warning(
                "capsule %s: %d jobs stranded in this process's in-flight hash are started "
                "now (a fetch Redis ran after the reconcile of a connection cut)",
                capsule.name,
                len(pairs) // 2,
            )
            self.stranded += len(pairs) // 2
            capsule.start(pairs)
            return len(pairs) // 2

    async def _picked_up(self, raw: bytes) -> None:
        """Start a job BLMOVE took, and land it in the in-flight hash. The land
        (pickup.lua) also takes more jobs from the queue if there is room and the queue
        is not paused (the heartbeat may have seen a pause while BLMOVE waited). When it
        finds none, the queue is trickling: the first lane goes back to BLMOVE at once,
        with no fetch in between that would find the queue empty. Two exchanges per job
        fewer: this lane's fetch, and the other lane's, which stays at rest."""
        capsule, store = self.capsule, self.store
        assert isinstance(self.client, FastRedis)
        field = inflight_field(raw)
        capsule.start([field, raw])
        self.fetches += 1
        isolation = capsule.isolation
        more = 0
        if not capsule.paused and (isolation is None or not isolation.blocking):
            cap = lane_cap(capsule.concurrency, capsule.prefetch, self.lanes)
            more = fetch_request(capsule.free, self._reserved, cap)
        # Into the in-flight hash, written now on this (connected) connection; the
        # job's ack waits for it (Acker.landing), without delaying the job.
        if more:
            keys = (self._landing, self._inflight, self._queue_keys[0], self._wake_keys[0])
            sent = store.pickup_nowait(keys, field, raw, more, conn=self.client)
        else:
            sent = store.land_nowait(self._landing, self._inflight, field, raw, conn=self.client)
        if sent is not None:
            sent.add_done_callback(_consume)
        capsule.acker.landing(field, self._landing, sent)
        if not more or sent is None:
            await asyncio.sleep(0)  # let the job's runner go first
            return
        # Shielded: jobs the script moved into the in-flight hash must be received.
        with self._outstanding(more), anyio.CancelScope(shield=True):
            # Let the job's runner go first: the reply can wait a loop turn, the job
            # (which somebody may be waiting for) should not.
            await asyncio.sleep(0)
            pairs = await store.picked(sent)
        if pairs:
            capsule.start(pairs)
        else:
            self._trickle = True

    async def _wait_for_hint(self) -> None:
        # A failover ends a blocked call with UNBLOCKED: the store raises it as
        # RedisUnavailable, an outage the first lane backs off from like any other.
        store = self.store
        if self.capsule.paused:
            order, _ = self._unpaused(*self.capsule.order.draw(0))
            if not order:
                await self._wait_resumed()
                return
            wake = [self._wake_keys[i] for i in order]
            await store.wait_wake(wake, IDLE_POLL, conn=self.client)
            return
        if self._blmove:
            assert isinstance(self.client, FastRedis)
            raw = await store.blmove(
                self._queue_keys[0], self._landing, IDLE_POLL, conn=self.client
            )
            if raw is not None:
                await self._picked_up(raw)
            return
        order, _ = self.capsule.order.draw(0)
        await store.wait_wake([self._wake_keys[i] for i in order], IDLE_POLL, conn=self.client)
