"""Batches and workflows (#14), the client side: ``async with app.batch(...)``,
``app.batch_status``, ``app.chain``.

A batch is opened in Redis held by its block (``batch.lua``); jobs deferred in the
block carry its id (``bid``) and are counted locally; when the block exits, one more
script call counts them in, releases the hold and fires the callbacks the counters
call for (jobs that finished meanwhile cannot fire them early: the hold keeps the batch
open, Sidekiq Pro's pending trick). Every later count is made by ``ack.lua`` as each
job is acknowledged. See docs/concepts/batches.md.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import msgspec

from ._batch import BatchStatus, Scope, Signature, scope_var, status_from
from ._errors import ArgumentError, BatchError, ConfigError
from ._job import Deferrer, Job, current_payload
from ._payload import Payload, new_jid
from ._status import JobFailed
from ._unique import Unique

if TYPE_CHECKING:
    from ._app import App

__all__ = [
    "STEP_BIDS",
    "STEP_JOB",
    "Batch",
    "BatchStore",
    "Callback",
    "chain",
    "defer_after",
    "read_status",
    "register_steps",
    "step_bid",
]

Callback = Job[Any, Any] | Signature
EVENTS = ("complete", "success", "death")
STEP_JOB = "asyncjobs.chain"  # the job that runs a workflow's next step


class BatchStore(Protocol):
    """Where batches live: the store (``batch.lua``, ``_store/_batch.py``), or under a
    test mode its in-memory stand-in (``asyncjobs.testing``), which counts the same."""

    # Whether a job that raised runs again (a worker's retries; not the test modes).
    batch_reruns: bool

    async def batch_open(self, bid: str, parent: str | None, fields: Sequence[Any]) -> bool: ...

    async def batch_open_once(self, bid: str, parent: str | None, fields: Sequence[Any]) -> int: ...

    async def batch_reopen(self, bid: str, *, member: bool) -> int: ...

    async def batch_close(self, bid: str, added: int) -> bool: ...

    async def batch_after(
        self, gate: str, payload: bytes, queue: str, desc: str, jids: Sequence[str]
    ) -> str | None: ...

    async def batch_read(self, bid: str) -> tuple[dict[bytes, bytes], list[bytes]]: ...


class _Exists(Exception):
    """``Batch(once=...)``: a batch has that id already. ``closed``: no block holds it
    (its jobs were all deferred); else a block does, or did and never closed it."""

    def __init__(self, closed: bool) -> None:
        super().__init__("closed" if closed else "held")
        self.closed = closed


class Batch:
    """An open batch: ``async with app.batch(...) as batch``. Jobs deferred inside
    the block (``defer``, ``defer_many``, in this task or tasks it starts) join it.

    ``bid`` is its id. A block inside the block, or inside a job of the batch, makes
    a child batch; ``app.batch(bid=...)`` reopens a batch to add jobs.
    """

    def __init__(
        self,
        app: App,
        *,
        description: str | None,
        callbacks: dict[str, Callback | None],
        bid: str | None,
        once: str | None = None,
    ) -> None:
        """``once``: make the batch under this id, unless one has it already (a chain's
        next step, ``_run_step``): then ``async with`` raises ``_Exists`` and does
        nothing. Such a block that raises is not closed where jobs run again (a
        worker's retries): its batch stays held, so it never fires."""
        self._app = app
        self.description = description
        self._callbacks = {e: cb for e, cb in callbacks.items() if cb is not None}
        for event, cb in self._callbacks.items():
            if not isinstance(cb, Job | Signature):
                raise ConfigError(
                    f"app.batch(on_{event}=...) takes a job or job.s(...), got {cb!r}"
                )
        if bid is not None and (self._callbacks or description is not None):
            raise ConfigError(
                "app.batch(bid=...) reopens a batch: its callbacks and description were "
                "given when it was made; pass bid= alone"
            )
        self._reopen = bid
        self._once = once
        self.bid = bid or ""
        self.parent: str | None = None
        self._scope: Scope | None = None
        self._token: Any = None
        self._store: BatchStore | None = None

    async def __aenter__(self) -> Batch:
        store = await self._app._batches()
        self._store = store
        running = current_payload()
        if self._reopen is not None:
            member = running is not None and running.bid == self._reopen
            res = await store.batch_reopen(self._reopen, member=member)
            if res == 0:
                raise BatchError(self._reopen, f"no batch {self._reopen} (expired, or never made)")
            if res < 0:
                raise BatchError(
                    self._reopen,
                    f"batch {self._reopen} is complete: only its own jobs can add to it now",
                )
        else:
            self.bid = self._once or new_jid()
            outer = scope_var.get()
            if outer is not None:
                self.parent = outer.bid
            elif running is not None and running.bid is not None:
                self.parent = running.bid
            fields: list[Any] = ["created_at", repr(time.time())]
            if self.description is not None:
                fields += ["desc", self.description]
            for event, cb in self._callbacks.items():
                queue, data = _callback_payload(self._app, cb, self.bid, event)
                fields += [f"cb:{event}", data, f"cbq:{event}", queue]
            if self._once is None:
                opened = await store.batch_open(self.bid, self.parent, fields)
            else:
                res = await store.batch_open_once(self.bid, self.parent, fields)
                if res in (2, 3):
                    raise _Exists(closed=res == 2)
                opened = res == 1
            if not opened:
                raise BatchError(
                    self.parent or "", f"the parent batch {self.parent} is gone (expired)"
                )
        self._scope = Scope(self.bid)
        self._token = scope_var.set(self._scope)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Closed even when the block raised: the jobs it deferred run all the same, and
        # counting them keeps the callbacks right (an unclosed batch never completes).
        scope_var.reset(self._token)
        assert self._store is not None and self._scope is not None
        if exc_type is not None and self._once is not None and self._store.batch_reruns:
            # A chain's step cut short (a defer raised, the job was cancelled): closed,
            # its batch would fire with the jobs deferred so far, and the step job's
            # run again would find it closed. Held, it never fires; the run again
            # defers the whole step in a batch of its own (_run_step).
            return
        # Shielded: a block cancelled now (a web request gone) still releases its hold,
        # or the batch would never complete.
        with anyio.CancelScope(shield=True):
            await self._store.batch_close(self.bid, self._scope.added)

    @property
    def added(self) -> int:
        """Jobs deferred into the batch by this block so far."""
        return 0 if self._scope is None else self._scope.added

    async def status(self) -> BatchStatus:
        """The batch's status now (``app.batch_status(batch.bid)``)."""
        return await read_status(self._app, self.bid)

    def __repr__(self) -> str:
        return f"<Batch {self.bid or '(not open)'}>"


def _callback_payload(app: App, cb: Callback, bid: str, event: str) -> tuple[str, bytes]:
    """A callback's payload, stored in the batch at creation: the job called with the
    batch id first, then its own arguments. Not a member of any batch itself."""
    sig = cb if isinstance(cb, Signature) else Signature(cb, (), {})
    job = sig.job
    opts = sig.opts if sig.opts is not None else job._opts
    if opts.after or opts.at is not None or opts.delay is not None or opts.jid is not None:
        raise ConfigError(
            f"on_{event}: a callback runs when its event comes: it takes no after=, "
            "delay=, at= or jid="
        )
    try:
        payload = job._build(opts, (bid, *sig.args), sig.kwargs, time.time())
    except ArgumentError as exc:
        raise ArgumentError(
            job.name,
            exc.argument,
            f"on_{event}: {exc} (a callback is called with the batch id first, then its "
            "own arguments: async def callback(bid: str, ...))",
        ) from None
    payload = msgspec.structs.replace(payload, bid=None, enqueued_at=None)
    return payload.queue, app._encode(payload)


async def read_status(app: App, bid: str) -> BatchStatus:
    store = await app._batches()
    fields, failed = await store.batch_read(bid)
    if not fields:
        raise BatchError(bid, f"no batch {bid} (expired, or never made)")
    return status_from(bid, fields, failed)


# -- workflows ---------------------------------------------------------------------------


async def defer_after(app: App, payload: Payload, after: tuple[str, ...]) -> str:
    """``configure(after=[...]).defer(...)``: a gate batch waits for the jobs ``after``
    names (tracked jobs: their outcome, stored by result.lua, is what it counts) and
    pushes ``payload`` when all of them succeeded. Returns the job's jid."""
    store = await app._batches()
    gate = new_jid()
    payload = msgspec.structs.replace(payload, bid=None, enqueued_at=None)
    desc = f"{payload.job} jid={payload.jid} after {', '.join(after)}"
    missing = await store.batch_after(gate, app._encode(payload), payload.queue, desc, after)
    if missing is not None:
        raise ConfigError(
            f"after=: jid {missing} has no status or outcome (not a job with keep_result= "
            "or track_status=True, or its record expired); nothing was enqueued"
        )
    return payload.jid


Step = Signature | Sequence[Signature]


def _group(step: Any, where: str) -> list[Signature]:
    if isinstance(step, Signature):
        return [step]
    if isinstance(step, Job):
        return [Signature(step, (), {})]
    if isinstance(step, Sequence) and not isinstance(step, str) and step:
        out: list[Signature] = []
        for s in step:
            out.extend(_group(s, where))
        return out
    raise ConfigError(
        f"{where}: a step is job.s(...) (or a job), or a non-empty list of them "
        f"(run together, the next step after all of them), got {step!r}"
    )


def _encode_step(group: list[Signature]) -> list[dict[str, Any]]:
    out = []
    for sig in group:
        try:
            msgspec.json.encode([sig.args, sig.kwargs])
        except (TypeError, msgspec.EncodeError) as exc:
            raise ArgumentError(
                sig.job.name, None, f"job {sig.job.name}: arguments cannot be encoded: {exc}"
            ) from None
        entry: dict[str, Any] = {"job": sig.job.name, "args": list(sig.args), "kwargs": sig.kwargs}
        if sig.opts is not None:
            entry["opts"] = msgspec.to_builtins(sig.opts)
        out.append(entry)
    return out


async def chain(
    app: App, steps: Sequence[Any], *, on_failure: str = "stop", description: str | None = None
) -> str:
    """Defer the first step of a workflow; each next step is deferred when the one
    before succeeded (``on_failure="continue"``: also when it died). Returns the bid
    of the first step's batch."""
    if on_failure not in ("stop", "continue"):
        raise ConfigError(f"chain(on_failure=...) is 'stop' or 'continue', got {on_failure!r}")
    if not steps:
        raise ConfigError("chain() needs at least one step")
    groups = [_group(s, f"chain step {i + 1}") for i, s in enumerate(steps)]
    for group in groups:
        for sig in group:
            if app.jobs.get(sig.job.name) is not sig.job:
                raise ConfigError(f"chain: job {sig.job.name} is not registered on this app")
    register_steps(app)
    rest = [_encode_step(g) for g in groups[1:]]
    return await _run_step(app, groups[0], rest, on_failure, [], description, 1)


# The ids a step may be deferred under, in order (``step_bid``): one more for each run
# of its step job cut short inside its block, so this bound is never met in practice.
STEP_BIDS = 64


def step_bid(after: str, attempt: int) -> str:
    """The bid of the step that follows batch ``after`` (its step job's first
    argument): the same for every run of that step job, and for both of its callbacks
    (success, death). ``attempt``: 0, or how many runs were cut short before. 24 hex
    digits, as ``new_jid``."""
    seed = f"{after}:{attempt}".encode()
    return hashlib.blake2b(seed, digest_size=12, person=b"asyncjobs.chain").hexdigest()


async def _run_step(
    app: App,
    group: list[Signature],
    rest: list[list[dict[str, Any]]],
    on_failure: str,
    prev: list[Any],
    description: str | None,
    number: int,
    after: str | None = None,
) -> str:
    """Defer one step's jobs in a batch whose callback defers the next step; return
    its bid.

    The first step (``after`` None, from ``app.chain``) gets a fresh bid. A later one
    is deferred by the step job of batch ``after``, which may run more than once
    (at-least-once delivery: its worker killed before the acknowledgement, or a
    failure retried), so its bid is derived from ``after`` (``step_bid``) and the
    batch made only if no batch has that bid (``batch_open_once``, the same single
    script call as a plain open):

    - a batch there that is closed: an earlier run deferred the whole step; nothing
      is deferred again, and the step's jobs run once;
    - one still held: an earlier run was cut short inside its block (its process
      killed, or a ``defer`` raised: such a block is left held, see ``Batch``), or is
      still deferring (a worker presumed dead that is still running). That batch
      never fires; the whole step is deferred in the batch of the next derived bid,
      with fresh jids, so the jobs deferred before the cut run twice (once counted in
      each batch), and a run still going forks the chain. Not exactly-once: making
      the batch, pushing its jobs and closing it are separate calls (no single
      script may touch the jobs' keys and the batch's on a Cluster).

    The first run costs no more round trips than before; each earlier run cut short
    costs a later run one more ``batch.lua`` call.
    """
    desc = f"{description or 'chain'}: step {number}"
    for attempt in range(1 if after is None else STEP_BIDS):
        jids = [new_jid() for _ in group]
        callbacks: dict[str, Callback | None] = {}
        if rest:
            step_job = app.jobs[STEP_JOB]
            ran = [[jid, sig.job.name] for jid, sig in zip(jids, group, strict=True)]
            nxt = step_job.s(
                ran=ran,
                rest=rest,
                on_failure=on_failure,
                number=number + 1,
                description=description,
            )
            callbacks["success"] = nxt
            if on_failure == "continue":
                callbacks["death"] = nxt
        once = None if after is None else step_bid(after, attempt)
        batch = Batch(app, description=desc, callbacks=callbacks, bid=None, once=once)
        try:
            async with batch:
                for jid, sig in zip(jids, group, strict=True):
                    opts = msgspec.structs.replace(sig.opts or sig.job._opts, jid=jid)
                    await Deferrer(sig.job, opts).defer(*prev, *sig.args, **sig.kwargs)
        except _Exists as found:
            if found.closed:
                return batch.bid  # deferred by an earlier run: nothing more to do
            continue  # held: an earlier run cut short; the next id
        return batch.bid
    raise BatchError(
        after or "",
        f"chain: {STEP_BIDS} batches for step {number} after batch {after} are all held "
        "open (runs of its step job cut short); nothing deferred",
    )


def _opts_from(job: Job[Any, Any], stored: dict[str, Any]) -> Any:
    """A step's per-call options as ``_encode_step`` stored them (builtins)."""
    d = dict(stored)
    unique = d.pop("unique", None)
    after = tuple(d.pop("after", ()))
    return msgspec.structs.replace(
        job._opts,
        **d,
        after=after,
        unique=None if unique is None else Unique(**unique),
    )


def register_steps(app: App) -> None:
    """Register the job that runs a workflow's next step (a worker registers it at
    start, so any worker can run the steps of a chain deferred elsewhere)."""
    if STEP_JOB in app.jobs:
        return

    async def step(
        bid: str,
        ran: list[tuple[str, str]],
        rest: list[list[dict[str, Any]]],
        on_failure: str = "stop",
        number: int = 2,
        description: str | None = None,
    ) -> None:
        """A workflow's next step: its jobs are deferred, each with the results of the
        step before (when its jobs keep results) as first argument: one job's result,
        or a list of them for a group. Run again (delivery is at-least-once), it
        defers nothing more once a run deferred the whole step (``_run_step``)."""
        results: list[Any] = []
        keep = True
        for jid, name in ran:
            job = app.jobs.get(name)
            if job is None or job.keep_result is None:
                keep = False
                continue
            try:
                results.append(await job.result(jid, timeout=0.001))
            except (JobFailed, TimeoutError):
                results.append(None)  # on_failure="continue": a dead step gives None
        prev: list[Any] = []
        if keep and results:
            prev = [results[0] if len(results) == 1 else results]
        group = [
            Signature(
                app.jobs[s["job"]],
                tuple(s["args"]),
                s["kwargs"],
                _opts_from(app.jobs[s["job"]], s["opts"]) if "opts" in s else None,
            )
            for s in rest[0]
        ]
        await _run_step(app, group, rest[1:], on_failure, prev, description, number, bid)

    app.job(name=STEP_JOB, retry=5)(step)
