"""Example jobs: what a small web shop might run in the background.

Run them with ``python examples/demo.py`` (it defers a few and starts a worker), or by
hand: ``asyncjobs worker examples.tasks:app -q critical,2 -q default,1``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import anyio

import asyncjobs

# A namespace of its own, so the demo never touches the jobs of a real app sharing Redis.
app = asyncjobs.App(namespace="asyncjobs-demo")


@app.job(queue="critical", retry=5, timeout=30)
async def charge(order_id: int, amount: Decimal) -> None:
    """Charge an order (critical queue: weighted ahead of default)."""
    ctx = asyncjobs.current_job()
    await anyio.sleep(0.05)  # a payment provider's round trip
    ctx.logger.info("charged order %d: %s EUR", order_id, amount)


@app.job
async def send_welcome_email(user_id: int, email: str) -> None:
    ctx = asyncjobs.current_job()
    await anyio.sleep(0.02)
    ctx.logger.info("welcome email sent to %s (user %d)", email, user_id)


@app.job
async def resize_image(image_id: uuid.UUID, sizes: list[int]) -> None:
    ctx = asyncjobs.current_job()
    for size in sizes:
        await anyio.sleep(0.01)
        ctx.logger.info("image %s resized to %dpx", image_id, size)


_attempts: dict[str, int] = {}


@app.job(retry_in=lambda count, exc: 1.0)
async def flaky_webhook(url: str) -> None:
    """Fails on its first run, succeeds on the retry one second later."""
    ctx = asyncjobs.current_job()
    if ctx.retry_count == 0:
        raise ConnectionError(f"{url} did not answer")
    ctx.logger.info("webhook %s delivered on retry %d", url, ctx.retry_count)


@app.job
async def daily_report(day: dt.date) -> None:
    asyncjobs.current_job().logger.info("report for %s built", day.isoformat())
