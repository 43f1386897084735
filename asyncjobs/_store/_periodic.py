"""Periodic entries in Redis: the per-tick claim and enqueue, reconciliation, state."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from importlib import resources
from typing import Any

from .._redis import STORE_ERRORS, Script
from ._base import StoreBase, mapped

__all__ = ["EntryState", "PeriodicOps"]

# Loaded here rather than in the shared script registry: only a worker or an admin call
# that touches periodic entries ever sends it.
PERIODIC = Script("periodic", (resources.files("asyncjobs._scripts") / "periodic.lua").read_text())

# What periodic.lua answers.
ENQUEUED, TAKEN, PAUSED, REMOVED, LOST = 1, 0, -1, -2, -3

EntryState = tuple[bytes, dict[bytes, bytes], list[bytes]]


class PeriodicOps(StoreBase):
    """Claim-and-enqueue of ticks (periodic.lua), and what the api reads and writes."""

    async def periodic_enqueue(
        self,
        name: str,
        tick: int,
        queue: str,
        data: bytes,
        jid: str,
        now: float,
        *,
        history: int,
        mode: str = "tick",
        claim_ttl_ms: int = 120_000,
    ) -> int:
        """Enqueue ``data`` for ``tick`` of entry ``name`` unless another process did
        (one script call, one round trip). Returns ENQUEUED, TAKEN, PAUSED or REMOVED."""
        k = self.keys
        keys = (
            k.periodic(),
            k.periodic_state(name),
            k.periodic_claim(name, tick),
            k.periodic_history(name),
            k.queues,
            k.queue(queue),
            k.wake(queue),
            k.periodic_removed(),
        )
        args = (name, tick, claim_ttl_ms, queue, data, jid, repr(now), history, mode)
        try:
            return int(await PERIODIC(self.fast or self.client, keys, args))
        except STORE_ERRORS as exc:
            error = exc
        return int(await self._script_again(error, PERIODIC, keys, args))

    @mapped
    async def periodic_reconcile(self, definitions: Mapping[str, bytes]) -> list[str]:
        """Make the stored entries those of ``definitions`` (name -> JSON): write them,
        delete the others with their state and history (and the removed-by-hand marker,
        as the entries hash exists again). Returns the names deleted."""
        k = self.keys
        stored: list[Any] = await self.client.hkeys(k.periodic())
        stale = [n.decode() for n in stored if n.decode() not in definitions]
        async with self.client.pipeline(transaction=True) as pipe:
            if definitions:
                mapping: dict[Any, Any] = dict(definitions)
                pipe.hset(k.periodic(), mapping=mapping)
                pipe.delete(k.periodic_removed())
            if stale:
                self._drop_entries(pipe, stale)
            await pipe.execute()
        return stale

    @mapped
    async def periodic_remove(
        self, names: Collection[str] | None, now: float
    ) -> tuple[list[str], list[str]]:
        """Delete the entries ``names`` (None: every stored one) with their state and
        history, in one transaction, unless one of them is not stored. Returns (removed,
        unknown); nothing is removed when ``unknown`` is not empty. Sets the marker that
        keeps periodic.lua from taking an emptied schedule for a lost one."""
        k = self.keys
        keys: list[Any] = await self.client.hkeys(k.periodic())
        stored = {n.decode() for n in keys}
        if names is None:
            names = sorted(stored)
        unknown = [n for n in names if n not in stored]
        if unknown or not names:
            return [], unknown
        removed = list(names)
        async with self.client.pipeline(transaction=True) as pipe:
            self._drop_entries(pipe, removed)
            pipe.set(k.periodic_removed(), repr(now))
            await pipe.execute()
        return removed, []

    def _drop_entries(self, pipe: Any, names: list[str]) -> None:
        """Queue on ``pipe`` the deletion of entries ``names``: the definition and
        every key an entry owns (its state and its history). The one place that names
        them, for reconciliation and removal alike."""
        k = self.keys
        pipe.hdel(k.periodic(), *names)
        for n in names:
            pipe.delete(k.periodic_state(n), k.periodic_history(n))

    @mapped
    async def periodic_last(self, names: list[str]) -> dict[str, float | None]:
        """The last enqueued tick of each entry (None: never)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.hget(self.keys.periodic_state(n), "last")
            values: list[Any] = await pipe.execute()
        return {n: float(v) if v is not None else None for n, v in zip(names, values, strict=True)}

    @mapped
    async def periodic_entries(self, history: int = 10) -> dict[str, EntryState]:
        """Every stored entry: its definition, its state hash, its recent history."""
        k = self.keys
        defs: dict[Any, Any] = await self.client.hgetall(k.periodic())
        names = sorted(n.decode() for n in defs)
        async with self.client.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.hgetall(k.periodic_state(n))
                pipe.lrange(k.periodic_history(n), 0, max(0, history) - 1)
            replies: list[Any] = await pipe.execute()
        return {
            n: (defs[n.encode()], replies[2 * i], replies[2 * i + 1] if history > 0 else [])
            for i, n in enumerate(names)
        }

    @mapped
    async def periodic_definition(self, name: str) -> bytes | None:
        """The stored definition of entry ``name``, or None."""
        found: Any = await self.client.hget(self.keys.periodic(), name)
        return bytes(found) if found is not None else None

    @mapped
    async def periodic_pause(self, name: str, paused: bool, skip_to: float | None = None) -> bool:
        """Pause or resume entry ``name``; False if no such entry is stored. ``skip_to``
        (on resume): count the ticks up to it as done, so that a worker starting later
        does not take a tick of the pause for a missed one."""
        k = self.keys
        if not await self.client.hexists(k.periodic(), name):
            return False
        if paused:
            await self.client.hset(k.periodic_state(name), "paused", "1")
            return True
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(k.periodic_state(name), "paused")
            pipe.hget(k.periodic_state(name), "last")
            _, last = await pipe.execute()
        if skip_to is not None and (last is None or float(last) < skip_to):
            await self.client.hset(k.periodic_state(name), "last", repr(skip_to))
        return True
