"""FastAPI + asyncjobs: one shared Redis pool for the app's life, jobs deferred from
request handlers, a clean close on shutdown.

Run the web app and a worker side by side, from the repository root:

```
pip install -e '.[web]'      # asyncjobs-redis with fastapi, uvicorn (from the checkout)
uvicorn examples.fastapi_app:api --port 8000
asyncjobs worker examples.tasks:app -q critical,2 -q default,1
curl -X POST localhost:8000/signups -H 'content-type: application/json' \\
     -d '{"user_id": 7, "email": "grace@example.com"}'
```

Both read the Redis URL from ``ASYNCJOBS_REDIS_URL`` (else ``REDIS_URL``, else
``redis://localhost:6379/0``). The jobs live in ``examples/tasks.py``, a module that
both the web app and the worker import; the worker never imports FastAPI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel

from examples.tasks import app, send_welcome_email


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    # Connect once at startup (a Redis that does not answer fails the start, not the
    # first request); every handler shares this pool; it is closed at shutdown.
    async with app:
        yield


api = FastAPI(title="asyncjobs example", lifespan=lifespan)


class Signup(BaseModel):
    user_id: int
    email: str


class Deferred(BaseModel):
    jid: str


@api.post("/signups", status_code=202)
async def signup(body: Signup) -> Deferred:
    """Defer the welcome email; answer at once with the job id."""
    jid = await send_welcome_email.defer(body.user_id, body.email)
    return Deferred(jid=jid)
