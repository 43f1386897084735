"""Flow control: paused queues (Sidekiq Pro's pause and unpause) and unique locks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from .._errors import ConfigError
from .._job import Deferrer, _check_queue
from .._keys import shard_of
from .._unique import lock_for
from ._common import _store, _stores

if TYPE_CHECKING:
    from .._app import App
    from .._job import Job


async def pause_queue(app: App, name: str) -> bool:
    """Pause queue ``name``: workers fetch nothing from it (within one heartbeat
    interval, 5 s by default), jobs can still be deferred to it. False if it was paused
    already."""
    _check_queue(name, "pause_queue")
    return await (await _store(app)).pause_queue(name)


async def resume_queue(app: App, name: str) -> bool:
    """Resume a paused queue; False if it was not paused."""
    _check_queue(name, "resume_queue")
    return await (await _store(app)).resume_queue(name)


async def paused_queues(app: App) -> list[str]:
    """The names of paused queues, sorted."""
    return sorted(await (await _store(app)).paused_queues())


class UniqueLock(msgspec.Struct, frozen=True):
    """A unique job's lock as it is now: the jid holding it and its TTL left (seconds)."""

    key: str
    holder: str
    ttl: float


async def unique_lock(
    app: App, job: Job[Any, Any] | Deferrer[Any, Any], *args: Any, **kwargs: Any
) -> UniqueLock | None:
    """The lock ``job.defer(*args, **kwargs)`` would take, and who holds it; None when
    it is free. ``job`` may be configured (``job.configure(queue="low", unique=...)``)
    to ask about another queue or other unique options."""
    target = job._job if isinstance(job, Deferrer) else job
    opts = job._opts
    spec = opts.unique
    if spec is None:
        raise ConfigError(f"job {target.name} is not unique: give it unique=True or Unique(...)")
    lock = lock_for(target.name, opts.queue, target.encode_args(args, kwargs), spec)
    stores = await _stores(app)
    # The lock lives in the shard its key hashes to (App._shard), as the job does.
    store = stores[shard_of(lock.key, len(stores))]
    held = await store.lock_holder(lock.key)
    if held is None:
        return None
    return UniqueLock(store.keys.unique(lock.key), *held)


__all__ = ["UniqueLock", "pause_queue", "paused_queues", "resume_queue", "unique_lock"]
