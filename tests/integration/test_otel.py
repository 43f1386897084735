"""OpenTelemetry tracing (asyncjobs.otel): a FastAPI request, a defer, a worker run,
one trace, exported by the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import asyncjobs
from asyncjobs.otel import instrument
from tests.conftest import running, wait_for

pytestmark = pytest.mark.timeout(60)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


@pytest.fixture
def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
async def tapp(
    redis_url: str, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> AsyncIterator[asyncjobs.App]:
    application = asyncjobs.App(redis_url)
    instrument(application, tracer_provider=traced[0])
    yield application
    await application.aclose()


def server_spans(app: ASGIApp, provider: TracerProvider) -> ASGIApp:
    """A stand-in for an HTTP server instrumentation: a SERVER span per request."""
    tracer = provider.get_tracer("test")

    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        with tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}", kind=SpanKind.SERVER
        ):
            await app(scope, receive, send)

    return wrapped


async def test_request_defer_and_run_are_one_trace(
    tapp: asyncjobs.App, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced
    seen: list[str] = []

    @tapp.job(name="ship", queue="orders")
    async def ship(order: int) -> None:
        # The run is inside the consumer span.
        seen.append(format(trace.get_current_span().get_span_context().trace_id, "032x"))

    api = FastAPI()

    @api.post("/orders/{order}")
    async def create(order: int) -> dict[str, str | None]:
        return {"jid": await ship.defer(order)}

    transport = httpx.ASGITransport(app=server_spans(api, provider))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        resp = await client.post("/orders/7")
    assert resp.status_code == 200
    jid = resp.json()["jid"]
    async with running(tapp.worker(queues=["orders"])):
        await wait_for(lambda: bool(seen))
        await wait_for(lambda: len(exporter.get_finished_spans()) == 3)
    spans = {s.kind: s for s in exporter.get_finished_spans()}
    request, producer, consumer = (
        spans[SpanKind.SERVER],
        spans[SpanKind.PRODUCER],
        spans[SpanKind.CONSUMER],
    )
    trace_ids = {s.context.trace_id for s in (request, producer, consumer)}
    assert len(trace_ids) == 1  # one trace
    assert seen == [format(request.context.trace_id, "032x")]
    assert producer.parent is not None and producer.parent.span_id == request.context.span_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert producer.name == "publish orders" and consumer.name == "process orders"
    for span, op in ((producer, "publish"), (consumer, "process")):
        attrs = dict(span.attributes or {})
        assert attrs["messaging.system"] == "asyncjobs"
        assert attrs["messaging.destination.name"] == "orders"
        assert attrs["messaging.message.id"] == jid
        assert attrs["messaging.operation"] == op
        assert attrs["asyncjobs.job"] == "ship"
    assert dict(consumer.attributes or {})["asyncjobs.retry_count"] == 0
    assert consumer.status.status_code != StatusCode.ERROR


async def test_a_failure_is_recorded_on_the_consumer_span(
    tapp: asyncjobs.App, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _, exporter = traced

    class PaymentDeclined(Exception):
        pass

    @tapp.job(name="charge", retry=0)
    async def charge() -> None:
        raise PaymentDeclined("card refused")

    await charge.defer()

    def consumer_done() -> bool:
        return any(s.kind == SpanKind.CONSUMER for s in exporter.get_finished_spans())

    async with running(tapp.worker()):
        await wait_for(consumer_done)
    (consumer,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert consumer.status.status_code == StatusCode.ERROR
    assert "PaymentDeclined" in (consumer.status.description or "")
    (event,) = consumer.events
    assert event.name == "exception"
    assert str(dict(event.attributes or {})["exception.type"]).endswith("PaymentDeclined")


async def test_the_trace_context_travels_in_meta(tapp: asyncjobs.App, redis_url: str) -> None:
    import redis.asyncio as aioredis

    @tapp.job(name="noop")
    async def noop() -> None:
        pass

    await noop.defer()
    client = aioredis.Redis.from_url(redis_url)
    try:
        raw = await client.lindex("{asyncjobs}:queue:default", 0)
    finally:
        await client.aclose()
    assert raw is not None
    import json

    meta = json.loads(raw)["meta"]
    version, trace_id, span_id, flags = meta["traceparent"].split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16
