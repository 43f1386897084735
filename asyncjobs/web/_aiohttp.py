"""Serving the dashboard (an ASGI app) inside an aiohttp application.

aiohttp speaks no ASGI: this bridges one request at a time, reading the request body
whole and sending the response whole, which the dashboard's pages and small JSON need
(no streaming, no websockets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web
    from starlette.types import ASGIApp, Message


def mount_aiohttp(app: web.Application, prefix: str, asgi_app: ASGIApp) -> None:
    """Serve ``asgi_app`` (``asyncjobs.web.create_app(jobs_app)``) under ``prefix``
    (such as ``/jobs``) of the aiohttp application ``app``; its links carry the
    prefix."""
    from aiohttp import web

    prefix = "/" + prefix.strip("/")

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": f"{request.version.major}.{request.version.minor}",
            "method": request.method,
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.raw_path.split("?", 1)[0].encode(),
            "root_path": prefix,
            "query_string": request.query_string.encode(),
            "headers": [(k.lower(), v) for k, v in request.raw_headers],
            "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
            "server": (request.host.split(":")[0], request.url.port or 80),
            "state": {},
        }
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        status = 500
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.extend(
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in message.get("headers", [])
                    if k.lower() != b"content-length"  # aiohttp sets its own
                )
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await asgi_app(scope, receive, send)
        response = web.Response(status=status, body=b"".join(chunks))
        for k, v in headers:
            response.headers.add(k, v)
        return response

    app.router.add_route("*", prefix, handler)
    app.router.add_route("*", prefix + "/{tail:.*}", handler)
