"""OpenTelemetry for a ConvoHub process: providers from settings, and trace context on Kafka.

One customer message is one trace across services: the producer puts the W3C
`traceparent` of its current span into the record's headers (`inject_traceparent()`, passed
to `to_kafka_record(..., traceparent=...)`), and the consumer opens its processing span as a
child of it (`consume_span(record, name)`). The header format is the W3C TraceContext
propagator's, from opentelemetry, not ours.

`setup_telemetry(settings)` installs the tracer and meter providers as the process-wide
OpenTelemetry providers, once (OpenTelemetry allows setting them only once per process).
Spans and metrics are exported over OTLP/HTTP only when `otel_exporter_otlp_endpoint` is
set; without it nothing leaves the process and no connection is attempted.

Cost without an exporter. Per-request and per-event spans are only started when someone
will see them (`recording_tracer(...)` returns None otherwise): the HTTP middleware then
only carries a caller's `traceparent` along, and consumers pass the producer's
`traceparent` on to the events they cause, so a trace stays one trace at no cost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from convohub.contracts.kafka import ID_HEADER, TRACEPARENT_HEADER
from convohub.runtime.settings import RuntimeSettings

__all__ = [
    "Telemetry",
    "build_telemetry",
    "consume_span",
    "extract_context",
    "inject_traceparent",
    "producer_span",
    "recording_tracer",
    "setup_telemetry",
    "start_consume_span",
    "traceparent_of",
]

INSTRUMENTATION_NAME = "convohub.runtime"
_PROPAGATOR = TraceContextTextMapPropagator()
_log = logging.getLogger(__name__)


@dataclass
class Telemetry:
    """The tracer and meter providers of one process, and a tracer and meter from them."""

    service_name: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporting: bool = field(default=False)
    """Whether finished spans go anywhere (an OTLP endpoint or an added span processor)."""
    is_shut_down: bool = field(default=False)

    @property
    def tracer(self) -> Tracer:
        return self.tracer_provider.get_tracer(INSTRUMENTATION_NAME)

    @property
    def meter(self) -> otel_metrics.Meter:
        return self.meter_provider.get_meter(INSTRUMENTATION_NAME)

    def shutdown(self) -> None:
        """Flush what is pending to the exporters and stop them (idempotent)."""
        if self.is_shut_down:
            return
        self.is_shut_down = True
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def build_telemetry(
    settings: RuntimeSettings,
    *,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Providers for these settings, NOT installed process-wide (tests, tools).

    `span_processors` and `metric_readers` are added to the OTLP ones (for example an
    in-memory exporter in a test).
    """
    resource = Resource.create(
        {
            SERVICE_NAME: settings.service_name,
            "service.namespace": "convohub",
            "convohub.mode": settings.mode,
        }
    )
    endpoint = settings.otel_exporter_otlp_endpoint
    tracer_provider = TracerProvider(resource=resource)
    readers = list(metric_readers)
    if endpoint:
        base = endpoint.rstrip("/")
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        )
        readers.append(
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
        )
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry(
        service_name=settings.service_name,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        exporting=bool(endpoint) or bool(span_processors),
    )


_installed: Telemetry | None = None
_install_lock = threading.Lock()


def setup_telemetry(settings: RuntimeSettings) -> Telemetry:
    """Build the providers and install them process-wide; later calls return the same ones.

    Several services in one process (`convohub up`) share them. Raises RuntimeError after
    the installed telemetry was shut down: OpenTelemetry cannot replace global providers.
    """
    global _installed
    with _install_lock:
        if _installed is not None:
            if _installed.is_shut_down:
                raise RuntimeError("this process's telemetry was shut down and cannot restart")
            if _installed.service_name != settings.service_name:
                _log.info(
                    "telemetry already set up as %r; %r shares it",
                    _installed.service_name,
                    settings.service_name,
                )
            return _installed
        telemetry = build_telemetry(settings)
        trace.set_tracer_provider(telemetry.tracer_provider)
        otel_metrics.set_meter_provider(telemetry.meter_provider)
        if trace.get_tracer_provider() is not telemetry.tracer_provider:
            _log.warning("another tracer provider was installed first; spans go there")
        _installed = telemetry
        return telemetry


def spans_are_exported() -> bool:
    """True when this process's installed telemetry sends spans somewhere: hot paths skip
    per-event spans otherwise (they cost tens of microseconds each and nobody sees them)."""
    return _installed is not None and _installed.exporting and not _installed.is_shut_down


def recording_tracer(telemetry: Telemetry | None = None) -> Tracer | None:
    """The tracer per-request and per-event spans go to, or None when nobody would see
    them: `telemetry`'s when given (and exporting), else the installed process-wide one
    (when exporting)."""
    if telemetry is not None:
        return telemetry.tracer if telemetry.exporting and not telemetry.is_shut_down else None
    return trace.get_tracer(INSTRUMENTATION_NAME) if spans_are_exported() else None


def traceparent_of(span: Span) -> str | None:
    """The W3C `traceparent` naming `span` as the parent (None for an invalid span)."""
    return inject_traceparent(trace.set_span_in_context(span, Context()))


@contextmanager
def producer_span(
    name: str, tracer: Tracer | None, *, attributes: Mapping[str, str | int] | None = None
) -> Iterator[str | None]:
    """A PRODUCER span around a publish; yields the `traceparent` to put on the records.

    Without a tracer no span is started and the current context's `traceparent` (a
    caller's, carried by the HTTP middleware) is yielded, or None.
    """
    if tracer is None:
        yield inject_traceparent()
        return
    base: dict[str, str | int] = {"messaging.system": "kafka", "messaging.operation.type": "send"}
    with tracer.start_as_current_span(
        name, kind=SpanKind.PRODUCER, attributes={**base, **(attributes or {})}
    ):
        yield inject_traceparent()


def inject_traceparent(context: Context | None = None) -> str | None:
    """The W3C `traceparent` of the current span (or of `context`); None without a span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier.get(TRACEPARENT_HEADER)


def extract_context(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes]) -> Context:
    """The producer's trace context from record headers; an empty context when absent.

    An empty context makes the next span a new root, never a child of whatever span
    happens to be current in the consumer loop.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    carrier: dict[str, str] = {}
    for name, value in pairs:
        carrier.setdefault(name.lower(), value.decode("utf-8", errors="replace"))
    return _PROPAGATOR.extract(carrier, context=Context())


class _HasHeaders(Protocol):
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@contextmanager
def consume_span(
    source: _HasHeaders | Sequence[tuple[str, bytes]],
    name: str,
    *,
    tracer: Tracer | None = None,
) -> Iterator[Span]:
    """A CONSUMER span, current inside the block, child of the producer's span.

    `source` is a `LogRecord`, a `KafkaRecord` or bare headers. An exception leaving the
    block is recorded on the span and marks it failed, then propagates.
    """
    headers = source if isinstance(source, Sequence) else source.headers
    active_tracer = tracer or trace.get_tracer(INSTRUMENTATION_NAME)
    with active_tracer.start_as_current_span(
        name,
        context=extract_context(headers),
        kind=SpanKind.CONSUMER,
        attributes=_consume_attributes(source, headers),
    ) as span:
        yield span


def start_consume_span(source: _HasHeaders, name: str, tracer: Tracer) -> Span:
    """A started CONSUMER span, child of the producer's span, NOT made current: the
    consumer runner ends it once the record's batch committed (or failed), so the span
    covers the record's handling."""
    return tracer.start_span(
        name,
        context=extract_context(source.headers),
        kind=SpanKind.CONSUMER,
        attributes=_consume_attributes(source, source.headers),
    )


def _consume_attributes(
    source: object, headers: Sequence[tuple[str, bytes]]
) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
    }
    topic = getattr(source, "topic", None)
    if isinstance(topic, str):
        attributes["messaging.destination.name"] = topic
    partition = getattr(source, "partition", None)
    if isinstance(partition, int):
        attributes["messaging.destination.partition.id"] = str(partition)
    offset = getattr(source, "offset", None)
    if isinstance(offset, int):
        attributes["messaging.kafka.offset"] = offset
    event_id = next((value for key, value in headers if key == ID_HEADER), None)
    if event_id is not None:
        attributes["messaging.message.id"] = event_id.decode("utf-8", errors="replace")
    return attributes
