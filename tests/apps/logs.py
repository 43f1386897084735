"""A job app whose job logs through the user's own logger, as application code does."""

from __future__ import annotations

import logging

import asyncjobs

app = asyncjobs.App()
log = logging.getLogger("myapp.jobs")


@app.job
async def place(order: int, who: str) -> None:
    log.info("hello %s", who, extra={"order": order})
    log.debug("placed order %d", order)
