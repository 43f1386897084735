"""Enqueue and the moves between sorted sets and queues (defer, promote, kill)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from .._keys import Keys
from .._payload import DECODE_ERRORS, DECODER, ENCODER
from .._redis import STORE_ERRORS, Client, Script, is_readonly
from ._base import QueuePairs, mapped
from ._durable import DurableOps

__all__ = ["Enqueue", "promote_on", "trim_dead_on"]

# Chunks keep each script call's argument list modest.
PUSH_CHUNK = 5000
SCHEDULE_CHUNK = 10000


async def trim_dead_on(
    client: Client, key: str, now: float, dead_max_jobs: int, dead_timeout: float
) -> None:
    """Keep the dead set within ``dead_max_jobs`` entries and ``dead_timeout`` of age
    (ack.lua does the same when a worker adds a failed job)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(key, "-inf", f"({now - dead_timeout!r}")
        pipe.zremrangebyrank(key, 0, -dead_max_jobs - 1)
        await pipe.execute()


async def promote_on(
    client: Client,
    script: Script,
    keys: Keys,
    zset: str,
    members: Sequence[bytes],
    now: float,
    *,
    by_hand: bool = False,
) -> int:
    """Move ``members`` of ``zset`` into their queues (as newly enqueued jobs), stamping
    ``enqueued_at``. Entries another process moved first are skipped. Returns how many
    moved. ``by_hand`` (a retry asked for through the API): the run does not count
    against the job's retries, as Sidekiq decrements ``retry_count`` there."""
    if not members:
        return 0
    pairs = QueuePairs(keys, [zset])
    args: list[Any] = []
    for m in members:
        try:
            p = DECODER.decode(m)
        except DECODE_ERRORS:
            # Garbage in a zset still moves on; the worker dead-sets it with a reason.
            queue, data = "default", m
        else:
            queue = p.queue
            count = p.retry_count
            if by_hand and count is not None:
                count -= 1
            data = ENCODER.encode(
                msgspec.structs.replace(p, enqueued_at=now, at=None, retry_count=count)
            )
        args.extend((m, data, pairs.index(queue)))
    return int(await script(client, pairs.keys, args))


class Enqueue(DurableOps):
    """Jobs into Redis: push, schedule, many at once; promote and kill."""

    # -- the hot path: defer ---------------------------------------------------------
    # One script call per job (per queue and chunk for many), the same commands and
    # round trips as before the store existed; errors are handled off the fast path.

    async def push(self, queue: str, data: bytes) -> None:
        """Enqueue one encoded job on ``queue`` now (push.lua)."""
        keys = self._queue_keys.get(queue) or self._keys_for(queue)
        if self.durable is not None:
            await self.durable_calls([(self.scripts.push, keys, (queue, data))])
            return
        fast = self.fast
        try:
            if fast is not None:
                # Straight onto the lean connection: defer's hot path, one coroutine
                # fewer than Script.__call__ (NOSCRIPT is handled below, once).
                await fast.execute(b"EVALSHA", self.scripts.push.sha, 3, *keys, queue, data)
            else:
                await self.scripts.push(self.client, keys, (queue, data))
            return
        except STORE_ERRORS as exc:
            error = exc
        await self._script_again(error, self.scripts.push, keys, (queue, data))

    async def schedule(self, queue: str, at: float, data: bytes) -> None:
        """Add one encoded job to the schedule, due at ``at`` (schedule.lua)."""
        keys = self._schedule_keys
        if self.durable is not None:
            await self.durable_calls([(self.scripts.schedule, keys, (queue, at, data))])
            return
        fast = self.fast
        try:
            if fast is not None:
                await fast.execute(b"EVALSHA", self.scripts.schedule.sha, 3, *keys, queue, at, data)
            else:
                await self.scripts.schedule(self.client, keys, (queue, at, data))
            return
        except STORE_ERRORS as exc:
            error = exc
        await self._script_again(error, self.scripts.schedule, keys, (queue, at, data))

    async def push_many(
        self, now_by_queue: dict[str, list[bytes]], scheduled: dict[str, list[Any]]
    ) -> None:
        """Enqueue encoded jobs: ``now_by_queue`` maps a queue to jobs to run now,
        ``scheduled`` to a flat list of (due time, job) pairs. One round trip on a
        single server; a call refused with ``READONLY`` is sent once more after a
        reconnect, the calls that went through are not."""
        push, schedule = self.scripts.push, self.scripts.schedule
        calls: list[tuple[Any, ...]] = [
            (push, 3, *self._keys_for(queue), queue, *datas[i : i + PUSH_CHUNK])
            for queue, datas in now_by_queue.items()
            for i in range(0, len(datas), PUSH_CHUNK)
        ]
        calls.extend(
            (schedule, 3, *self._schedule_keys, queue, *items[i : i + SCHEDULE_CHUNK])
            for queue, items in scheduled.items()
            for i in range(0, len(items), SCHEDULE_CHUNK)
        )
        if self.durable is not None:
            await self.durable_calls([(c[0], list(c[2:5]), c[5:]) for c in calls])
            return
        try:
            failed = await self._send(calls)
        except STORE_ERRORS as exc:
            self.fail(exc)
        if failed and all(is_readonly(e) for _, e in failed):
            await self.reset()
            try:
                failed = await self._send([c for c, _ in failed])
            except STORE_ERRORS as exc:
                self.fail(exc)
        if failed:
            self.fail(next((e for _, e in failed if not is_readonly(e)), failed[0][1]))

    async def _send(
        self, calls: list[tuple[Any, ...]]
    ) -> list[tuple[tuple[Any, ...], BaseException]]:
        """Send script calls; the calls that failed, with their errors (a lost
        connection raises)."""
        fast = self.fast
        client = self.client
        if fast is not None:
            # One pipelined connection: all calls are written at once, one round trip.
            results = await asyncio.gather(
                *(s(fast, args[:3], args[3:]) for s, _n, *args in calls), return_exceptions=True
            )
            return [
                (c, r) for c, r in zip(calls, results, strict=True) if isinstance(r, BaseException)
            ]
        if isinstance(client, RedisCluster):
            # redis-py's cluster pipeline refuses scripts; all our keys share one
            # slot, so the calls go one by one (one per queue and chunk).
            for i, (script, _n, *args) in enumerate(calls):
                try:
                    await script(client, args[:3], args[3:])
                except STORE_ERRORS as exc:
                    return [(c, exc) for c in calls[i:]]
            return []
        for _ in range(2):
            async with client.pipeline(transaction=False) as pipe:
                for script, *args in calls:
                    pipe.evalsha(script.sha, *args)
                results = await pipe.execute(raise_on_error=False)
            # A NOSCRIPT reply (first use on this server, or after a restart) means
            # that call pushed nothing: load the script and resend only those calls.
            missing = [
                c for c, r in zip(calls, results, strict=True) if isinstance(r, rexc.NoScriptError)
            ]
            failed: list[tuple[tuple[Any, ...], BaseException]] = [
                (c, r)
                for c, r in zip(calls, results, strict=True)
                if isinstance(r, Exception) and not isinstance(r, rexc.NoScriptError)
            ]
            if failed or not missing:
                return failed
            for script in {c[0] for c in missing}:
                await client.script_load(script.source)
            calls = missing
        return []  # pragma: no cover - a script missing right after its load

    # -- sorted sets to queues -------------------------------------------------------

    @mapped
    async def promote(
        self, zset: str, members: Sequence[bytes], now: float, *, by_hand: bool = False
    ) -> int:
        """Move ``members`` of ``zset`` to their queues now; returns how many moved
        (entries another process moved first are skipped). ``by_hand``: see
        :func:`promote_on`."""
        return await promote_on(
            self.client, self.scripts.promote, self.keys, zset, members, now, by_hand=by_hand
        )

    @mapped
    async def trim_dead(self, now: float) -> None:
        """Keep the dead set within its size and age limits."""
        await trim_dead_on(self.client, self.keys.dead, now, self.dead_max_jobs, self.dead_timeout)

    @mapped
    async def kill(self, zset: str, member: bytes, new: bytes, now: float) -> bool:
        """Move ``member`` of ``zset`` to the dead set as ``new`` (move.lua), then trim
        the dead set; False if it had left ``zset`` meanwhile."""
        [moved] = await self.kill_many(zset, [(member, new)], now, trim=True)
        return moved

    @mapped
    async def kill_many(
        self, zset: str, pairs: Sequence[tuple[bytes, bytes]], now: float, *, trim: bool
    ) -> list[bool]:
        """Move each ``member`` of ``zset`` to the dead set as its ``new`` (move.lua, one
        call); whether each moved. ``trim``: trim the dead set after (a kill-all trims
        once, at its end, as Sidekiq's does)."""
        if not pairs:
            return []
        args: list[Any] = [repr(now)]
        for member, new in pairs:
            args.extend((member, new))
        flags: list[Any] = await self.scripts.move(self.client, (zset, self.keys.dead), args)
        if trim and any(flags):
            await trim_dead_on(
                self.client, self.keys.dead, now, self.dead_max_jobs, self.dead_timeout
            )
        return [bool(f) for f in flags]
