"""The Prometheus metrics an on-call needs, scraped from `/metrics` of the five services:
consumer lag, handler latency, dead letters, outbox backlog, router queue lengths, SLA
clocks by state and breaches, HTTP latency by route template and status. And the Grafana
dashboard and alerting rules under deploy/observability are valid PromQL (parsed with
promql-parser, the Prometheus grammar in Rust; `promtool` is not installed here) and query
only metrics, and match only labels, the hub exports.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from convohub.contracts import KafkaRecord
from convohub.contracts.topics import CONVERSATION
from convohub.runtime.config import load_config
from convohub.runtime.service import ManualClock, available_services, load_service_factory
from tests.scenarios.backends import EmbeddedBackend
from tests.support.hub import RunningHub, eventually, running_hub
from tests.test_tracing import WEBHOOK_ROUTE, post_sms

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "convohub.example.yaml"
DASHBOARD = REPO / "deploy/observability/grafana/convohub-dashboard.json"
ALERTS = REPO / "deploy/observability/prometheus/alerts.yml"
GROUPS = ("router.routing", "sla.clocks", "crm.customers", "feedback.conversations")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def hub(tmp_path: Path, clock: ManualClock) -> AsyncIterator[RunningHub]:
    backend = EmbeddedBackend(tmp_path)
    config = load_config(EXAMPLE, {})
    services = [load_service_factory(name)(config) for name in sorted(available_services())]
    try:
        async with running_hub(backend, services, config, clock=clock) as running:
            yield running
    finally:
        await backend.close()


async def scrape(hub: RunningHub) -> Samples:
    """`/metrics` after the host refreshed its gauges, as {(name, labels): value}."""
    await hub.host.refresh_metrics()
    response = await hub.client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def matching(samples: Samples, name: str, **labels: str) -> dict[tuple, float]:
    return {
        key: value
        for key, value in samples.items()
        if key[0] == name and set(labels.items()) <= set(key[1])
    }


async def caught_up(hub: RunningHub) -> Samples | None:
    samples = await scrape(hub)
    for group in GROUPS:
        lag = matching(samples, "convohub_consumer_lag", group=group)
        if not lag or any(lag.values()):
            return None
    return samples


async def test_metrics_show_lag_latency_dead_letters_queues_sla_and_http(
    hub: RunningHub, clock: ManualClock
) -> None:
    await post_sms(hub, "SM00000000000000000000000000metric", "my order never came")
    assert (await hub.client.get("/no/such/path")).status_code == 404
    assert (await hub.client.get("/v1/customers/lookup")).status_code == 401

    samples = await eventually(lambda: caught_up(hub), "every group to catch up")

    # Consumer lag per group and partition (0: caught up), handler latency per group.
    for group in GROUPS:
        assert matching(samples, "convohub_consumer_lag", group=group, topic=CONVERSATION.name)
        (count,) = matching(samples, "convohub_handler_latency_seconds_count", group=group).values()
        assert count >= 1
    # HTTP latency by route template and status; a 404 is `unmatched`, never its path.
    webhook = matching(
        samples,
        "convohub_http_request_duration_seconds_count",
        method="POST",
        route=WEBHOOK_ROUTE,
        status="200",
    )
    assert list(webhook.values()) == [1.0]
    assert matching(
        samples, "convohub_http_request_duration_seconds_count", route="unmatched", status="404"
    )
    assert matching(
        samples,
        "convohub_http_request_duration_seconds_count",
        route="/v1/customers/lookup",
        status="401",
    )
    assert not [key for key in samples if "/no/such/path" in str(key)]
    # Outbox backlog per service, events the relays published.
    assert set(
        dict(key[1])["database"] for key in matching(samples, "convohub_outbox_pending")
    ) >= {
        "router",
        "sla",
        "crm",
        "feedback",
        "ingest",
    }
    assert sum(matching(samples, "convohub_events_published_total").values()) > 0
    # The router's queue: the conversation waits (nobody is online in the example).
    queued = matching(samples, "convohub_router_queue_length", tenant="acme")
    assert sum(queued.values()) == 1
    assert matching(samples, "convohub_router_agents", tenant="acme", presence="offline")
    # The SLA clock runs; nothing is breached yet.
    running = matching(samples, "convohub_sla_open_clocks", tenant="acme", state="running")
    assert sum(running.values()) >= 1
    assert sum(matching(samples, "convohub_sla_open_clocks", state="breached").values()) == 0

    # Two days later the clock is past its target and its breach timer fires.
    clock.advance(days=2)

    async def breached() -> Samples | None:
        samples = await scrape(hub)
        fired = matching(samples, "convohub_sla_timers_fired_total", tenant="acme", kind="breach")
        return samples if sum(fired.values()) >= 1 else None

    samples = await eventually(breached, "the breach timer to fire")
    assert sum(matching(samples, "convohub_sla_open_clocks", state="breached").values()) >= 1
    waits = matching(samples, "convohub_router_oldest_queued_seconds", tenant="acme")
    assert max(waits.values()) >= 2 * 24 * 3600

    # A record no handler can read is dead-lettered by every group: the DLQ grows.
    assert samples[("convohub_dead_letter_queue_records", ())] == 0
    await hub.bus.publish([KafkaRecord(CONVERSATION.name, b"conversation-x", b"not json", ())])

    async def dead_lettered() -> Samples | None:
        samples = await scrape(hub)
        return samples if samples[("convohub_dead_letter_queue_records", ())] >= 4 else None

    samples = await eventually(dead_lettered, "the dead letters to reach the DLQ")
    for group in GROUPS:
        assert matching(samples, "convohub_dead_letters_total", group=group) == {
            ("convohub_dead_letters_total", (("group", group), ("topic", CONVERSATION.name))): 1.0
        }


def selectors(expression: str) -> list[tuple[str, set[str]]]:
    """The metric and the label names of every vector selector of a PromQL expression,
    parsed with Prometheus's grammar (a syntax error raises ValueError)."""
    found: list[tuple[str, set[str]]] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            labels = {matcher.name for matcher in node.matchers.matchers} - {"__name__"}
            found.append((node.name, labels))

    promql_parser.walk(promql_parser.parse(expression), visit)
    assert found, f"no metric in {expression!r}"
    return found


def queried_metrics(expression: str) -> set[str]:
    return {name for name, _ in selectors(expression)}


def alert_rules() -> list[dict]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]


async def test_the_dashboard_and_the_alerts_query_only_metrics_the_hub_exports(
    hub: RunningHub, clock: ManualClock
) -> None:
    await post_sms(hub, "SM00000000000000000000000000dashbd", "hello")
    await hub.bus.publish([KafkaRecord(CONVERSATION.name, b"conversation-y", b"{", ())])
    clock.advance(days=2)

    async def everything_seen() -> Samples | None:
        samples = await scrape(hub)
        names = {name for name, _ in samples}
        wanted = {"convohub_dead_letters_total", "convohub_sla_timers_fired_total"}
        return samples if wanted <= names else None

    samples = await eventually(everything_seen, "dead letters, breaches")
    labels: dict[str, set[str]] = {}
    for name, label_pairs in samples:
        labels.setdefault(name, set()).update(label for label, _ in label_pairs)
    queries = dashboard_queries()
    assert len(queries) >= 12
    for expression in queries + [rule["expr"] for rule in alert_rules()]:
        for metric, matched in selectors(expression):
            assert metric in labels, f"{expression!r} queries {metric}, which the hub lacks"
            unknown = matched - labels[metric]
            assert not unknown, f"{expression!r} matches {metric} on labels {unknown} it lacks"


def test_the_alerting_rules_cover_what_on_call_needs() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for rule in rules.values():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
    covered = {
        "convohub_consumer_lag",
        "convohub_dead_letters_total",
        "convohub_dead_letter_queue_records",
        "convohub_sla_timers_fired_total",
        "convohub_http_request_duration_seconds_count",
    }
    used = set().union(*(queried_metrics(rule["expr"]) for rule in rules.values()))
    assert covered <= used
    assert 'status=~"5.."' in " ".join(rule["expr"] for rule in rules.values())
