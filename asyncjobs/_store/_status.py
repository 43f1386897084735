"""Status, results, progress and cancellation: the store's reads and writes (#14).

Only tracked jobs (``keep_result=`` or ``track_status=True``) reach the status and
result methods; cancellation reaches the in-flight hashes, queues and sets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster

from .._batch import BATCH_TTL
from .._redis import STORE_ERRORS, Conn
from ._admin import Admin
from ._base import mapped

__all__ = ["StatusOps"]

# redis-py's socket timeout is 10 s (_redis.REPLY_TIMEOUT): a blocking call through it
# waits at most this long at a time, then blocks again.
BLOCK_STEP = 5.0
# How long an unread cancel request waits for its process (which reads it at once if
# it is alive).
CANCEL_TTL = 60


class StatusOps(Admin):
    """Tracked jobs' status, results and progress; the cancel channel."""

    @mapped
    async def set_status(
        self, jid: str, data: bytes, ttl: float, *, only_new: bool = False
    ) -> None:
        """Write a tracked job's state (``only_new``: unless one is there already, as a
        worker that started the job before the client wrote ``queued``). On the lean
        pipelined connection where there is one: a worker writes one per tracked job."""
        key, ms = self.keys.status(jid), int(ttl * 1000)
        if self.fast is not None:
            await self.fast.execute("SET", key, data, "PX", ms, *(("NX",) if only_new else ()))
            return
        await self.client.set(key, data, px=ms, nx=only_new)

    @mapped
    async def set_statuses(self, entries: Sequence[tuple[str, bytes]], ttl: float) -> None:
        """``set_status(only_new=True)`` for many jobs, in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            for jid, data in entries:
                pipe.set(self.keys.status(jid), data, px=int(ttl * 1000), nx=True)
            await pipe.execute()

    @mapped
    async def save_result(self, jid: str, data: bytes, ttl: float) -> None:
        """Store a tracked job's outcome and wake its waiters (result.lua)."""
        k = self.keys
        keys = [k.result(jid), k.result_ready(jid), k.status(jid), k.progress(jid)]
        args: list[Any] = [data, max(1, int(ttl * 1000))]
        # configure(after=...) (#14): the gates waiting for this job learn its outcome.
        # Like the status and result keys, and the batches, they live on shard 0 (home).
        home = k.home.prefix
        keys.append(f"{home}:after:{jid}")
        args += [f"{home}:", BATCH_TTL]
        conn = self.fast or self.client  # one call per tracked job: the lean connection
        try:
            await self.scripts.result(conn, keys, args)
        except STORE_ERRORS as exc:
            await self._script_again(exc, self.scripts.result, keys, args, conn)

    @mapped
    async def set_progress(self, jid: str, data: bytes, ttl: float) -> None:
        key, ms = self.keys.progress(jid), int(ttl * 1000)
        if self.fast is not None:
            await self.fast.execute("SET", key, data, "PX", ms)
            return
        await self.client.set(key, data, px=ms)

    @mapped
    async def read_status(self, jid: str) -> tuple[bytes | None, bytes | None, bytes | None]:
        """A job's state, outcome and progress: one round trip."""
        k = self.keys
        client = self.client
        if isinstance(client, RedisCluster):  # its pipeline refuses MGET across nodes
            async with client.pipeline() as pipe:
                pipe.get(k.status(jid))
                pipe.get(k.result(jid))
                pipe.get(k.progress(jid))
                res: list[Any] = await pipe.execute()
        else:
            res = await client.mget([k.status(jid), k.result(jid), k.progress(jid)])
        return res[0], res[1], res[2]

    @mapped
    async def read_result(self, jid: str) -> bytes | None:
        raw: Any = await self.client.get(self.keys.result(jid))
        return None if raw is None else bytes(raw)

    async def wait_result(self, jid: str, timeout: float | None) -> bytes | None:
        """Block until the job's outcome is stored (or ``timeout`` seconds, None: no
        limit): BLMOVE on its ready list onto itself, which leaves the signal for every
        other waiter. No polling: a wait is one blocking call per ``BLOCK_STEP``."""
        k = self.keys
        ready = k.result_ready(jid)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            raw = await self.read_result(jid)
            if raw is not None:
                return raw
            left = BLOCK_STEP if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            await self._block_ready(ready, min(left, BLOCK_STEP))

    @mapped
    async def _block_ready(self, ready: str, timeout: float) -> None:
        # A float timeout: Redis takes one (6.0+); redis-py's hint says int.
        await self.client.blmove(ready, ready, timeout, "RIGHT", "LEFT")  # type: ignore[arg-type]

    # -- cancellation ----------------------------------------------------------------

    @mapped
    async def running_on(self, jid: str) -> str | None:
        """The process whose in-flight hash holds ``jid``, or None: one round trip for
        the process list, one for an HEXISTS on each in-flight hash."""
        client = self.client
        k = self.keys
        ids = [
            m.decode() if isinstance(m, bytes) else m for m in await client.smembers(k.processes)
        ]
        if not ids:
            return None
        async with client.pipeline(transaction=False) as pipe:
            for pid in ids:
                pipe.hexists(k.inflight(pid), jid)
            found: list[Any] = await pipe.execute()
        for pid, yes in zip(ids, found, strict=True):
            if yes:
                return str(pid)
        return None

    @mapped
    async def send_cancel(self, process_id: str, jid: str) -> None:
        """Ask a process to cancel a job: its canceller BRPOPs this list."""
        key = self.keys.cancel(process_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, jid)
            pipe.expire(key, CANCEL_TTL)
            await pipe.execute()

    @mapped
    async def wait_cancel(self, process_id: str, timeout: float, *, conn: Conn) -> str | None:
        """Block up to ``timeout`` for a jid to cancel in this process."""
        reply: Any = await conn.brpop([self.keys.cancel(process_id)], timeout=timeout)
        if not reply:
            return None
        raw = reply[1]
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    @mapped
    async def clear_cancel(self, process_id: str) -> None:
        await self.client.delete(self.keys.cancel(process_id))

    async def remove_waiting(self, jid: str, queues: Sequence[str]) -> bytes | None:
        """Remove a job waiting in the schedule, the retry set or a queue; its payload,
        or None. A scan (as ``api.find_job``): cancelling is rare."""
        k = self.keys
        for key in (k.schedule, k.retry):
            found = await self.zset_find(key, jid)
            if found is not None and await self.zset_remove(key, found[0]):
                return found[0]
        for name in queues:
            raw = await self.queue_find(name, jid)
            if raw is not None and await self.queue_remove(name, raw):
                return raw
        return None
