"""The store: every Redis read and write of asyncjobs, as typed methods, errors mapped.

The API, the CLI, ``App.defer`` and the worker go through one
:class:`Store`; nothing else sends Redis commands. Each method maps redis-py's errors
(``_redis.map_error``), and sends a call refused with ``READONLY`` once more after a
reconnect. Layout: ``_base`` (connections, mapping), ``_enqueue`` (defer, promote,
kill), ``_admin`` (the api's reads and writes), ``_worker`` (fetch, ack, reap, ...).
"""

from __future__ import annotations

from .._keys import Keys, shard_tags
from ._admin import Admin, Counters
from ._base import QueuePairs, mapped
from ._batch import BatchOps
from ._enqueue import Enqueue, promote_on, trim_dead_on
from ._iteration import IterationOps
from ._limits import LimitOps
from ._metrics import MetricsOps
from ._outbox import OutboxOps, OutboxRow
from ._periodic import PeriodicOps
from ._status import StatusOps
from ._unique import Pushed, UniqueOps
from ._worker import Beat, WorkerOps

__all__ = [
    "Beat",
    "Counters",
    "OutboxRow",
    "Pushed",
    "QueuePairs",
    "Store",
    "mapped",
    "promote_on",
    "shard_stores",
    "trim_dead_on",
]


class Store(
    Enqueue,
    StatusOps,
    Admin,
    WorkerOps,
    UniqueOps,
    PeriodicOps,
    LimitOps,
    IterationOps,
    OutboxOps,
    MetricsOps,
    BatchOps,
):
    """One Redis deployment under one namespace. Build it with :meth:`Store.open`
    (connects), or from clients already made."""


def shard_stores(store: Store, shards: int) -> list[Store]:
    """The stores of shards 1 to ``shards - 1``: ``store``'s connections, each shard's
    keys (``_keys.shard_tags``); none for an unsharded app."""
    if shards == 1:
        return []
    namespace = store.keys.namespace
    return [
        Store(
            store.url,
            Keys(namespace, tag),
            store.client,
            store.fast,
            store.scripts,
            dead_max_jobs=store.dead_max_jobs,
            dead_timeout=store.dead_timeout,
        )
        for tag in shard_tags(namespace, shards)[1:]
    ]
