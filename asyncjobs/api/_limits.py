"""Rate limiters' state (#13): what ``asyncjobs limits`` shows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import ConfigError
from .._limits import LimiterState, check_key
from ._common import _store

if TYPE_CHECKING:
    from .._app import App


async def limiter_state(app: App, name: str, key: str | int | None = None) -> LimiterState:
    """Limiter ``name`` of ``app`` (declared with ``app.limiter``) as it is now, for
    ``key`` (its per-key slot) or its own; read only, one round trip."""
    limiter = app.limiters.get(name)
    if limiter is None:
        known = ", ".join(sorted(app.limiters)) or "none"
        raise ConfigError(
            f"no limiter named {name!r} in this app (declared: {known}); "
            "pass the app that declares it (--app)"
        )
    return await (await _store(app)).limit_state(limiter.spec, check_key(name, key))


async def limiters(app: App) -> list[LimiterState]:
    """Every limiter the app declares, as it is now (without a key)."""
    store = await _store(app)
    return [await store.limit_state(lim.spec, None) for _, lim in sorted(app.limiters.items())]
