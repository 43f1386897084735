"""What every api module shares: the store of an app (connecting it if need be), and
the clear of a queue or a set that releases its unique jobs' locks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._app import App
    from .._store import Store


async def _store(app: App) -> Store:
    """The app's store: every read and write of the api goes through it, errors mapped."""
    store = app.store
    if store is None:
        await app.connect()
        store = app.store
        assert store is not None
    return store


async def _stores(app: App) -> list[Store]:
    """The store of every shard, shard 0 first (one store for an unsharded app)."""
    await _store(app)
    return app.stores


async def _clear(store: Store, key: str, queue: str | None = None) -> int:
    """Delete every entry of a queue (``queue``: its name; ``key``: its list) or a
    sorted set of one store, releasing the unique locks of the jobs it held; returns
    how many there were. One script moves them all aside (a job pushed after it, or
    taken by a worker, is not touched), then chunks of 1,000 are deleted, each chunk
    sending back only the payloads that may carry a lock."""
    temp, size = await store.clear_begin(key, queue)
    left = size
    while left:
        left, payloads = await store.clear_drain(temp, queue=queue is not None)
        if payloads:
            await store.release_locks(payloads)
    return size
