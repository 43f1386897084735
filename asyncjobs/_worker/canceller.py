"""The cancel channel (#14): cancels the jobs ``app.cancel`` asks this process to.

``app.cancel(jid)`` finds the process whose in-flight hash holds the job and pushes the
jid onto ``{ns}:cancel:<process>``. Here one task per process blocks in ``BRPOP`` on
that list, on a connection of its own, and cancels the job's task the moment the jid
arrives: within one round trip of the request, not at the next heartbeat (5 s). The
``BRPOP`` times out every 2 s only to notice a dropped connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .backoff import Backoff, after_failure
from .health import Health

if TYPE_CHECKING:
    from .._redis import Conn
    from .._store import Store
    from .capsule import Capsule

__all__ = ["Canceller"]

log = logging.getLogger("asyncjobs.canceller")

WAIT = 2.0


class Canceller:
    def __init__(
        self,
        store: Store,
        conn: Conn,
        process_id: str,
        capsules: Sequence[Capsule],
        *,
        health: Health | None = None,
    ) -> None:
        self.store = store
        self.conn = conn
        self.process_id = process_id
        self.capsules = capsules
        self.health = health

    def cancel(self, jid: str) -> bool:
        """Cancel ``jid`` if a capsule of this process holds it."""
        field = jid.encode()
        for capsule in self.capsules:
            if capsule.cancel(field):
                log.info("cancelling jid=%s (app.cancel)", jid)
                return True
        log.info("cancel of jid=%s: not running here (finished, or being cancelled)", jid)
        return False

    async def run(self) -> None:
        store = self.store
        health = self.health or Health()
        backoff = Backoff()
        while True:
            try:
                jid = await store.wait_cancel(self.process_id, WAIT, conn=self.conn)
            except Exception as exc:
                if await health.failed("canceller", exc, log, store):
                    await after_failure(store, exc, self.conn)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            health.ok("canceller")
            if jid is not None:
                self.cancel(jid)
