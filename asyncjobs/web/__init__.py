"""The web dashboard: an ASGI app (Starlette, Jinja2) over :mod:`asyncjobs.api`.

```python
from fastapi import FastAPI
import asyncjobs.web

api = FastAPI()
api.mount(
    "/jobs",
    asyncjobs.web.create_app(
        jobs_app,
        auth=asyncjobs.web.basic_auth("admin", os.environ["DASHBOARD_PASSWORD"]),
        secret=os.environ["DASHBOARD_SECRET"],
    ),
)
```

Needs the ``web`` extra (``pip install 'asyncjobs-redis[web]'``). See
docs/guides/dashboard.md.
"""

from ._aiohttp import mount_aiohttp as mount_aiohttp
from ._app import basic_auth as basic_auth
from ._app import create_app as create_app

__all__ = ["basic_auth", "create_app", "mount_aiohttp"]
