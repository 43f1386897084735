"""The store: every Redis read and write of asyncjobs, as typed methods, errors mapped.

The API, the CLI, ``App.defer`` and the worker go through one
:class:`Store`; nothing else sends Redis commands. Each method maps redis-py's errors
(``_redis.map_error``), and sends a call refused with ``READONLY`` once more after a
reconnect. Layout: ``_base`` (connections, mapping), ``_enqueue`` (defer, promote,
kill), ``_admin`` (the api's reads and writes), ``_worker`` (fetch, ack, reap, ...).
"""

from __future__ import annotations

from ._admin import Admin, Counters
from ._base import QueuePairs, mapped
from ._batch import BatchOps
from ._enqueue import Enqueue, promote_on, trim_dead_on
from ._limits import LimitOps
from ._periodic import PeriodicOps
from ._status import StatusOps
from ._unique import Pushed, UniqueOps
from ._worker import Beat, WorkerOps

__all__ = [
    "Beat",
    "Counters",
    "Pushed",
    "QueuePairs",
    "Store",
    "mapped",
    "promote_on",
    "trim_dead_on",
]


class Store(Enqueue, StatusOps, Admin, WorkerOps, UniqueOps, PeriodicOps, LimitOps, BatchOps):
    """One Redis deployment under one namespace. Build it with :meth:`Store.open`
    (connects), or from clients already made."""
