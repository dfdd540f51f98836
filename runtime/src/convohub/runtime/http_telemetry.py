"""The HTTP server span and the request-duration histogram of every request.

`HttpTelemetryMiddleware` is a plain ASGI middleware (rather than
opentelemetry-instrumentation-asgi) because it does two things at one point: a SERVER span
per request, named by the route template once routing matched (`POST
/v1/channels/{channel_id}/messages`), continuing a caller's W3C `traceparent`; and
`convohub_http_request_duration_seconds{method, route, status}` in the runtime's
Prometheus registry, which OpenTelemetry's instrumentation would record as an OTLP metric
only.

Without a recording tracer (no exporter) no span is started: a caller's `traceparent` is
only made current, so the events the request publishes carry the caller's trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convohub.runtime.metrics import UNMATCHED_ROUTE, RuntimeMetrics

__all__ = ["HttpTelemetryMiddleware", "route_template"]

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = (b"traceparent", b"tracestate")


def route_template(scope: Scope, root_path: str = "") -> str:
    """The path template of the route that served `scope` (after routing), or
    `UNMATCHED_ROUTE`. `root_path` is the scope's root path before routing: what routing
    added to it are the prefixes of the mounts the request went through."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    mounted = str(scope.get("root_path", ""))[len(root_path) :]
    if isinstance(route, Mount) or (mounted and not isinstance(path, str)):
        return f"{mounted}/{{path}}"  # a mounted app that is no router (static files)
    if not isinstance(path, str):
        return UNMATCHED_ROUTE
    return f"{mounted}{path}"


class HttpTelemetryMiddleware:
    """See the module doc. `tracer` is asked per request (telemetry is set up after the
    app is built); `metrics` receives the duration of every HTTP request."""

    def __init__(
        self, app: ASGIApp, *, metrics: RuntimeMetrics, tracer: Callable[[], Tracer | None]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        root_path = str(scope.get("root_path", ""))
        status = 500  # what the client gets when the app raises before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name in _TRACE_HEADERS
        }
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        tracer = self.tracer()
        try:
            if tracer is None:
                token = otel_context.attach(parent) if parent is not None else None
                try:
                    await self.app(scope, receive, send_with_status)
                finally:
                    if token is not None:
                        otel_context.detach(token)
            else:
                with tracer.start_as_current_span(
                    method,
                    # A request is a new trace unless its caller sent one: never a child
                    # of whatever span happens to be current where the server runs.
                    context=parent if parent is not None else otel_context.Context(),
                    kind=SpanKind.SERVER,
                    attributes={
                        "http.request.method": method,
                        "url.path": scope.get("path", ""),
                        "url.scheme": scope.get("scheme", "http"),
                    },
                ) as span:
                    try:
                        await self.app(scope, receive, send_with_status)
                    finally:
                        route = route_template(scope, root_path)
                        span.update_name(f"{method} {route}")
                        span.set_attribute("http.route", route)
                        span.set_attribute("http.response.status_code", status)
                        if status >= 500:
                            span.set_status(StatusCode.ERROR)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.record_request(method, route_template(scope, root_path), status, seconds)
