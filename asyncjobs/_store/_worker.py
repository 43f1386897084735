"""The worker's reads and writes: fetch, land, acknowledge, requeue, reap, heartbeat,
schedule polling. Each wraps the calls ``_worker/*`` sent before the store existed, one
to one: no command and no round trip was added by moving the worker onto the store.

A method that takes ``conn`` runs on that connection (a fetcher's own, the acker's
lean one); without it, on the store's lean connection or its redis-py client.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from .._batch import BATCH_TTL
from .._conn import FastRedis
from .._payload import DECODE_ERRORS, DECODER
from .._redis import Conn
from ._base import QueuePairs, StoreBase, mapped

__all__ = ["Beat", "WorkerOps"]

_PLAIN = re.compile(rb"^[A-Za-z0-9_.:\-]+$")  # a jid; anything else is sent on its own


class Beat(NamedTuple):
    """What one heartbeat read back."""

    commands: list[str]  # control commands for this process (quiet, stop)
    processes: int  # live processes
    # How many fields HSET created in the record: all of them means the record was
    # gone (expired while this process was silent, or Redis lost its data).
    created: int
    paused: frozenset[str] = frozenset()  # paused queues (api.pause_queue)


class WorkerOps(StoreBase):
    """What a worker process reads and writes."""

    # -- fetcher ---------------------------------------------------------------------

    @mapped
    async def fetch(self, keys: Sequence[str], counts: Sequence[int], *, conn: Conn) -> list[Any]:
        """fetch.lua: ``keys`` are the in-flight hash, then the queues, then their wake
        lists, in the order drawn; ``counts`` how many to take from each. Returns the
        flat list of (field, payload) pairs moved into the in-flight hash."""
        pairs: list[Any] = await self.scripts.fetch(conn, keys, counts)
        return pairs

    @mapped
    async def land(self, landing_key: str, inflight_key: str, *, conn: Conn | None = None) -> int:
        """land.lua with no pairs: move everything in a landing list into the in-flight
        hash. Returns how many moved."""
        c = conn or self.client
        return int(await self.scripts.land(c, (landing_key, inflight_key)))

    def land_nowait(
        self, landing_key: str, inflight_key: str, field: bytes, raw: bytes, *, conn: FastRedis
    ) -> asyncio.Future[Any] | None:
        """land.lua for one job, written now on ``conn`` (ordered before anything sent
        later on it); the future of its reply, None if ``conn`` is not connected. Its
        errors are redis-py's, for the acker to look at (it lands again if it failed)."""
        land = self.scripts.land
        return conn.send_nowait(b"EVAL", land.source, 2, landing_key, inflight_key, field, raw)

    def pickup_nowait(
        self,
        keys: tuple[str, str, str, str],
        field: bytes,
        raw: bytes,
        more: int,
        *,
        conn: FastRedis,
    ) -> asyncio.Future[Any] | None:
        """pickup.lua, written now on ``conn``: land one job taken with BLMOVE and take
        up to ``more`` jobs from its queue into the in-flight hash. ``keys``: the landing
        list, the in-flight hash, the queue and its wake list. The future of its reply
        (read it with :meth:`picked`), None if ``conn`` is not connected; as for
        :meth:`land_nowait`, the acker looks at its errors."""
        script = self.scripts.pickup
        return conn.send_nowait(b"EVAL", script.source, 4, *keys, field, raw, more)

    @mapped
    async def picked(self, sent: asyncio.Future[Any]) -> list[Any]:
        """The jobs a :meth:`pickup_nowait` took besides the one it landed: the flat
        list of (field, payload) pairs now in the in-flight hash."""
        reply: list[Any] = await sent
        return reply[1:]

    @mapped
    async def blmove(
        self, queue_key: str, landing_key: str, timeout: float, *, conn: FastRedis
    ) -> bytes | None:
        """Wait up to ``timeout`` for a job on one queue; move it to the landing list."""
        raw: bytes | None = await conn.execute(
            b"BLMOVE", queue_key, landing_key, b"RIGHT", b"LEFT", timeout, block=timeout
        )
        return raw

    @mapped
    async def wait_wake(self, wake_keys: Sequence[str], timeout: float, *, conn: Conn) -> Any:
        """BRPOP on wake lists (hints, never jobs): the reply, None on timeout."""
        return await conn.brpop(list(wake_keys), timeout=timeout)

    @mapped
    async def read_inflight(self, inflight_key: str) -> dict[bytes, bytes]:
        """An in-flight hash: field to payload."""
        entries: dict[Any, Any] = await self.client.hgetall(inflight_key)
        return entries

    @mapped
    async def inflight_fields(self, inflight_key: str) -> list[bytes]:
        """The fields (jids) of an in-flight hash."""
        fields: list[Any] = await self.client.hkeys(inflight_key)
        return fields

    @mapped
    async def inflight_census(self, inflight_key: str, landing_key: str) -> tuple[list[bytes], int]:
        """The fields of an in-flight hash and the length of a landing list, in one round
        trip (a fetcher's self-check)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hkeys(inflight_key)
            pipe.llen(landing_key)
            fields, landing = await pipe.execute()
        return fields, int(landing)

    @mapped
    async def inflight_get(self, inflight_key: str, fields: Sequence[bytes]) -> list[bytes | None]:
        """The payloads of these fields of an in-flight hash (None: not there)."""
        if not fields:
            return []
        raws: list[Any] = await self.client.hmget(inflight_key, list(fields))
        return raws

    @mapped
    async def read_landing(self, landing_key: str) -> list[bytes]:
        """The jobs in a landing list (taken by BLMOVE, not yet in the in-flight hash)."""
        raws: list[Any] = await self.client.lrange(landing_key, 0, -1)
        return raws

    # -- acker -----------------------------------------------------------------------

    @mapped
    async def done(
        self,
        inflight_key: str,
        fields: Sequence[bytes],
        *,
        day: dt.date,
        ttl: int,
        conn: Conn,
        metrics: tuple[list[str], list[Any]] | None = None,
    ) -> int:
        """done.lua: successes only, the lean script (fields as they are). Returns how
        many fields it removed (those still in flight). ``metrics``: the keys and
        arguments of ``_metrics.metrics_args``, appended."""
        k = self.keys
        keys = (inflight_key, k.stat_processed, k.stat_processed_day(day))
        if metrics is None:
            return int(await self.scripts.done(conn, keys, (ttl, *fields)))
        mkeys, margs = metrics
        return int(await self.scripts.done(conn, (*keys, *mkeys), (ttl, *fields, *margs)))

    @mapped
    async def ack(
        self,
        inflight_key: str,
        done: Sequence[bytes],
        moves: Sequence[Any],
        *,
        now: float,
        ttl: int,
        conn: Conn,
        split: tuple[Sequence[bytes], Sequence[bytes]] | None = None,
        metrics: tuple[list[str], list[Any]] | None = None,
        batch: Sequence[Any] = (),
    ) -> int:
        """ack.lua: ``done`` fields and ``moves`` (flat groups of field, target,
        score, payload); trims the dead set by the store's limits. ``split``: ``done``
        split already into jids and other fields (the acker's ``plan_ack``). ``batch``:
        flat (field, bid, outcome) triples of the batch jobs among them, counted in
        their batches by the same script (#14). Returns how many fields it removed
        (those still in flight)."""
        k = self.keys
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        keys: tuple[str, ...] = (
            inflight_key,
            k.retry,
            k.dead,
            k.stat_processed,
            k.stat_processed_day(today),
            k.stat_failed,
            k.stat_failed_day(today),
            k.schedule,
        )
        if split is None:
            plain: Sequence[bytes] = [f for f in done if _PLAIN.match(f)]
            other: Sequence[bytes] = (
                [f for f in done if not _PLAIN.match(f)] if len(plain) < len(done) else []
            )
        else:
            plain, other = split
        args = (
            b" ".join(plain),
            len(other),
            *other,
            *moves,
            self.dead_max_jobs,
            repr(now - self.dead_timeout),
            ttl,
        )
        if metrics is not None:
            keys = (*keys, *metrics[0])
            args = (*args, *metrics[1])
        if batch:  # batches (#14): ack.lua's batch block takes these off the end
            args = (*args, f"{k.prefix}:", BATCH_TTL, *batch, len(batch) // 3, "batches")
        res = await self.scripts.ack(conn, keys, args)
        return int(res[0]) + int(res[1])

    # -- launcher: shutdown, isolation give-backs ------------------------------------

    @mapped
    async def requeue(self, inflight_key: str, entries: dict[bytes, bytes]) -> int:
        """requeue.lua: these in-flight jobs (field to payload) back at the head of
        their queues. Returns how many went back (acknowledged ones do not)."""
        if not entries:
            return 0
        pairs = QueuePairs(self.keys, [inflight_key])
        args: list[Any] = []
        for field, raw in entries.items():
            try:
                queue = DECODER.decode(raw).queue
            except DECODE_ERRORS:
                queue = "default"
            args.extend((field, pairs.index(queue)))
        return int(await self.scripts.requeue(self.client, pairs.keys, args))

    # -- heartbeat -------------------------------------------------------------------

    @mapped
    async def heartbeat(self, process_id: str, record: dict[str | bytes, Any], ttl: float) -> Beat:
        """Write the process record with its TTL, take up to ten control commands,
        count live processes: one round trip."""
        k = self.keys
        key = k.process(process_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.sadd(k.processes, process_id)
            pipe.hset(key, mapping=record)  # type: ignore[arg-type]
            pipe.pexpire(key, int(ttl * 1000))
            pipe.lpop(k.control(process_id), 10)
            pipe.scard(k.processes)
            pipe.smembers(k.paused)  # read here so that fetching never pays for pauses
            res = await pipe.execute()
        commands = [c.decode() if isinstance(c, bytes) else str(c) for c in res[3] or ()]
        paused = frozenset(p.decode() if isinstance(p, bytes) else str(p) for p in res[5] or ())
        return Beat(commands, int(res[4] or 1), int(res[1]), paused)

    @mapped
    async def has_counters(self) -> bool:
        """Whether the processed counter exists (a server that kept its data kept it)."""
        return bool(await self.client.exists(self.keys.stat_processed))

    @mapped
    async def clear_process(self, process_id: str) -> None:
        """Remove a process's record and control list (a clean exit)."""
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.srem(k.processes, process_id)
            pipe.delete(k.process(process_id), k.control(process_id), k.cancel(process_id))
            await pipe.execute()

    # -- reaper ----------------------------------------------------------------------

    @mapped
    async def process_ids(self) -> list[str]:
        """Every registered process id, sorted."""
        members = await self.client.smembers(self.keys.processes)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    @mapped
    async def processes_alive(self, process_ids: Sequence[str]) -> list[bool]:
        """Whether each process's heartbeat record still exists."""
        if not process_ids:
            return []
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            for pid in process_ids:
                pipe.exists(k.process(pid))
            alive = await pipe.execute()
        return [bool(a) for a in alive]

    @mapped
    async def delete_process_record(self, process_id: str) -> None:
        """Delete a process's heartbeat record (its pid is gone: no need to wait for
        the record to expire)."""
        await self.client.delete(self.keys.process(process_id))

    @mapped
    async def reap(
        self,
        process_id: str,
        moves: Sequence[tuple[bytes, str, bytes, str]],
        now: float,
        *,
        batch_deaths: Sequence[Any] = (),
    ) -> tuple[int, list[bytes]]:
        """reap.lua: give back a dead process's jobs, each ``(field, queue, payload,
        target)`` with target ``queue`` or ``dead``. ``batch_deaths``: flat (field, bid)
        pairs of the batch jobs it moves to the dead set, counted as deaths in their
        batches (#14). Returns how many moved, -1 if the process is alive after all
        (its record came back); and the payloads it moved to the dead set that may
        hold a unique lock (they contain ``"unique":[``), for ``release_locks``."""
        k = self.keys
        inflight = k.inflight(process_id)
        pairs = QueuePairs(k, [inflight, k.process(process_id), k.processes, k.dead])
        args: list[Any] = [process_id]
        for field, queue, data, target in moves:
            args.extend((field, pairs.index(queue), data, target, repr(now)))
        if batch_deaths:  # batches (#14): reap.lua's batch block takes these off the end
            args.extend((f"{k.prefix}:", BATCH_TTL, *batch_deaths, len(batch_deaths) // 2))
            args.append("batches")
        reply: list[Any] = await self.scripts.reap(self.client, pairs.keys, args)
        return int(reply[0]), [bytes(r) for r in reply[1:]]

    # -- scheduler -------------------------------------------------------------------

    @mapped
    async def upcoming(
        self, batch: int
    ) -> tuple[list[tuple[bytes, float]], list[tuple[bytes, float]]]:
        """The earliest ``batch`` entries of the schedule and of the retry set, with
        their due times: one round trip."""
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrange(k.schedule, 0, batch - 1, withscores=True)
            pipe.zrange(k.retry, 0, batch - 1, withscores=True)
            first_s, first_r = await pipe.execute()
        return first_s, first_r

    @mapped
    async def wait_scheduler_hint(self, timeout: float, *, conn: Conn | None = None) -> bool:
        """Wait up to ``timeout`` for a hint that a sooner job was scheduled."""
        c = conn or self.client
        return bool(await c.brpop([self.keys.wake_scheduler], timeout=timeout))
