"""Durable enqueue: ``defer`` returns once the job has reached ``min_replicas`` replicas.

Redis replicates asynchronously: a master that acknowledged a push and died before
sending it on takes the job with it, and the replica promoted by a failover never had
it. With ``App(min_replicas=n)``, each enqueue script call is followed, in the same write
on the same connection, by ``WAIT n timeout``: Redis answers it once ``n`` replicas have
acknowledged every write of that connection so far (the push included), or at the
timeout with how many did. Same round trip; the reply comes when the replicas have the
job (about one replication round trip later). Fewer than ``n`` raises
:class:`NotReplicated`: the job is on the master, and is lost only if a failover comes
before a replica has it.

Off (``min_replicas=0``, the default) none of this runs: the enqueue methods check one
attribute.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions as rexc

from .._conn import FastRedis
from .._errors import NotReplicated
from .._redis import STORE_ERRORS, Script, is_readonly
from ._base import StoreBase

__all__ = ["Durable", "DurableOps"]


class Durable:
    """The durable-enqueue setting: ``min_replicas`` within ``timeout`` seconds."""

    __slots__ = ("min_replicas", "timeout", "wait")

    def __init__(self, min_replicas: int, timeout: float) -> None:
        self.min_replicas = min_replicas
        self.timeout = timeout
        self.wait = (b"WAIT", min_replicas, max(1, int(timeout * 1000)))


# A reply that means the connection was lost: the calls may have been written.
LOST = (rexc.ConnectionError, rexc.TimeoutError)

# One script call: the script, its keys, its arguments.
Call = tuple[Script, list[str], tuple[Any, ...]]


class DurableOps(StoreBase):
    """Script calls followed by ``WAIT`` on the same connection."""

    async def durable_calls(self, calls: list[Call], *, again: bool = False) -> list[Any]:
        """Run ``calls`` (in order, pipelined), then ``WAIT``; their replies. Raises
        :class:`NotReplicated` when fewer replicas than asked acknowledged them in time.

        ``NOSCRIPT`` sends those calls with the script's source (and ``WAIT`` again);
        ``READONLY`` on every call (a failover: this server is a replica now, and wrote
        nothing) reconnects, which asks the Sentinels for the new master, and sends the
        calls once more. A lost connection is raised: the calls may have been written."""
        durable = self.durable
        fast = self.fast
        assert durable is not None and fast is not None  # checked at connect
        commands = [(b"EVALSHA", s.sha, len(k), *k, *a) for s, k, a in calls]
        replies, acked = await self._with_wait(fast, commands, durable)
        missing = [i for i, r in enumerate(replies) if isinstance(r, rexc.NoScriptError)]
        if missing:
            sources = [(b"EVAL", calls[i][0].source, *commands[i][2:]) for i in missing]
            more, acked = await self._with_wait(fast, sources, durable)
            for i, r in zip(missing, more, strict=True):
                replies[i] = r
        errors = [r for r in replies if isinstance(r, BaseException)]
        if errors and len(errors) == len(replies) and all(map(is_readonly, errors)) and not again:
            await self.reset(fast)
            return await self.durable_calls(calls, again=True)
        if errors:
            self.fail(errors[0])
        if isinstance(acked, BaseException):
            self.fail(acked)
        if int(acked) < durable.min_replicas:
            # A failover may be the cause, the demoted master not told yet: then the
            # next defer goes to the new one.
            await self.follow_master()
            raise NotReplicated(
                f"the job reached {int(acked)} replica(s) of the {durable.min_replicas} "
                f"asked (App(min_replicas=...)) within {durable.timeout:g}s: it is "
                "enqueued on the master and runs, unless a failover comes before a "
                "replica has it, which would lose it; deferring it again may run it twice",
                int(acked),
                durable.min_replicas,
            )
        return replies

    async def _with_wait(
        self, fast: FastRedis, commands: list[tuple[Any, ...]], durable: Durable
    ) -> tuple[list[Any], Any]:
        """``commands`` then ``WAIT`` in one write: their replies, and ``WAIT``'s."""
        try:
            *replies, acked = await fast.execute_many(
                [*commands, durable.wait], block=durable.timeout
            )
        except STORE_ERRORS as exc:
            self.fail(exc)
        lost = next(
            (r for r in replies if isinstance(r, rexc.ConnectionError | rexc.TimeoutError)), None
        )
        if lost is not None:
            self.fail(lost)  # the calls may or may not have been written: not sent again
        return replies, acked
