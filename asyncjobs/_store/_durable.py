"""Durable enqueue: ``defer`` returns once the job has reached ``min_replicas`` replicas.

Redis replicates asynchronously: a master that acknowledged a push and died before
sending it on takes the job with it, and the replica promoted by a failover never had
it. With ``App(min_replicas=n)``, an enqueue script call is followed on the same
connection by ``WAIT n timeout``: Redis answers it once ``n`` replicas have acknowledged
every write of that connection so far (the push included), or at the timeout with how
many did. Fewer than ``n`` raises :class:`NotReplicated`: the job is on the master, and
is lost only if a failover comes before a replica has it.

``WAIT`` blocks its connection, and the hot path shares one, so the WAITs are grouped
(a group commit): a defer whose push goes out while a ``WAIT`` is pending on the
connection does not send its own; the pushes written meanwhile share the one ``WAIT``
sent when that one returns. One defer alone: its push and ``WAIT`` in one write, one
round trip plus the replicas' acknowledgement. Many at once: a ``WAIT`` per replication
round trip, not one per job, and a replica that stopped answering costs each defer
about one ``replica_timeout``, not one per defer queued before it.

Off (``min_replicas=0``, the default) none of this runs: the enqueue methods check one
attribute.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.exceptions as rexc

from .._conn import FastRedis
from .._errors import NotReplicated
from .._redis import STORE_ERRORS, Script, is_readonly
from ._base import StoreBase

__all__ = ["Durable", "DurableOps"]


class Durable:
    """The durable-enqueue setting (``min_replicas`` within ``timeout`` seconds), and
    the grouping of ``WAIT`` on one lean connection."""

    __slots__ = (
        "_next",
        "_next_generation",
        "_pending",
        "_pending_generation",
        "fast",
        "min_replicas",
        "timeout",
        "wait",
    )

    def __init__(self, min_replicas: int, timeout: float) -> None:
        self.min_replicas = min_replicas
        self.timeout = timeout
        self.wait = (b"WAIT", min_replicas, max(1, int(timeout * 1000)))
        self.fast: FastRedis | None = None
        # The WAIT written and not answered yet, and the connection it went out on.
        self._pending: asyncio.Future[Any] | None = None
        self._pending_generation = 0
        # The callers whose writes went out after it: they share the next WAIT.
        self._next: asyncio.Future[Any] | None = None
        self._next_generation = 0

    def after(self, fast: FastRedis, generation: int) -> asyncio.Future[Any]:
        """The future count of a ``WAIT`` written after the commands the caller has just
        written on ``fast`` (at connection ``generation``): one written now, or, when
        one is pending on this connection, the next one (written when it returns)."""
        self.fast = fast
        pending = self._pending
        if pending is None or self._pending_generation != generation:
            return self._send(fast, generation) or _lost()
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieve)
            self._next_generation = generation
        return self._next

    def _send(self, fast: FastRedis, generation: int) -> asyncio.Future[Any] | None:
        if fast.generation != generation:
            return None  # reconnected meanwhile: a WAIT now would not follow the writes
        fut = fast.send_nowait(*self.wait, block=self.timeout)
        if fut is None:
            return None
        self._pending, self._pending_generation = fut, generation
        fut.add_done_callback(_retrieve)
        fut.add_done_callback(self._answered)
        return fut

    def _answered(self, fut: asyncio.Future[Any]) -> None:
        if self._pending is fut:
            self._pending = None
        waiting, self._next = self._next, None
        if waiting is None or waiting.done():
            return
        assert self.fast is not None
        sent = self._send(self.fast, self._next_generation)
        if sent is None:
            waiting.set_exception(_lost_error())
            return

        def relay(done: asyncio.Future[Any]) -> None:
            if waiting.done():
                return
            if done.cancelled():
                waiting.set_exception(_lost_error())
            elif (exc := done.exception()) is not None:
                waiting.set_exception(exc)
            else:
                waiting.set_result(done.result())

        sent.add_done_callback(relay)


def _lost_error() -> rexc.ConnectionError:
    return rexc.ConnectionError("connection lost before WAIT: the writes may have been made")


def _lost() -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_exception(_lost_error())
    fut.exception()
    return fut


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # mark retrieved: its callers may all have been cancelled


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
        """``commands``, then a ``WAIT`` after them on the same connection (see
        :class:`Durable`): their replies, and the ``WAIT``'s."""
        try:
            generation = await fast.connected()
            sent = [fast.send_nowait(*c) for c in commands]
            futures = [f for f in sent if f is not None]
            if len(futures) < len(commands):
                raise _lost_error()
            waited = durable.after(fast, generation)
            replies = list(await asyncio.gather(*futures, return_exceptions=True))
            try:
                acked = await asyncio.shield(waited)
            except rexc.ResponseError as exc:
                acked = exc
        except STORE_ERRORS as exc:
            self.fail(exc)
        lost = next((r for r in replies if isinstance(r, LOST)), None)
        if lost is not None:
            self.fail(lost)  # the calls may or may not have been written: not sent again
        return replies, acked
