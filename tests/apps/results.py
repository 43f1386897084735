"""A job app whose jobs keep their results: a test reads them through any URL kind
(``redis+sentinel://`` included), with no Redis client of its own."""

from __future__ import annotations

import asyncjobs

app = asyncjobs.App()


@app.job(name="double", keep_result=60)
async def double(n: int) -> int:
    return 2 * n
