"""The worker's half of iterable jobs (#14): one run of an iterable job, with its state.

A run reads the job's state (``{ns}:iter:<jid>``: one ``HGETALL``), drives the job's
generator from the saved cursor (``asyncjobs.iteration.drive``), saves the cursor every
``save_every`` items or ``save_interval`` seconds (one script call), and then:

- completed: deletes the state (one ``DEL``); the executor acknowledges the job;
- the worker quiets or stops: the job stops at the next item boundary, saves its cursor
  and raises :class:`~asyncjobs.iteration.Interrupted`; the executor gives it back to
  the head of its queue, unchanged (no retry counted);
- the run reached ``max_runtime``: the same, but to the back of its queue (through the
  schedule set, due now), so that the jobs behind it get a turn;
- it failed, timed out or was cut by shutdown: the cursor of the last item done is
  saved (best effort), so the retry or the next run resumes after it;
- cancelled (``app.cancel``): the state is deleted.

The invariant: the saved cursor is never ahead of the items done, so a run that
resumes skips nothing (it may do again the items after the last save).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

import msgspec

from .._payload import ENCODER
from .._status import State as JobState
from ..iteration import Interrupted, IterableSpec, Iteration, State, drive

if TYPE_CHECKING:
    from .._payload import Payload
    from .executor import Executor, Running

__all__ = ["IterationStore", "iterate", "put_back"]

log = logging.getLogger("asyncjobs.iteration")

# How long a save after a failure or cut may take: shutdown waits 2 s (tasks.DIE_GRACE)
# for cancelled jobs to end.
LAST_SAVE_TIMEOUT = 1.0

_STATE = msgspec.json.Decoder(State)


class IterationStore(Protocol):
    """What a run needs of the store (``_store/_iteration.py``)."""

    async def load_iteration(self, jid: str) -> dict[bytes, bytes]: ...

    async def save_iteration(self, jid: str, fields: dict[str, Any], ttl: float) -> None: ...

    async def delete_iteration(self, jid: str) -> None: ...


def decode_state(fields: dict[bytes, bytes]) -> State:
    """The state as stored (a hash of JSON values: ``cursor`` is the cursor's JSON)."""
    if not fields:
        return State()
    try:
        return State(
            cursor=msgspec.Raw(fields[b"cursor"]) if b"cursor" in fields else None,
            items=int(fields.get(b"items", b"0")),
            runs=int(fields.get(b"runs", b"0")),
            started_at=float(fields[b"started_at"]) if b"started_at" in fields else None,
            saved_at=float(fields[b"saved_at"]) if b"saved_at" in fields else None,
        )
    except ValueError as exc:
        raise ValueError(f"the saved iteration state is damaged ({exc}): {fields!r}") from None


async def iterate(
    executor: Executor,
    rec: Running,
    payload: Payload,
    spec: IterableSpec,
    *args: Any,
    **kwargs: Any,
) -> None:
    """One run of an iterable job (the executor calls this instead of the job's
    function). Raises Interrupted when the worker quiets or stops."""
    store = cast(IterationStore, executor.locks)
    jid = payload.jid
    state = decode_state(await store.load_iteration(jid))
    cursor = None
    if state.cursor is not None:
        try:
            cursor = spec.decode_cursor(state.cursor)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ValueError(
                f"the saved cursor of {payload.job} jid={jid} no longer fits its "
                f"Iteration[...] type: {exc} (delete {jid}'s iteration state to start over)"
            ) from None

    # Sidekiq's max_iteration_runtime: a run that has taken this long stops at its next
    # item and goes to the back of its queue (Interrupted(later=True)).
    deadline = None if spec.max_runtime is None else time.monotonic() + spec.max_runtime

    def stop_here() -> bool:
        return executor.stopping or (deadline is not None and time.monotonic() >= deadline)

    it: Iteration[Any] = Iteration(
        jid,
        cursor,
        items=state.items,
        runs=state.runs + 1,
        started_at=state.started_at,
        stopping=stop_here,
    )
    if it.resumed:
        log.info(
            "resume %s jid=%s after cursor %r (%d items done, run %d)",
            payload.job,
            jid,
            it.cursor,
            it.items,
            it.runs,
        )
    saved = it.items  # items done as the state in Redis says
    wrote = False  # whether this run saved its state (a run that did not deletes none)

    async def save() -> None:
        nonlocal saved, wrote
        fields = {
            "cursor": ENCODER.encode(it.cursor),
            "items": it.items,
            "runs": it.runs,
            "started_at": repr(it.started_at),
            "saved_at": repr(time.time()),
        }
        try:
            await store.save_iteration(jid, fields, spec.state_ttl)
        except Exception as exc:  # Redis away: the next save tries again
            log.warning(
                "cannot save the cursor of %s jid=%s (%s); a crash now would do %d items again",
                payload.job,
                jid,
                exc,
                it.items - saved,
            )
            return
        saved = it.items
        wrote = True

    try:
        completed = await drive(spec, it, args, kwargs, save=save, stopping=stop_here)
    except BaseException as exc:
        if not isinstance(exc, Exception | asyncio.CancelledError):
            raise
        if rec.reason == "cancel" and isinstance(exc, asyncio.CancelledError):
            await _forget(store, payload, "cancelled")
        elif it.items > saved:
            # A failure, a timeout or shutdown's cut: the items done so far count.
            try:
                async with asyncio.timeout(LAST_SAVE_TIMEOUT):
                    await save()
            except TimeoutError:
                log.warning("cannot save the cursor of %s jid=%s in time", payload.job, jid)
        raise
    if not completed:
        later = not executor.stopping
        log.info(
            "interrupted %s jid=%s after cursor %r (%d items done): %s",
            payload.job,
            jid,
            it.cursor,
            it.items,
            "ran max_runtime; to the back of its queue" if later else "back to its queue",
        )
        raise Interrupted(later=later)
    if wrote or it.resumed:
        await _forget(store, payload, "completed")


async def _forget(store: IterationStore, payload: Payload, why: str) -> None:
    try:
        await store.delete_iteration(payload.jid)
    except Exception as exc:  # its TTL deletes it
        log.warning(
            "cannot delete the iteration state of %s jid=%s (%s, %s); its TTL will",
            payload.job,
            payload.jid,
            why,
            exc,
        )


def put_back(executor: Executor, rec: Running, exc: Interrupted) -> None:
    """The outcome of a run that stopped at an item boundary, its cursor saved: the
    job as it was fetched (no retry counted, no outcome) goes back to the head of its
    queue as the worker quiets or stops (the capsule's give-back; without one, shutdown
    puts it back), or after its max_runtime to the schedule set, due now, and so to
    the back of its queue. A tracked job's status says queued again."""
    if rec.reason is None:
        rec.reason = "finishing"  # a cancel request now is too late
    now = time.time()
    if exc.later:
        executor.sink.move(rec.field, "schedule", now, rec.raw)
    elif executor.give_back is not None:
        executor.give_back(rec.field, rec.raw)
    payload = rec.payload
    job = executor.app.jobs.get(payload.job) if payload is not None else None
    if payload is not None and job is not None and job.track_status and executor.locks:
        state = JobState(state="queued", at=now, queue=payload.queue)
        executor.tasks.start_soon(
            executor._write_state, payload.jid, ENCODER.encode(state), name="status"
        )
