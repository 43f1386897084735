"""Rate limiters at run time: ``async with limiter:`` in a job, and the executor's gate
for jobs declared with ``limits=[...]``.

Each acquire is one script call (``_store/_limits.py``). A concurrent lease is renewed
in the background (every third of its ``lease``) while held, so a holder that dies
(SIGKILL) stops renewing and its slot frees itself when the lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

from .._errors import ConfigError
from .._limits import LimiterState, LimitSpec, OverLimit, check_key

__all__ = ["UNLIMITED", "Lease", "LimitStore", "Limiter", "Unlimited", "enter_all", "release_all"]

log = logging.getLogger("asyncjobs.limits")


class LimitStore(Protocol):
    """The store's limiter methods (``_store/_limits.py``)."""

    async def limit_acquire(
        self, spec: LimitSpec, key: str | None, token: str, cost: int = 1
    ) -> tuple[bool, float, float]: ...

    async def limit_renew(self, spec: LimitSpec, key: str | None, token: str) -> bool: ...

    async def limit_release(self, spec: LimitSpec, key: str | None, token: str) -> bool: ...

    async def limit_state(self, spec: LimitSpec, key: str | None) -> LimiterState: ...


class Unlimited:
    """The store of limiters under a test mode (``asyncjobs.testing``): every acquire is
    granted, and nothing touches Redis, as test modes take no unique locks either."""

    async def limit_acquire(
        self, spec: LimitSpec, key: str | None, token: str, cost: int = 1
    ) -> tuple[bool, float, float]:
        return True, 0.0, time.time()

    async def limit_renew(self, spec: LimitSpec, key: str | None, token: str) -> bool:
        return True

    async def limit_release(self, spec: LimitSpec, key: str | None, token: str) -> bool:
        return True

    async def limit_state(self, spec: LimitSpec, key: str | None) -> LimiterState:
        return LimiterState(spec.name, spec.kind, key, spec.limit, spec.per, 0, spec.limit)


UNLIMITED = Unlimited()


class Lease:
    """One acquire of a limiter: ``async with limiter.acquire(key=..., cost=...) as
    lease``. ``at`` is when it was granted (Redis's clock, Unix seconds). Leaving the
    block gives a concurrent slot back; the other kinds have nothing to give back."""

    __slots__ = ("_renewer", "_store", "at", "cost", "key", "spec", "token", "wait")

    def __init__(
        self,
        spec: LimitSpec,
        store: Callable[[], Awaitable[LimitStore]],
        key: str | None,
        cost: int,
        wait: float,
    ) -> None:
        self.spec = spec
        self.key = key
        self.cost = cost
        self.wait = wait
        self.token = os.urandom(8).hex()
        self.at = 0.0
        self._store = store
        self._renewer: asyncio.Task[None] | None = None

    async def take(self, store: LimitStore | None = None) -> Lease:
        """Acquire, waiting up to ``wait`` seconds for room; raises :class:`OverLimit`."""
        s = store if store is not None else await self._store()
        spec = self.spec
        deadline = time.monotonic() + self.wait
        while True:
            ok, retry_after, now = await s.limit_acquire(spec, self.key, self.token, self.cost)
            if ok:
                self.at = now
                if spec.kind == "concurrent":
                    self._renewer = asyncio.create_task(
                        self._renew(s), name=f"asyncjobs limiter {spec.name} lease"
                    )
                return self
            if spec.kind == "concurrent":
                # When the first lease runs out is only a bound: a holder may leave any
                # moment; backoff and jitter decide when to try again.
                retry_after = 0.0
            left = deadline - time.monotonic()
            if left <= 0:
                raise OverLimit(
                    spec.name,
                    self.key,
                    retry_after,
                    reschedules=spec.reschedules,
                    max_backoff=spec.max_backoff,
                )
            # A concurrent slot may free at any moment (a holder leaves): poll it often.
            pause = 0.05 if spec.kind == "concurrent" or retry_after <= 0 else retry_after
            await asyncio.sleep(min(pause, left))

    async def _renew(self, store: LimitStore) -> None:
        spec = self.spec
        while True:
            await asyncio.sleep(spec.lease / 3)
            try:
                if not await store.limit_renew(spec, self.key, self.token):
                    log.warning(
                        "lost the lease of limiter %s (key %s): it ran out before it was "
                        "renewed (is the event loop blocked?)",
                        spec.name,
                        self.key,
                    )
                    return
            except Exception as exc:  # Redis away: try again; the lease may run out
                log.warning("cannot renew the lease of limiter %s: %s", spec.name, exc)

    async def release(self, store: LimitStore | None = None) -> None:
        """Give a concurrent slot back (a lease that cannot be given back runs out)."""
        renewer, self._renewer = self._renewer, None
        if renewer is None:
            return
        renewer.cancel()
        # Wait for it to end (a cancelled task still runs until its next await), without
        # taking its CancelledError for ours: a cancel of this task still propagates.
        await asyncio.wait([renewer])
        try:
            s = store if store is not None else await self._store()
            await s.limit_release(self.spec, self.key, self.token)
        except Exception as exc:
            log.warning(
                "cannot release the lease of limiter %s (%s); it runs out in %gs",
                self.spec.name,
                exc,
                self.spec.lease,
            )

    async def __aenter__(self) -> Lease:
        return await self.take()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


_UNSET: object = object()


class Limiter:
    """A named rate limiter, global across processes and hosts: made by
    :meth:`App.limiter`. ``async with limiter:`` takes one call's worth (or waits up to
    its ``wait``, then raises :class:`~asyncjobs.OverLimit`); ``limiter(key=...)`` is
    the same limiter for one key (its own count, e.g. per account);
    ``limiter.acquire(key=..., cost=...)`` takes ``cost`` points."""

    def __init__(
        self,
        spec: LimitSpec,
        store: Callable[[], Awaitable[LimitStore]],
        key: str | None = None,
        key_arg: str | None = None,
    ) -> None:
        self.spec = spec
        self.key = key
        # limits=[limiter.by("account_id")]: the key is that argument of each job.
        self.key_arg = key_arg
        self._store = store
        self._held: dict[asyncio.Task[object] | None, list[Lease]] = {}

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        key = "" if self.key is None else f" key={self.key!r}"
        return f"<Limiter {self.spec.name} {self.spec.kind} {self.spec.limit}{key}>"

    def __call__(self, key: str | int | None = None) -> Limiter:
        """This limiter for one key (e.g. an account id): its own count."""
        return Limiter(self.spec, self._store, check_key(self.spec.name, key))

    def by(self, argument: str) -> Limiter:
        """For ``limits=[...]``: this limiter keyed by the job's argument ``argument``
        (``limits=[stripe.by("account_id")]``: one count per account)."""
        if not isinstance(argument, str) or not argument.isidentifier():
            raise ConfigError(
                f"limiter {self.spec.name!r}: by() takes the name of a job argument, "
                f"got {argument!r}"
            )
        return Limiter(self.spec, self._store, None, argument)

    def acquire(
        self, key: str | int | None | object = _UNSET, *, cost: int = 1, wait: float | None = None
    ) -> Lease:
        """One acquire, for ``async with``: ``cost`` points (window, bucket, leaky,
        points), waiting up to ``wait`` seconds (default: the limiter's) for room."""
        self.spec.check_cost(cost)
        k = self.key if key is _UNSET else check_key(self.spec.name, key)
        return Lease(self.spec, self._store, k, cost, self.spec.wait if wait is None else wait)

    async def state(self) -> LimiterState:
        """The limiter as it is now (for its key)."""
        return await (await self._store()).limit_state(self.spec, self.key)

    async def __aenter__(self) -> Lease:
        lease = await self.acquire().take()
        self._held.setdefault(asyncio.current_task(), []).append(lease)
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = asyncio.current_task()
        leases = self._held[task]
        lease = leases.pop()
        if not leases:
            del self._held[task]
        await lease.release()


async def enter_all(
    store: LimitStore,
    limiters: Sequence[Limiter],
    arguments: Callable[[], Mapping[str, Any]] | None = None,
) -> list[Lease]:
    """The gate of a job declared with ``limits=[...]``: take each limiter in order, not
    waiting; over one, give back the concurrent slots taken and raise
    :class:`OverLimit` (a window or bucket taken before stays spent). ``arguments``:
    the job's arguments by name, for limiters keyed by one (``limiter.by(name)``)."""
    leases: list[Lease] = []
    args: Mapping[str, Any] | None = None
    for limiter in limiters:
        key = limiter.key
        if limiter.key_arg is not None:
            if args is None:
                args = arguments() if arguments is not None else {}
            key = check_key(limiter.spec.name, args.get(limiter.key_arg))
        lease = Lease(limiter.spec, limiter._store, key, 1, 0.0)
        try:
            await lease.take(store)
        except BaseException:
            await release_all(store, leases)
            raise
        leases.append(lease)
    return leases


async def release_all(store: LimitStore, leases: Sequence[Lease]) -> None:
    for lease in reversed(leases):
        await lease.release(store)
