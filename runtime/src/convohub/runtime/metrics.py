"""The runtime's Prometheus metrics, in a registry of their own (exposed by `ops.py`).

Create one `RuntimeMetrics` at start-up and hand it to the consumer runner, the outbox
relay and the ops router. Each instance owns a fresh `CollectorRegistry` rather than the
library's global default, so two instances (two tests, say) never collide. Every name is
prefixed `convohub_`.

Services add their own metrics to the same registry with `gauge(...)` / `counter(...)`
(the router's queue lengths, the SLA service's clocks), named `convohub_<service>_...`,
and keep gauges fresh in `Service.refresh_metrics` (the host calls it periodically).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase

from convohub.contracts import KafkaRecord
from convohub.runtime.bus.port import LogRecord, TopicPartition

__all__ = ["NAMESPACE", "RuntimeMetrics"]

NAMESPACE = "convohub"
_Metric = TypeVar("_Metric", Gauge, Counter)
# From one event to a batch of hundreds committed in one transaction.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED_ROUTE = "unmatched"
"""The `route` label of a request no route matched (a 404): never the raw path, whose
values are unbounded."""


class RuntimeMetrics:
    """The metrics every service exports, in `registry`.

    - `consumer_lag{group, topic, partition}`: records between the group's committed
      position and the end of the partition.
    - `handler_latency_seconds{group}`: time a batch handler took (histogram).
    - `events_processed_total{group, topic}`: records handled and committed.
    - `dead_letters_total{group, topic}`: records sent to the dead-letter topic.
    - `outbox_pending{database}`: outbox rows committed but not yet published, per service
      database (not `service`: Prometheus targets carry that label).
    - `events_published_total{topic}`: records the log acknowledged from the outbox
      relays (ingest's webhooks publish directly and are counted by their HTTP metric).
    - `dead_letter_queue_records`: records ever written to the dead-letter topic (the sum
      of its end offsets; every process reports the same number: aggregate with `max`).
    - `http_request_duration_seconds{method, route, status}`: HTTP requests by route
      template (`/v1/conversations/{conversation_id}`), histogram.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.consumer_lag = Gauge(
            "consumer_lag",
            "Records between the consumer group's committed offset and the partition's end.",
            ["group", "topic", "partition"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.handler_latency_seconds = Histogram(
            "handler_latency_seconds",
            "Seconds a batch handler took, its transaction included.",
            ["group"],
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events_processed_total = Counter(
            "events_processed",
            "Records handled and committed by a consumer group.",
            ["group", "topic"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.dead_letters_total = Counter(
            "dead_letters",
            "Records a consumer group gave up on and sent to the dead-letter topic.",
            ["group", "topic"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "outbox_pending",
            "Outbox rows committed but not yet acknowledged by the log.",
            ["database"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.dead_letter_queue_records = Gauge(
            "dead_letter_queue_records",
            "Records ever written to the dead-letter topic (the sum of its end offsets).",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.http_request_duration_seconds = Histogram(
            "http_request_duration_seconds",
            "Seconds from a request's arrival to its response, by route template and status.",
            ["method", "route", "status"],
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._added: dict[str, MetricWrapperBase] = {}
        self._gauge_labels: dict[str, set[tuple[str, ...]]] = {}
        self.events_published_total = Counter(
            "events_published",
            "Records published and acknowledged by the log.",
            ["topic"],
            namespace=NAMESPACE,
            registry=self.registry,
        )

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        """A service's gauge `convohub_<name>` in this registry (the same one when asked
        again, so a service restarted in the same process does not register it twice)."""
        return self._add(Gauge, name, documentation, labels)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A service's counter `convohub_<name>_total` in this registry (see `gauge`)."""
        return self._add(Counter, name, documentation, labels)

    def _add(
        self, kind: type[_Metric], name: str, documentation: str, labels: Sequence[str]
    ) -> _Metric:
        existing = self._added.get(name)
        if existing is not None:
            if not isinstance(existing, kind):
                raise ValueError(f"metric {name!r} is already a {type(existing).__name__}")
            return existing
        metric = kind(
            name, documentation, list(labels), namespace=NAMESPACE, registry=self.registry
        )
        self._added[name] = metric
        return metric

    def set_gauge(self, gauge: Gauge, values: Mapping[tuple[str, ...], float]) -> None:
        """Set `gauge` to exactly `values` (label values -> value): label sets set before
        and missing now drop to 0 (a queue that emptied shows 0, not its last length)."""
        key = gauge._name
        previous = self._gauge_labels.get(key, set())
        for labels, value in values.items():
            gauge.labels(*labels).set(value)
        for labels in previous - set(values):
            gauge.labels(*labels).set(0)
        self._gauge_labels[key] = previous | set(values)

    def record_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Observe one HTTP request (`route` is the template, or `UNMATCHED_ROUTE`)."""
        self.http_request_duration_seconds.labels(
            method=method, route=route, status=str(status)
        ).observe(seconds)

    def record_published(self, records: Sequence[KafkaRecord]) -> None:
        """Count records the log acknowledged, per topic (an outbox relay's batch)."""
        per_topic: dict[str, int] = {}
        for record in records:
            per_topic[record.topic] = per_topic.get(record.topic, 0) + 1
        for topic, count in per_topic.items():
            self.events_published_total.labels(topic=topic).inc(count)

    def record_batch(self, group: str, records: Sequence[LogRecord], seconds: float) -> None:
        """Count a committed batch per topic and observe how long its handler took."""
        self.handler_latency_seconds.labels(group=group).observe(seconds)
        per_topic: dict[str, int] = {}
        for record in records:
            per_topic[record.topic] = per_topic.get(record.topic, 0) + 1
        for topic, count in per_topic.items():
            self.events_processed_total.labels(group=group, topic=topic).inc(count)

    def record_lag(
        self,
        group: str,
        end_offsets: Mapping[TopicPartition, int],
        committed: Mapping[TopicPartition, int],
    ) -> None:
        """Set the group's lag per partition from `EventBus.end_offsets` and `.committed`.

        A partition the group never committed counts from offset 0 (it starts at the
        earliest record).
        """
        for (topic, partition), end in end_offsets.items():
            lag = max(end - committed.get((topic, partition), 0), 0)
            self.consumer_lag.labels(group=group, topic=topic, partition=str(partition)).set(lag)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the text format the `Accept` header asks for, and its content type.

        Prometheus text format 0.0.4 by default; OpenMetrics when asked for.
        """
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
