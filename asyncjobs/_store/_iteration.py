"""Iterable jobs' state (#14): read once as a run starts, saved every N items or T
seconds (one script call: HSET and PEXPIRE), deleted when the job completes or is
cancelled. Only iterable jobs come here."""

from __future__ import annotations

from typing import Any

from ._base import StoreBase, mapped

__all__ = ["IterationOps"]


class IterationOps(StoreBase):
    """Read, save and delete the ``{ns}:iter:<jid>`` hash of an iterable job."""

    @mapped
    async def load_iteration(self, jid: str) -> dict[bytes, bytes]:
        """The saved state of ``jid`` (empty on a first run): one ``HGETALL``."""
        reply: Any = await self.client.hgetall(self.keys.iteration(jid))
        return dict(reply)

    @mapped
    async def save_iteration(self, jid: str, fields: dict[str, Any], ttl: float) -> None:
        """Write the state fields and renew the TTL: one script call (iteration.lua)."""
        args: list[Any] = [max(1, int(ttl * 1000))]
        for k, v in fields.items():
            args.extend((k, v))
        await self.scripts.iteration(self.client, [self.keys.iteration(jid)], args)

    @mapped
    async def delete_iteration(self, jid: str) -> None:
        """Forget the state of ``jid`` (completed, or cancelled): one ``DEL``."""
        await self.client.delete(self.keys.iteration(jid))
