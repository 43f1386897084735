"""A worker process of a sharded app (``App(shards=N)``): one complete worker per shard.

Each shard is a full copy of the key layout under its own hash tag (``_keys.py``), so
the simplest correct worker for N shards is N workers in one event loop, each on its
shard's store: a shard's fetchers, acker, scheduler, reaper, heartbeat and canceller
touch that shard's keys only, and every script stays on one slot. They share:

* the process id: a process is one process in every shard (its record, in-flight hash
  and cancel list live in each shard under the same id; ``asyncjobs.api`` merges them);
* stopping, quieting and signals (shard 0's worker handles them, for all of them); a
  remote ``quiet`` or ``stop`` read by any shard's heartbeat quiets or stops them all;
* the hooks and periodic entries, which run once, in shard 0's worker (the others get
  a view of the app without them).

Each shard's capsule gets ``ceil(concurrency / N)`` slots, so a process runs about the
concurrency it was given, spread over the shards.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .._settings import CapsuleSpec
from .launcher import Worker

if TYPE_CHECKING:
    from .._registry import Registry
    from .._store import Store

__all__ = ["ShardedWorker"]


def _without_hooks(app: Registry) -> Registry:
    """A view of ``app`` for the workers of shards 1..N-1: the same jobs and middleware,
    no lifecycle hooks and no periodic entries (shard 0's worker runs those once)."""
    view = copy.copy(app)
    for name in ("on_startup", "on_shutdown", "on_exit", "on_quiet", "on_heartbeat", "on_beat"):
        setattr(view, name, [])
    view.periodic_entries = {}
    return view


def split(specs: Sequence[CapsuleSpec], shards: int) -> list[CapsuleSpec]:
    """Each capsule with ``ceil(concurrency / shards)`` slots: its share in one shard."""
    return [
        CapsuleSpec(
            name=s.name,
            queues=s.queues,
            concurrency=max(1, math.ceil(s.concurrency / shards)),
            strict=s.strict,
        )
        for s in specs
    ]


class ShardedWorker(Worker):
    """One worker process over every shard of an app: ``await worker.run()``.

    It is shard 0's worker (hooks, periodic entries, signals), and runs one more
    :class:`Worker` per other shard (``others``) with the same process id. ``connects[i]``
    opens shard ``i``'s store; the other options are :class:`Worker`'s.
    """

    def __init__(
        self,
        app: Registry,
        capsules: Sequence[CapsuleSpec],
        *,
        connects: Sequence[Callable[[], Awaitable[Store]]],
        **options: Any,
    ) -> None:
        specs = split(capsules, len(connects))
        super().__init__(app, specs, connect=connects[0], **options)
        options["handle_signals"] = False
        self.others = [
            Worker(_without_hooks(app), specs, connect=connect, **options)
            for connect in connects[1:]
        ]
        for w in self.others:
            w.process_id = self.process_id
            w.group = self

    def stop(self, *, now: bool = False) -> None:
        """Shut every shard's worker down gracefully (``now=True``: cancel jobs)."""
        super().stop(now=now)
        for w in self.others:
            w.stop(now=now)

    def quiet_down(self) -> None:
        super().quiet_down()
        for w in self.others:
            w.quiet_down()

    async def wait_started(self) -> None:
        await super().wait_started()
        for w in self.others:
            await w.wait_started()

    async def wait_idle(self) -> None:
        await super().wait_idle()
        for w in self.others:
            await w.wait_idle()

    def statistics(self) -> dict[str, Any]:
        """As :meth:`Worker.statistics`, summed over the shards (``shards``: each one's)."""
        each = [super().statistics(), *(w.statistics() for w in self.others)]
        return {
            "process_id": self.process_id,
            "quiet": self.quiet,
            "busy": sum(s["busy"] for s in each),
            "processed": sum(s["processed"] for s in each),
            "failed": sum(s["failed"] for s in each),
            "capsules": each[0]["capsules"],
            "unhealthy": {k: v for s in each for k, v in s["unhealthy"].items()},
            "shards": each,
        }

    async def run(self) -> None:
        """Run every shard's worker until stopped; when one ends (stopped, or failed),
        the others stop; the first error is raised."""
        errors: list[Exception] = []

        async def one(run: Callable[[], Awaitable[None]]) -> None:
            try:
                await run()
            except Exception as exc:
                errors.append(exc)
            finally:
                self.stop()

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, super().run)
            for w in self.others:
                tg.start_soon(one, w.run)
        if errors:
            raise errors[0]
