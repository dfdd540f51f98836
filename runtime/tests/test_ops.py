"""The operator endpoints: liveness, readiness with named failing checks, Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from convohub.runtime.bus.port import LogRecord
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.ops import ops_router


def client_for(
    metrics: RuntimeMetrics,
    checks: Mapping[str, Callable[[], Awaitable[bool]]],
    *,
    check_timeout: float = 2.0,
) -> TestClient:
    app = FastAPI()
    app.include_router(ops_router(metrics, checks, check_timeout=check_timeout))
    return TestClient(app)


async def passing() -> bool:
    return True


async def failing() -> bool:
    return False


async def raising() -> bool:
    raise ConnectionRefusedError("postgresql://user:secret@db/hub refused")


async def hanging() -> bool:
    await asyncio.Event().wait()  # never set: only the timeout ends it
    return True


def record(topic: str, offset: int) -> LogRecord:
    return LogRecord(
        topic=topic, partition=0, offset=offset, key=b"k", value=b"{}", headers=(), timestamp_ms=0
    )


def test_healthz_answers_ok_whatever_the_dependencies() -> None:
    client = client_for(RuntimeMetrics(), {"database": failing})
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_when_every_check_passes() -> None:
    client = client_for(RuntimeMetrics(), {"database": passing, "bus": passing})
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "bus": "ok"}}


def test_readyz_with_no_checks_is_ready() -> None:
    assert client_for(RuntimeMetrics(), {}).get("/readyz").status_code == 200


def test_readyz_is_503_naming_the_failing_checks() -> None:
    client = client_for(
        RuntimeMetrics(),
        {"bus": passing, "database": failing, "cache": raising, "search": hanging},
        check_timeout=0.05,
    )

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["database", "cache", "search"]
    assert body["checks"] == {
        "bus": "ok",
        "database": "failed",
        "cache": "raised ConnectionRefusedError",
        "search": "timed out after 0.05s",
    }
    assert "secret" not in response.text


def test_metrics_expose_every_runtime_metric_after_use() -> None:
    metrics = RuntimeMetrics()
    metrics.record_batch("router", [record("convohub.conversation.v1", 0)] * 3, seconds=0.02)
    metrics.record_lag(
        "router",
        end_offsets={("convohub.conversation.v1", 0): 10, ("convohub.conversation.v1", 1): 4},
        committed={("convohub.conversation.v1", 0): 7},
    )
    metrics.dead_letters_total.labels(group="router", topic="convohub.conversation.v1").inc()
    metrics.outbox_pending.labels(database="router").set(5)
    metrics.events_published_total.labels(topic="convohub.routing.v1").inc(2)

    response = client_for(metrics, {}).get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    conversation = ("topic", "convohub.conversation.v1")
    assert samples[("convohub_events_processed_total", (("group", "router"), conversation))] == 3
    assert samples[("convohub_dead_letters_total", (("group", "router"), conversation))] == 1
    assert samples[("convohub_handler_latency_seconds_count", (("group", "router"),))] == 1
    assert samples[("convohub_outbox_pending", (("database", "router"),))] == 5
    assert samples[("convohub_events_published_total", (("topic", "convohub.routing.v1"),))] == 2
    lag = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "convohub_consumer_lag"
    }
    assert lag == {
        (("group", "router"), ("partition", "0"), conversation): 3,
        (("group", "router"), ("partition", "1"), conversation): 4,
    }


def test_metrics_speak_openmetrics_when_asked() -> None:
    client = client_for(RuntimeMetrics(), {})
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_two_instances_do_not_share_a_registry() -> None:
    first, second = RuntimeMetrics(), RuntimeMetrics()
    first.dead_letter_queue_records.set(9)
    assert second.registry.get_sample_value("convohub_dead_letter_queue_records") == 0
    assert first.registry.get_sample_value("convohub_dead_letter_queue_records") == 9
