"""The HTTP server span and the request-duration histogram (runtime/http_telemetry.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.staticfiles import StaticFiles

from convohub.runtime.http import Problem, install_problem_handlers
from convohub.runtime.http_telemetry import HttpTelemetryMiddleware
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.settings import RuntimeSettings
from convohub.runtime.telemetry import Telemetry, build_telemetry, inject_traceparent

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> Iterator[Telemetry]:
    built = build_telemetry(
        RuntimeSettings(service_name="http-test"), span_processors=[SimpleSpanProcessor(exporter)]
    )
    yield built
    built.shutdown()


def app_for(metrics: RuntimeMetrics, tracer: trace.Tracer | None, tmp_path: Path) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(HttpTelemetryMiddleware, metrics=metrics, tracer=lambda: tracer)
    seen: dict[str, str | None] = {}
    app.state.seen = seen

    @app.get("/v1/items/{item_id}")
    async def item(item_id: str) -> dict[str, str | None]:
        if item_id == "missing":
            raise Problem(404, "not_found", "no such item")
        seen["traceparent"] = inject_traceparent()
        return {"id": item_id}

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    (tmp_path / "index.html").write_text("<p>hi</p>")
    app.mount("/static", StaticFiles(directory=tmp_path))
    return app


async def get(app: FastAPI, path: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers=headers)


def count(metrics: RuntimeMetrics, route: str, status: str) -> float | None:
    return metrics.registry.get_sample_value(
        "convohub_http_request_duration_seconds_count",
        {"method": "GET", "route": route, "status": status},
    )


async def test_a_server_span_per_request_named_by_its_route_template(
    telemetry: Telemetry, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    metrics = RuntimeMetrics()
    app = app_for(metrics, telemetry.tracer, tmp_path)
    assert (await get(app, "/v1/items/42")).status_code == 200
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET /v1/items/{item_id}"
    assert span.attributes["http.route"] == "/v1/items/{item_id}"
    assert span.attributes["url.path"] == "/v1/items/42"
    assert span.attributes["http.response.status_code"] == 200
    assert span.parent is None
    # The route ran inside the span: what it publishes carries the span's context.
    published = app.state.seen["traceparent"]
    assert published.split("-")[2] == format(span.context.span_id, "016x")
    assert count(metrics, "/v1/items/{item_id}", "200") == 1


async def test_a_request_without_traceparent_is_a_new_trace_whatever_span_is_current(
    telemetry: Telemetry, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    """The server is not a child of a span that happens to be current where it runs (an
    in-process caller, a test): only a caller's `traceparent` header makes it one."""
    app = app_for(RuntimeMetrics(), telemetry.tracer, tmp_path)
    with telemetry.tracer.start_as_current_span("ambient") as ambient:
        assert (await get(app, "/v1/items/1")).status_code == 200
        assert (await get(app, "/v1/items/2", traceparent=CALLER)).status_code == 200
    first, second = (s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert first.parent is None
    assert first.context.trace_id != ambient.get_span_context().trace_id
    assert second.parent is not None
    assert format(second.context.trace_id, "032x") == CALLER.split("-")[1]


async def test_an_exception_is_a_failed_span_and_a_500_in_the_histogram(
    telemetry: Telemetry, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    metrics = RuntimeMetrics()
    app = app_for(metrics, telemetry.tracer, tmp_path)
    response = await get(app, "/v1/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert count(metrics, "/v1/boom", "500") == 1


async def test_labels_stay_bounded_404s_and_mounts(
    telemetry: Telemetry, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    metrics = RuntimeMetrics()
    app = app_for(metrics, telemetry.tracer, tmp_path)
    assert (await get(app, "/v1/items/missing")).status_code == 404
    assert (await get(app, "/no/such/thing/123")).status_code == 404
    assert (await get(app, "/static/index.html")).status_code == 200
    assert count(metrics, "/v1/items/{item_id}", "404") == 1
    assert count(metrics, "unmatched", "404") == 1
    assert count(metrics, "/static/{path}", "200") == 1
    exposition = metrics.exposition()[0].decode()
    assert "/no/such/thing" not in exposition
    assert "index.html" not in exposition


async def test_without_an_exporter_no_span_but_the_callers_trace_goes_on(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    metrics = RuntimeMetrics()
    app = app_for(metrics, None, tmp_path)
    assert (await get(app, "/v1/items/7", traceparent=CALLER)).status_code == 200
    assert app.state.seen["traceparent"] == CALLER, "events carry the caller's trace"
    assert (await get(app, "/v1/items/8")).status_code == 200
    assert app.state.seen["traceparent"] is None
    assert not exporter.get_finished_spans()
    assert count(metrics, "/v1/items/{item_id}", "200") == 2


async def test_a_callers_trace_is_continued(
    telemetry: Telemetry, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    app = app_for(RuntimeMetrics(), telemetry.tracer, tmp_path)
    await get(app, "/v1/items/1", traceparent=CALLER)
    (span,) = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == CALLER.split("-")[1]
    assert format(span.parent.span_id, "016x") == CALLER.split("-")[2]
