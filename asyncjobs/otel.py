"""OpenTelemetry tracing: a producer span at ``defer``, a consumer span around the run,
in one trace.

The client middleware starts a PRODUCER span (``publish <queue>``) and injects its W3C
trace context (``traceparent``, ``tracestate``) into the payload's ``meta``; the server
middleware extracts it and runs the job inside a CONSUMER span (``process <queue>``),
its child. Both follow OpenTelemetry's messaging semantic conventions:
``messaging.system`` = ``asyncjobs``, ``messaging.destination.name`` = the queue,
``messaging.message.id`` = the jid, ``messaging.operation`` = ``publish`` or
``process``; with ``asyncjobs.job`` (the job's name) and ``asyncjobs.retry_count``. A
job that raises has the exception recorded on its span and an ERROR status.

Needs the otel extra (``pip install 'asyncjobs-redis[otel]'``):

```python
from asyncjobs.otel import instrument

instrument(app)  # both middleware, with the global tracer provider
```

Add it in the process that defers (a web app) and in the workers: the same module
that builds the app is the place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "asyncjobs.otel needs OpenTelemetry: pip install 'asyncjobs-redis[otel]'"
    ) from exc

import msgspec

from ._version import __version__

if TYPE_CHECKING:
    from ._job import JobContext
    from ._middleware import ClientNext, ServerNext
    from ._payload import Payload
    from ._registry import Registry

__all__ = ["ClientTracing", "ServerTracing", "instrument"]

SYSTEM = "asyncjobs"
_PROPAGATOR = TraceContextTextMapPropagator()
_CARRIER_KEYS = ("traceparent", "tracestate")


def _tracer(provider: TracerProvider | None) -> Tracer:
    return trace.get_tracer("asyncjobs", __version__, tracer_provider=provider)


def _attributes(queue: str, jid: str, job: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": queue,
        "messaging.message.id": jid,
        "messaging.operation": operation,
        "messaging.operation.name": operation,
        "asyncjobs.job": job,
    }


class ClientTracing:
    """Client middleware: a PRODUCER span per ``defer``, its context in ``meta``."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = _tracer(tracer_provider)

    async def __call__(self, payload: Payload, call_next: ClientNext) -> str | None:
        with self.tracer.start_as_current_span(
            f"publish {payload.queue}",
            kind=SpanKind.PRODUCER,
            attributes=_attributes(payload.queue, payload.jid, payload.job, "publish"),
        ):
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)
            if carrier:
                meta = {k: v for k, v in payload.meta.items() if k not in _CARRIER_KEYS}
                payload = msgspec.structs.replace(payload, meta={**meta, **carrier})
            return await call_next(payload)


class ServerTracing:
    """Server middleware: the run inside a CONSUMER span, child of the producer's."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = _tracer(tracer_provider)

    async def __call__(self, ctx: JobContext, call_next: ServerNext) -> Any:
        carrier = {k: str(ctx.meta[k]) for k in _CARRIER_KEYS if k in ctx.meta}
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        attributes = _attributes(ctx.queue, ctx.jid, ctx.name, "process")
        attributes["asyncjobs.retry_count"] = ctx.retry_count
        span = self.tracer.start_span(
            f"process {ctx.queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await call_next()
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            otel_context.detach(token)
            span.end()


def instrument(app: Registry, *, tracer_provider: TracerProvider | None = None) -> None:
    """Add both middleware to ``app``: client tracing first (outermost), server tracing
    first, so every other middleware runs inside the spans. ``tracer_provider``: the
    global one by default."""
    app.client_middleware.prepend(ClientTracing(tracer_provider))
    app.server_middleware.prepend(ServerTracing(tracer_provider))
