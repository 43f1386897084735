"""Middleware chains: one type for client middleware (around ``defer``) and server
middleware (around a job's run), as Sidekiq's ``middleware/chain.rb`` (pure).

The client, the worker's executor and the testing modes all walk chains through
:func:`run_client` and :func:`run_server`, so the contract below holds everywhere:

- A **client** middleware is ``async def mw(payload, call_next) -> str | None``. It may
  change the payload (``msgspec.structs.replace(payload, meta=...)``) before passing it
  on. One that returns without calling ``call_next`` stops the job: ``defer`` returns
  ``None`` and nothing is enqueued (in ``defer_many``, that element's jid is ``None``).
- A **server** middleware is ``async def mw(ctx, call_next) -> Any``, where ``ctx`` is
  the :class:`~asyncjobs.JobContext`. One that returns without calling ``call_next``
  skips the job, which is acknowledged as done, not retried. An exception raised before
  or after ``call_next`` is a failure of the job, retried like any other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from ._job import JobContext
    from ._payload import Payload

__all__ = [
    "Chain",
    "ClientMiddleware",
    "ServerMiddleware",
    "run_client",
    "run_server",
]

ClientNext = Callable[["Payload"], Awaitable["str | None"]]
ClientMiddleware = Callable[["Payload", ClientNext], Awaitable["str | None"]]
ServerNext = Callable[[], Awaitable[Any]]
ServerMiddleware = Callable[["JobContext", ServerNext], Awaitable[Any]]

M = TypeVar("M")


class Chain(Generic[M]):
    """An ordered list of middleware without duplicates.

    Entries run in order: the first added is the outermost. Adding an entry that is
    already there moves it (as Sidekiq's ``add``/``prepend`` do), so a module imported
    twice does not run its middleware twice.
    """

    __slots__ = ("_entries", "entries")

    def __init__(self, entries: Iterable[M] = ()) -> None:
        self._entries: list[M] = []
        # The entries, outermost first, as a tuple rebuilt at every change: a job
        # already walking the chain is not affected by later changes, and the hot path
        # reads a plain attribute (no call) to learn whether there is anything to run.
        self.entries: tuple[M, ...] = ()
        for entry in entries:
            self.add(entry)

    def add(self, middleware: M) -> M:
        """Append ``middleware`` (the innermost so far); returns it, so it decorates."""
        self.remove(middleware)
        self._entries.append(middleware)
        self.entries = tuple(self._entries)
        return middleware

    # A list-like alias: chains were plain lists before, and users append to them.
    append = add

    def prepend(self, middleware: M) -> M:
        """Put ``middleware`` first (the outermost)."""
        self.remove(middleware)
        self._entries.insert(0, middleware)
        self.entries = tuple(self._entries)
        return middleware

    def insert_before(self, old: M, new: M) -> M:
        """Put ``new`` just before ``old`` (which must be in the chain)."""
        self.remove(new)
        self._entries.insert(self._index(old), new)
        self.entries = tuple(self._entries)
        return new

    def insert_after(self, old: M, new: M) -> M:
        """Put ``new`` just after ``old`` (which must be in the chain)."""
        self.remove(new)
        self._entries.insert(self._index(old) + 1, new)
        self.entries = tuple(self._entries)
        return new

    def remove(self, middleware: M) -> None:
        """Take ``middleware`` out of the chain, if it is there."""
        entries = self._entries
        for i, entry in enumerate(entries):
            if entry is middleware or entry == middleware:
                del entries[i]
                self.entries = tuple(self._entries)
                return

    def clear(self) -> None:
        """Remove every entry."""
        self._entries.clear()
        self.entries = tuple(self._entries)

    def copy(self) -> Chain[M]:
        """A new chain with the same entries."""
        return Chain(self._entries)

    def _index(self, middleware: M) -> int:
        for i, entry in enumerate(self._entries):
            if entry is middleware or entry == middleware:
                return i
        raise ValueError(f"{middleware!r} is not in this chain")

    def __contains__(self, middleware: object) -> bool:
        return any(e is middleware or e == middleware for e in self._entries)

    def __iter__(self) -> Iterator[M]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __getitem__(self, i: int) -> M:
        return self._entries[i]

    def __repr__(self) -> str:
        return f"Chain({self._entries!r})"


async def run_client(
    entries: Sequence[ClientMiddleware],
    payload: Payload,
    last: ClientNext,
) -> str | None:
    """Pass ``payload`` through client middleware ``entries``, then to ``last`` (which
    enqueues it, or records it in a test mode). ``None`` when a middleware stopped it."""

    async def step(i: int, p: Payload) -> str | None:
        if i == len(entries):
            return await last(p)

        async def call_next(p2: Payload) -> str | None:
            return await step(i + 1, p2)

        return await entries[i](p, call_next)

    return await step(0, payload)


async def run_server(
    entries: Sequence[ServerMiddleware],
    ctx: JobContext,
    call: ServerNext,
) -> bool:
    """Run ``call`` (the job) inside server middleware ``entries``.

    Returns whether the job ran: ``False`` when a middleware returned without calling
    ``call_next`` (the job is skipped and acknowledged as done). Exceptions propagate.
    """
    ran = False

    async def step(i: int) -> Any:
        nonlocal ran
        if i == len(entries):
            ran = True
            return await call()

        async def call_next() -> Any:
            return await step(i + 1)

        return await entries[i](ctx, call_next)

    await step(0)
    return ran
