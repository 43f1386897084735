"""Following a Sentinel failover at once: the ``+switch-master`` watch.

A reconnect asks the Sentinels for the master, and a ``READONLY`` reply or a lost
connection makes one. But after a planned failover (``SENTINEL FAILOVER``), or a
partition that isolated the old master, the old master goes on answering as a master
until the Sentinels reconfigure it (about ten seconds later): clients still connected
to it would write jobs there, which it drops when it becomes a replica. So a store on a
``redis+sentinel://`` URL subscribes to ``+switch-master`` on one Sentinel; when the
Sentinels switch this master, every connection of the store (the pool's, the lean one,
the fetchers') is dropped, and the next call connects to the new master.

One connection to a Sentinel per store; nothing on the job path. Every few seconds
without an event, the watch also compares the master the Sentinels name with the one
the lean connection is open to (an event missed while no Sentinel was reachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio.sentinel import SentinelConnectionPool

from .._redis import STORE_ERRORS

if TYPE_CHECKING:
    from ._base import StoreBase

__all__ = ["MasterWatch"]

log = logging.getLogger("asyncjobs.sentinel")

SWITCH = "+switch-master"
CHECK_EVERY = 5.0  # seconds without an event between two checks of the master's address


class MasterWatch:
    """The task that follows ``+switch-master`` for one store."""

    def __init__(self, store: StoreBase, pool: SentinelConnectionPool) -> None:
        self.store = store
        self.pool = pool
        self.name = str(pool.service_name)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.switches = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sentinel-watch")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        self._stopping = True
        if task is None:
            return
        task.cancel()
        # A cancellation can be swallowed by a read timeout ending at the same moment
        # (redis-py's pub/sub reads have one): the flag ends the loops then, within a
        # read (a second); the store closes the Sentinel connections after anyway.
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if done and not task.cancelled() and task.exception() is not None:
            log.debug("sentinel watch ended with %r", task.exception())

    async def _run(self) -> None:
        sentinels: list[Any] = self.pool.sentinel_manager.sentinels
        i = 0
        while not self._stopping:
            node = sentinels[i % len(sentinels)]
            try:
                await self._follow(node, sentinels)
            except STORE_ERRORS as exc:
                log.debug("sentinel watch: %s; trying the next Sentinel", exc)
            except Exception as exc:  # a mapped error (_follow resets), or a bug: go on
                log.warning("sentinel watch: %r; trying the next Sentinel", exc)
            i += 1
            await asyncio.sleep(0.5)

    async def _follow(self, node: Any, sentinels: list[Any]) -> None:
        pubsub = node.pubsub()
        try:
            await pubsub.subscribe(SWITCH)
            await self.store.follow_master()  # a switch missed while not subscribed
            checked = time.monotonic()
            while not self._stopping:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    await self._switched(message.get("data"), node, sentinels)
                    checked = time.monotonic()
                elif time.monotonic() - checked > CHECK_EVERY:
                    await pubsub.ping()
                    await self.store.follow_master()
                    checked = time.monotonic()
        finally:
            with contextlib.suppress(*STORE_ERRORS):
                await pubsub.aclose()

    async def _switched(self, data: Any, node: Any, sentinels: list[Any]) -> None:
        # "<name> <old ip> <old port> <new ip> <new port>"
        parts = (data.decode() if isinstance(data, bytes) else str(data)).split()
        if len(parts) != 5 or parts[0] != self.name:
            return
        # This Sentinel knows the new master already; others may lag a moment: ask it
        # first when the next connection looks for the master.
        if node in sentinels:
            sentinels.remove(node)
            sentinels.insert(0, node)
        self.switches += 1
        log.warning(
            "Sentinel: master %s moved from %s:%s to %s:%s; reconnecting",
            self.name,
            *parts[1:],
        )
        await self.store.reset_all()
