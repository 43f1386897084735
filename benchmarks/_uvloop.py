"""uvloop for the suite's own processes: ``run`` a coroutine on it, or ``install`` its
policy where a peer's CLI creates a plain asyncio loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run(coro)`` on a uvloop event loop, or asyncio's if uvloop is not
    installed; returns what the coroutine returns."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def install() -> bool:
    if os.environ.get("BENCH_NO_UVLOOP"):
        return False
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
