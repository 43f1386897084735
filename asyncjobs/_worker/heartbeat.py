"""The heartbeat: the process record with a TTL, and remote commands (quiet, stop).

One pipeline every ``interval`` seconds. While the record lives, no reaper touches this
process's in-flight hash; when it expires (the process died), a reaper gives the jobs
back (invariant 1).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .._redis import Client, mask_url
from .._version import __version__
from .health import Health

if TYPE_CHECKING:
    from .._app import App

log = logging.getLogger("asyncjobs.heartbeat")

_ENC = msgspec.json.Encoder()


def new_process_id() -> str:
    """``host:pid:random``: unique, and tells a reaper on the same host which pid to check."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class Heartbeat:
    def __init__(
        self,
        app: App,
        client: Client,
        process_id: str,
        *,
        interval: float,
        ttl: float,
        info: Callable[[], dict[str, Any]],
        on_command: Callable[[str], None],
        health: Health | None = None,
    ) -> None:
        self.app = app
        self.client = client
        self.process_id = process_id
        self.interval = interval
        self.ttl = ttl
        self._info = info
        self._on_command = on_command
        self.started_at = time.time()
        self.processes = 1
        # Told the number of live processes at each beat (the scheduler scales its poll).
        self.on_processes: Callable[[int], None] | None = None
        self._down = False
        self.health = health or Health()
        self._soon = asyncio.Event()  # beat_soon(): beat without waiting for the interval

    def beat_soon(self) -> None:
        """Beat now, not at the next interval (quiet shows in ``processes`` at once)."""
        self._soon.set()

    async def beat(self) -> None:
        """Write the record, read commands, count live processes. One round trip."""
        k = self.app.keys
        info = self._info()
        record: dict[str | bytes, Any] = {
            "info": _ENC.encode(
                {
                    "hostname": socket.gethostname(),
                    "pid": os.getpid(),
                    "started_at": self.started_at,
                    "version": __version__,
                    **info,
                }
            ),
            "busy": info.get("busy", 0),
            "beat": time.time(),
            "quiet": int(bool(info.get("quiet"))),
        }
        key = k.process(self.process_id)
        ctl = k.control(self.process_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.sadd(k.processes, self.process_id)
            pipe.hset(key, mapping=record)  # type: ignore[arg-type]
            pipe.pexpire(key, int(self.ttl * 1000))
            pipe.lpop(ctl, 10)
            pipe.scard(k.processes)
            res = await pipe.execute()
        self.processes = int(res[4] or 1)
        if self.on_processes is not None:
            self.on_processes(self.processes)
        for cmd in res[3] or ():
            self._on_command(cmd.decode() if isinstance(cmd, bytes) else str(cmd))

    async def run(self) -> None:
        import anyio

        while True:
            with anyio.move_on_after(self.interval):
                await self._soon.wait()
            self._soon.clear()
            try:
                await self.beat()
            except Exception as exc:
                if not await self.health.failed("heartbeat", exc, log, self.app._redis):
                    continue
                if not self._down:
                    log.warning(
                        "heartbeat: cannot reach Redis at %s (%s)",
                        mask_url(self.app.redis_url),
                        exc,
                    )
                    self._down = True
                continue
            self.health.ok("heartbeat")
            if self._down:
                log.warning("heartbeat: Redis is back")
                self._down = False

    async def clear(self) -> None:
        """Remove this process's record at a clean exit."""
        k = self.app.keys
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.srem(k.processes, self.process_id)
            pipe.delete(k.process(self.process_id), k.control(self.process_id))
            await pipe.execute()
