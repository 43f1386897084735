"""Install uvloop's event loop policy where a peer's CLI creates a plain asyncio loop."""

from __future__ import annotations

import asyncio
import os


def install() -> bool:
    if os.environ.get("BENCH_NO_UVLOOP"):
        return False
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
