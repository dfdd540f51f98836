"""Traces across Kafka headers, and structured logs with trace ids and no personal data."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from convohub.contracts.catalogue import example_event
from convohub.contracts.kafka import to_kafka_record
from convohub.runtime.bus.port import LogRecord
from convohub.runtime.logs import REDACTED, configure_logging
from convohub.runtime.settings import RuntimeSettings
from convohub.runtime.telemetry import (
    Telemetry,
    build_telemetry,
    consume_span,
    extract_context,
    inject_traceparent,
    recording_tracer,
)

MESSAGE_RECEIVED = "convohub.conversation.message_received.v1"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> Iterator[Telemetry]:
    """Providers of our own, not the process-wide ones, so tests stay independent."""
    built = build_telemetry(
        RuntimeSettings(service_name="test-service", otel_exporter_otlp_endpoint=None),
        span_processors=[SimpleSpanProcessor(exporter)],
    )
    yield built
    built.shutdown()


def finished(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    spans = [span for span in exporter.get_finished_spans() if span.name == name]
    assert len(spans) == 1, f"expected one finished span {name!r}, got {spans}"
    return spans[0]


def as_log_record(headers: tuple[tuple[str, bytes], ...]) -> LogRecord:
    return LogRecord(
        topic="convohub.conversation.v1",
        partition=3,
        offset=41,
        key=b"conv-7f3a",
        value=b"{}",
        headers=headers,
        timestamp_ms=0,
    )


# --- traces -------------------------------------------------------------------------------


def test_a_consumer_span_continues_the_producer_trace_through_the_headers(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    with telemetry.tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER):
        traceparent = inject_traceparent()
    assert traceparent is not None
    record = to_kafka_record(example_event(MESSAGE_RECEIVED), traceparent=traceparent)
    delivered = as_log_record(record.headers)

    with consume_span(delivered, "handle message", tracer=telemetry.tracer):
        pass

    producer = finished(exporter, "publish")
    consumer = finished(exporter, "handle message")
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.destination.name"] == "convohub.conversation.v1"
    assert consumer.attributes["messaging.kafka.offset"] == 41
    assert consumer.attributes["messaging.message.id"] == example_event(MESSAGE_RECEIVED).id


def test_the_traceparent_is_the_w3c_header_of_the_current_span(telemetry: Telemetry) -> None:
    with telemetry.tracer.start_as_current_span("work") as span:
        traceparent = inject_traceparent()
        context = span.get_span_context()
    flags = f"{context.trace_flags:02x}"  # sampled, and "random trace id" in newer SDKs
    assert traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"


def test_without_a_span_there_is_no_traceparent() -> None:
    assert inject_traceparent() is None


def test_a_record_without_traceparent_starts_a_new_trace(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    with (
        telemetry.tracer.start_as_current_span("consumer loop"),
        consume_span([("ce_type", b"x")], "handle", tracer=telemetry.tracer),
    ):
        pass

    loop = finished(exporter, "consumer loop")
    handle = finished(exporter, "handle")
    assert handle.parent is None
    assert handle.context.trace_id != loop.context.trace_id


def test_a_garbled_traceparent_is_ignored() -> None:
    context = extract_context([("traceparent", b"not-a-trace-context")])
    assert not trace.get_current_span(context).get_span_context().is_valid


def test_an_exception_marks_the_consumer_span_failed(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    with (
        pytest.raises(RuntimeError),
        consume_span((), "handle", tracer=telemetry.tracer),
    ):
        raise RuntimeError("handler failed")
    assert finished(exporter, "handle").status.status_code is StatusCode.ERROR


def test_the_resource_names_the_service_and_nothing_is_exported_without_endpoint(
    telemetry: Telemetry,
) -> None:
    assert telemetry.tracer_provider.resource.attributes["service.name"] == "test-service"
    assert telemetry.exporting, "an added span processor sees the spans"
    assert recording_tracer(telemetry) is not None
    bare = build_telemetry(RuntimeSettings(service_name="bare", otel_exporter_otlp_endpoint=None))
    assert not bare.exporting
    assert recording_tracer(bare) is None, "no per-request or per-event spans nobody sees"
    bare.shutdown()


class _Collector(BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector that records the paths it was sent to."""

    received: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.received = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", _Collector.received
    server.shutdown()
    server.server_close()


def test_with_an_endpoint_spans_and_metrics_go_to_the_collector_over_otlp_http(
    collector: tuple[str, list[str]],
) -> None:
    endpoint, received = collector
    built = build_telemetry(
        RuntimeSettings(otel_exporter_otlp_endpoint=endpoint, service_name="exporting")
    )
    assert built.exporting
    with built.tracer.start_as_current_span("work"):
        built.meter.create_counter("work_done").add(1)

    built.shutdown()  # flushes both exporters
    built.shutdown()  # idempotent

    assert sorted(received) == ["/v1/metrics", "/v1/traces"]


_INSTALL_ONCE = """
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from convohub.runtime.settings import RuntimeSettings
from convohub.runtime.telemetry import consume_span, inject_traceparent, setup_telemetry

first = setup_telemetry(RuntimeSettings(service_name="first"))
again = setup_telemetry(RuntimeSettings(service_name="second"))
assert again is first
assert trace.get_tracer_provider() is first.tracer_provider

exporter = InMemorySpanExporter()
first.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
with trace.get_tracer("test").start_as_current_span("publish"):
    traceparent = inject_traceparent()
assert traceparent is not None
with consume_span([("traceparent", traceparent.encode())], "handle"):
    pass
spans = {span.name: span for span in exporter.get_finished_spans()}
assert spans["handle"].context.trace_id == spans["publish"].context.trace_id
print("ok")
"""


def test_setup_installs_the_providers_once_and_consume_span_uses_them() -> None:
    # In a process of its own: installing is process-wide and cannot be undone, and the
    # tests after this one build their own providers.
    done = subprocess.run(
        [sys.executable, "-c", _INSTALL_ONCE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# --- logs ---------------------------------------------------------------------------------


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """JSON logs into a buffer; the logging and structlog setup are restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging(RuntimeSettings(service_name="router", log_level="INFO"), stream=buffer)
    yield buffer
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_log_line_is_json_with_trace_ids_and_bound_context(
    log_output: io.StringIO, telemetry: Telemetry
) -> None:
    structlog.contextvars.bind_contextvars(tenant="acme", conversation_id="conv-7f3a")
    with telemetry.tracer.start_as_current_span("handle") as span:
        structlog.get_logger("convohub.router").info("assigned", agent_id="agent-42")
        context = span.get_span_context()

    (line,) = lines(log_output)
    assert line["event"] == "assigned"
    assert line["level"] == "info"
    assert line["service"] == "router"
    assert line["logger"] == "convohub.router"
    assert line["tenant"] == "acme"
    assert line["conversation_id"] == "conv-7f3a"
    assert line["agent_id"] == "agent-42"
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert isinstance(line["timestamp"], str)


def test_no_trace_ids_without_a_span(log_output: io.StringIO) -> None:
    structlog.get_logger().info("idle")
    (line,) = lines(log_output)
    assert "trace_id" not in line


def test_message_text_and_personal_keys_are_masked(log_output: io.StringIO) -> None:
    structlog.get_logger().info(
        "received",
        text="我的订单还没有发货",
        customer_email="li.wei@example.com",
        customer={"phone": "+8613800138000", "segment": "vip"},
        conversation_id="conv-7f3a",
    )

    (line,) = lines(log_output)
    assert line["text"] == REDACTED
    assert line["customer_email"] == REDACTED
    assert line["customer"] == {"phone": REDACTED, "segment": "vip"}
    assert line["conversation_id"] == "conv-7f3a"
    assert "发货" not in log_output.getvalue()


def test_an_envelope_with_personal_data_is_redacted(log_output: io.StringIO) -> None:
    event = example_event(MESSAGE_RECEIVED)
    document = event.model_dump(mode="json")
    address = document["data"]["customer"]["address"]

    structlog.get_logger().info("event as document", event_document=document)
    structlog.get_logger().info("event as model", event_model=event)

    as_document, as_model = lines(log_output)
    for logged in (as_document["event_document"], as_model["event_model"]):
        assert isinstance(logged, dict)
        assert logged["data"]["content"]["text"] == REDACTED
        assert logged["data"]["customer"]["address"] == REDACTED
        assert logged["data"]["conversation_id"] == document["data"]["conversation_id"]
        assert logged["subject"] == document["subject"]
    assert address not in log_output.getvalue()


def test_an_unknown_event_type_hides_the_whole_payload(log_output: io.StringIO) -> None:
    structlog.get_logger().info("odd", document={"type": "x.unknown.v1", "data": {"a": "b"}})
    (line,) = lines(log_output)
    assert line["document"] == {"type": "x.unknown.v1", "data": REDACTED}


def test_standard_library_logs_take_the_same_path(
    log_output: io.StringIO, telemetry: Telemetry
) -> None:
    structlog.contextvars.bind_contextvars(tenant="acme")
    with telemetry.tracer.start_as_current_span("handle") as span:
        logging.getLogger("aiokafka").warning("rebalance in %s", "group-1")
        trace_id = f"{span.get_span_context().trace_id:032x}"

    (line,) = lines(log_output)
    assert line["event"] == "rebalance in group-1"
    assert line["level"] == "warning"
    assert line["logger"] == "aiokafka"
    assert line["service"] == "router"
    assert line["tenant"] == "acme"
    assert line["trace_id"] == trace_id


def test_lines_below_the_level_are_dropped(log_output: io.StringIO) -> None:
    structlog.get_logger().debug("noise")
    logging.getLogger("x").debug("noise")
    assert log_output.getvalue() == ""
