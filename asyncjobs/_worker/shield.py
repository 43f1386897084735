"""``asyncjobs.shield()``: a section of a job that ``app.cancel`` waits for (#14).

A cancel request that arrives while the job's task is inside ``shield()`` is held back
and delivered when the outermost ``shield()`` exits (at the job's next ``await``). Only
``app.cancel`` waits: a timeout or a shutdown past its grace period cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

__all__ = ["cancel_unless_shielded", "shield", "shielded"]

# Task → depth of nested shield() blocks; tasks whose cancel waits for the block's end.
_shielded: dict[asyncio.Task[object], int] = {}
_deferred: set[asyncio.Task[object]] = set()


@contextlib.contextmanager
def shield() -> Iterator[None]:
    """Hold back ``app.cancel`` of the current job for the ``with`` block."""
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - not in a task: nothing to shield
        yield
        return
    _shielded[task] = _shielded.get(task, 0) + 1
    try:
        yield
    finally:
        depth = _shielded[task] - 1
        if depth:
            _shielded[task] = depth
        else:
            del _shielded[task]
            if task in _deferred:
                _deferred.discard(task)
                task.cancel()


def shielded(task: asyncio.Task[object]) -> bool:
    """Whether ``task`` is inside a ``shield()`` block now."""
    return task in _shielded


def cancel_unless_shielded(task: asyncio.Task[object]) -> None:
    """Cancel ``task`` now, or when it leaves its ``shield()`` block."""
    if task in _shielded:
        _deferred.add(task)
    else:
        task.cancel()
