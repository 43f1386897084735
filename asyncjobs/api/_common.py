"""What every api module shares: the Redis client of an app, text of a member."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._app import App
    from .._redis import Client


async def _client(app: App) -> Client:
    return app._redis or await app.connect()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
