"""Batches (#14): opening, reopening, closing and reading a batch. A batch job's
outcome is counted by ack.lua, with the job's acknowledgement (``WorkerOps.ack``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._batch import BATCH_TTL
from ._base import StoreBase, mapped

__all__ = ["BatchOps"]


class BatchOps(StoreBase):
    """A batch's hash ``{ns}:batch:<bid>`` and failed set, through ``batch.lua``."""

    # A job that raises runs again (a worker's retries): a chain's step whose block
    # raised leaves its batch held for the retry (``_batching._run_step``).
    batch_reruns = True

    def batch_key(self, bid: str) -> str:
        return f"{self.keys.prefix}:batch:{bid}"

    @property
    def batch_index_key(self) -> str:
        """The index of batches: a sorted set of bids by creation time (batch.lua)."""
        return f"{self.keys.prefix}:batches"

    async def _batch_call(self, bid: str, action: str, *args: Any) -> int:
        prefix = f"{self.keys.prefix}:"
        res = await self.scripts.batch(
            self.client, (self.batch_key(bid),), (prefix, BATCH_TTL, bid, action, *args)
        )
        return int(res)

    @mapped
    async def batch_open(self, bid: str, parent: str | None, fields: Sequence[Any]) -> bool:
        """Create a batch held open by one block (``fields``: flat field/value pairs);
        a child of ``parent`` if given. False if the parent is gone."""
        return await self._batch_call(bid, "open", parent or "", *fields) == 1

    @mapped
    async def batch_open_once(self, bid: str, parent: str | None, fields: Sequence[Any]) -> int:
        """``batch_open``, unless a batch ``bid`` exists already (a chain's next step,
        whose bid is derived from the step before): then nothing is written. 1 opened,
        0 the parent is gone, 2 the batch exists and is closed, 3 it exists and a block
        holds it."""
        return await self._batch_call(bid, "once", parent or "", *fields)

    @mapped
    async def batch_reopen(self, bid: str, *, member: bool) -> int:
        """Hold a batch open again to add jobs (``member``: the caller is a job of it).
        1 done, 0 the batch is gone, -1 it completed already."""
        return await self._batch_call(bid, "reopen", "1" if member else "0")

    @mapped
    async def batch_close(self, bid: str, added: int) -> bool:
        """Count ``added`` jobs into the batch, release a hold and push the callbacks
        its counters call for. False if the batch is gone (expired)."""
        return await self._batch_call(bid, "close", added) == 1

    @mapped
    async def batch_after(
        self, gate: str, payload: bytes, queue: str, desc: str, jids: Sequence[str]
    ) -> str | None:
        """A gate for ``configure(after=...)``: pushes ``payload`` once every job of
        ``jids`` succeeded. None, or the first jid with neither status nor outcome
        (then nothing was written)."""
        prefix = f"{self.keys.prefix}:"
        res = await self.scripts.batch(
            self.client,
            (self.batch_key(gate),),
            (prefix, BATCH_TTL, gate, "after", payload, queue, desc, *jids),
        )
        if res == 1:
            return None
        return res.decode() if isinstance(res, bytes) else str(res)

    @mapped
    async def batch_read(self, bid: str) -> tuple[dict[bytes, bytes], list[bytes]]:
        """A batch's hash and failed jids: one round trip."""
        key = self.batch_key(bid)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.smembers(f"{key}:failed")
            fields, failed = await pipe.execute()
        return dict(fields), list(failed)

    @mapped
    async def batch_read_many(
        self, bids: Sequence[str], sample: int
    ) -> list[tuple[dict[bytes, bytes], list[bytes], int]]:
        """Each batch's hash, up to ``sample`` of its failed jids and how many there
        are: one round trip. A batch that is gone has an empty hash."""
        async with self.client.pipeline(transaction=False) as pipe:
            for bid in bids:
                key = self.batch_key(bid)
                pipe.hgetall(key)
                pipe.srandmember(f"{key}:failed", sample)
                pipe.scard(f"{key}:failed")
            res = await pipe.execute()
        return [(dict(res[i]), list(res[i + 1]), int(res[i + 2])) for i in range(0, len(res), 3)]

    @mapped
    async def batch_unindex(self, bids: Sequence[str]) -> None:
        """Remove batches that are gone (expired) from the index."""
        if bids:
            await self.client.zrem(self.batch_index_key, *bids)

    @mapped
    async def batch_index_score(self, bid: str) -> float | None:
        """A batch's creation time in the index (None if it is not there)."""
        score = await self.client.zscore(self.batch_index_key, bid)
        return None if score is None else float(score)
