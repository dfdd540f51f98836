"""One customer message is one trace: the five services run on a backend with an in-memory
span exporter, one signed SMS comes in through ingest's Twilio webhook, and the spans form
one tree rooted at the webhook's HTTP server span, through ingest's publish, into the
consumers of router, sla, crm and feedback (and on into what they emitted, through their
outboxes). Runs on the embedded log and (integration) on Kafka with PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from convohub.contracts.topics import CONVERSATION
from convohub.ingest.adapters.signatures import twilio_signature
from convohub.runtime.config import load_config
from convohub.runtime.service import available_services, load_service_factory
from convohub.runtime.settings import RuntimeSettings
from convohub.runtime.telemetry import Telemetry, build_telemetry
from tests.support.hub import BACKENDS, RunningHub, backend_for, eventually, running_hub

EXAMPLE = Path(__file__).resolve().parents[1] / "convohub.example.yaml"
WEBHOOK = "/v1/webhooks/twilio/sms-main"
WEBHOOK_ROUTE = "/v1/webhooks/twilio/{channel_id}"
HANDLER_GROUPS = ("router.routing", "sla.clocks", "crm.customers", "feedback.conversations")
SECOND_HOPS = {("router.routing", "sla.clocks"), ("crm.customers", "feedback.conversations")}


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_for(request.param, request, tmp_path) as backend:
        yield backend


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> AsyncIterator[Telemetry]:
    """Providers of this test's own (never the process-wide ones), exporting in memory."""
    built = build_telemetry(
        RuntimeSettings(service_name="convohub-test", otel_exporter_otlp_endpoint=None),
        span_processors=[SimpleSpanProcessor(exporter)],
    )
    yield built
    built.shutdown()


@pytest.fixture
async def hub(backend: Any, telemetry: Telemetry) -> AsyncIterator[RunningHub]:
    config = load_config(EXAMPLE, {})
    services = [load_service_factory(name)(config) for name in sorted(available_services())]
    assert {s.name for s in services} >= {"ingest", "router", "sla", "crm", "feedback"}
    async with running_hub(backend, services, config, telemetry=telemetry) as running:
        yield running


async def post_sms(hub: RunningHub, sid: str, text: str) -> None:
    params = [
        ("MessageSid", sid),
        ("AccountSid", "ACdevaccount"),
        ("From", "+14155550188"),
        ("To", "+15005550006"),
        ("Body", text),
        ("NumMedia", "0"),
    ]
    signature = twilio_signature("dev-sms-auth-token", "http://127.0.0.1:8080" + WEBHOOK, params)
    response = await hub.client.post(
        WEBHOOK, data=dict(params), headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 200, response.text


def webhook_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = [
        span
        for span in exporter.get_finished_spans()
        if span.kind == SpanKind.SERVER and span.attributes.get("http.route") == WEBHOOK_ROUTE
    ]
    assert len(spans) == 1, [span.name for span in exporter.get_finished_spans()]
    return spans[0]


def group_of(span: ReadableSpan) -> str:
    return span.name.removesuffix(" process")


async def test_one_inbound_message_is_one_trace_through_every_service(
    hub: RunningHub, exporter: InMemorySpanExporter
) -> None:
    await post_sms(hub, "SM00000000000000000000000000trace1", "where is my parcel 7Q4?")
    root = webhook_span(exporter)
    trace_id = root.context.trace_id

    def in_trace() -> list[ReadableSpan]:
        return [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]

    def hops(spans: list[ReadableSpan]) -> set[tuple[str, str]]:
        """(emitting group, consuming group) of events a handler emitted through its
        outbox and another group consumed."""
        consumers = {s.context.span_id: s for s in spans if s.kind == SpanKind.CONSUMER}
        return {
            (group_of(consumers[s.parent.span_id]), group_of(s))
            for s in spans
            if s.parent is not None and s.parent.span_id in consumers
        }

    async def every_handler_joined() -> list[ReadableSpan] | None:
        spans = in_trace()
        groups = {group_of(s) for s in spans if s.kind == SpanKind.CONSUMER}
        return spans if groups >= set(HANDLER_GROUPS) and hops(spans) >= SECOND_HOPS else None

    spans = await eventually(every_handler_joined, "router, sla, crm and feedback spans")

    # The root: the webhook's server span, named by its route template; no parent.
    assert root.parent is None
    assert root.name == f"POST {WEBHOOK_ROUTE}"
    assert root.attributes["http.response.status_code"] == 200
    # A tree: every other span's parent is a span of this trace.
    by_id = {span.context.span_id: span for span in spans}
    for span in spans:
        if span is not root:
            assert span.parent is not None, span.name
            assert span.parent.span_id in by_id, span.name
    # Ingest's publish is a child of the request; the consumers of what it published are
    # children of the publish.
    (emit,) = [s for s in spans if s.name == "ingest emit"]
    assert emit.kind == SpanKind.PRODUCER
    assert emit.parent is not None
    assert emit.parent.span_id == root.context.span_id
    first_hop = [s for s in spans if s.parent and s.parent.span_id == emit.context.span_id]
    assert {group_of(s) for s in first_hop} >= set(HANDLER_GROUPS)
    for span in first_hop:
        assert span.kind == SpanKind.CONSUMER
        assert span.attributes["messaging.destination.name"] == CONVERSATION.name
        assert span.end_time >= span.start_time
    # Events the handlers emitted went through their outboxes and were consumed as
    # grandchildren: the trace continues past the first hop.
    # (`every_handler_joined` waited for these: routing.v1 and customer.v1 events the
    # router and crm emitted, consumed by sla and feedback in the same trace.)
    assert hops(spans) >= SECOND_HOPS

    # Every consumer span of an event this message caused on conversation.v1 is in the
    # trace (no handler started a trace of its own for it).
    caused = {event.id for event in await hub.events(CONVERSATION.name)}
    assert caused
    for span in exporter.get_finished_spans():
        if span.kind == SpanKind.CONSUMER and span.attributes.get("messaging.message.id") in caused:
            assert span.context.trace_id == trace_id, span.name


EMBEDDED_ONLY = pytest.mark.parametrize("backend", ["embedded"], indirect=True)
"""For what happens at the HTTP edge only: the same in both modes."""


@EMBEDDED_ONLY
async def test_two_messages_are_two_traces(hub: RunningHub, exporter: InMemorySpanExporter) -> None:
    await post_sms(hub, "SM00000000000000000000000000trace2", "first question")
    first = webhook_span(exporter).context.trace_id
    exporter.clear()
    await post_sms(hub, "SM00000000000000000000000000trace3", "second question")
    second = webhook_span(exporter).context.trace_id
    assert first != second


@EMBEDDED_ONLY
async def test_a_callers_traceparent_is_continued(
    hub: RunningHub, exporter: InMemorySpanExporter
) -> None:
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    response = await hub.client.get(
        "/healthz", headers={"traceparent": f"00-{caller_trace}-b7ad6b7169203331-01"}
    )
    assert response.status_code == 200
    (span,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert format(span.context.trace_id, "032x") == caller_trace
    assert span.name == "GET /healthz"


@EMBEDDED_ONLY
async def test_an_agents_reply_is_one_trace_from_the_request_into_the_consumers(
    hub: RunningHub, exporter: InMemorySpanExporter
) -> None:
    await post_sms(hub, "SM00000000000000000000000000trace4", "can someone answer?")
    supervisor = hub.auth("dev-acme-supervisor-key-0001")

    async def conversation() -> str | None:
        response = await hub.client.get(
            "/v1/conversations", params={"channel": "sms"}, headers=supervisor
        )
        items = response.json()["items"] if response.status_code == 200 else []
        return items[0]["conversation_id"] if items else None

    conversation_id = await eventually(conversation, "the desk to show the conversation")
    exporter.clear()
    response = await hub.client.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"text": "On it!"},
        headers=supervisor,
    )
    assert response.status_code == 202, response.text
    (request,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert request.name == "POST /v1/conversations/{conversation_id}/messages"

    async def consumed_in_the_same_trace() -> list[ReadableSpan]:
        return [
            span
            for span in exporter.get_finished_spans()
            if span.kind == SpanKind.CONSUMER
            and span.context.trace_id == request.context.trace_id
            and span.parent is not None
            and span.parent.span_id == request.context.span_id
        ]

    spans = await eventually(consumed_in_the_same_trace, "consumers of the reply in its trace")
    assert {group_of(span) for span in spans}
