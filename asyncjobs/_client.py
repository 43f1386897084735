"""What the worker modules still call by the old names, until they move onto the store
(``app.store``): promote and trim the dead set on a given client. The code lives in
``_store/``; remove this module once nothing imports it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._redis import Client
from ._store import QueuePairs, promote_on, trim_dead_on

if TYPE_CHECKING:
    from ._app import App

__all__ = ["QueuePairs", "promote", "trim_dead"]


async def trim_dead(app: App, client: Client, now: float) -> None:
    """Keep the dead set within ``dead_max_jobs`` entries and ``dead_timeout`` of age."""
    await trim_dead_on(client, app.keys.dead, now, app.dead_max_jobs, app.dead_timeout)


async def promote(app: App, client: Client, zset: str, members: Sequence[bytes], now: float) -> int:
    """Move ``members`` of ``zset`` into their queues; returns how many moved."""
    return await promote_on(client, app._scripts.promote, app.keys, zset, members, now)
