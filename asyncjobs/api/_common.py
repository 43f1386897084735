"""What every api module shares: the store of an app (connecting it if need be)."""

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
