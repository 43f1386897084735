"""A periodic app for worker subprocess tests: one entry ticking every second, keeping
a long history (the evidence of which ticks were enqueued)."""

from __future__ import annotations

import asyncjobs

app = asyncjobs.App()


@app.periodic("* * * * * *", history=1000, name="every_second")
async def every_second() -> None:
    pass
