"""aiohttp + asyncjobs: one shared Redis pool for the app's life (``cleanup_ctx``), jobs
deferred from request handlers, a clean close on shutdown; optionally a worker embedded
in the same event loop.

Run the web app and a worker side by side, from the repository root:

```
pip install -e '.[web]'      # asyncjobs-redis with aiohttp (from the checkout)
python -m examples.aiohttp_app --port 8080
asyncjobs worker examples.tasks:app -q critical,2 -q default,1
curl -X POST localhost:8080/signups -H 'content-type: application/json' \\
     -d '{"user_id": 7, "email": "grace@example.com"}'
```

For a small deployment, ``python -m examples.aiohttp_app --embedded-worker`` runs the
jobs in the web process itself (``app.run_worker``), with no separate worker process.
Both read the Redis URL from ``ASYNCJOBS_REDIS_URL`` (else ``REDIS_URL``, else
``redis://localhost:6379/0``).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

import asyncjobs
from examples.tasks import app, send_welcome_email


async def asyncjobs_ctx(web_app: web.Application) -> AsyncIterator[None]:
    """Connect once at startup; every handler shares the pool; close it at cleanup."""
    async with app:
        yield


async def embedded_worker_ctx(web_app: web.Application) -> AsyncIterator[None]:
    """Run a worker in this event loop while the web app runs (embedded mode). At
    cleanup it stops fetching and lets running jobs finish, as ``asyncjobs worker`` does
    on SIGTERM."""
    async with app.run_worker(queues=[("critical", 2), ("default", 1)], concurrency=10):
        yield


async def signup(request: web.Request) -> web.Response:
    """Defer the welcome email; answer at once with the job id."""
    try:
        body: Any = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON body") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    try:
        # No schema layer here: the JSON object is the job's keyword arguments, and
        # defer() checks them against its signature and type hints (names, types,
        # missing ones), refusing them before anything reaches Redis.
        jid = await send_welcome_email.defer(**body)
    except asyncjobs.ArgumentError as exc:
        return web.json_response({"error": str(exc), "argument": exc.argument}, status=422)
    return web.json_response({"jid": jid}, status=202)


def make_app(*, embedded_worker: bool = False) -> web.Application:
    """The aiohttp application; ``embedded_worker=True`` also runs the jobs in-process."""
    web_app = web.Application()
    web_app.cleanup_ctx.append(asyncjobs_ctx)
    if embedded_worker:
        # After the pool: cleanup runs in reverse, so the worker stops first.
        web_app.cleanup_ctx.append(embedded_worker_ctx)
    web_app.router.add_post("/signups", signup)
    return web_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--embedded-worker", action="store_true")
    args = parser.parse_args()
    web.run_app(make_app(embedded_worker=args.embedded_worker), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
