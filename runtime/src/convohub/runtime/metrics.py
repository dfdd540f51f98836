"""The runtime's Prometheus metrics, in a registry of their own (exposed by `ops.py`).

Create one `RuntimeMetrics` at start-up and hand it to the consumer runner, the outbox
relay and the ops router. Each instance owns a fresh `CollectorRegistry` rather than the
library's global default, so two instances (two tests, say) never collide. Every name is
prefixed `convohub_`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from convohub.runtime.bus.port import LogRecord, TopicPartition

__all__ = ["NAMESPACE", "RuntimeMetrics"]

NAMESPACE = "convohub"
# From one event to a batch of hundreds committed in one transaction.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RuntimeMetrics:
    """The metrics every service exports, in `registry`.

    - `consumer_lag{group, topic, partition}`: records between the group's committed
      position and the end of the partition.
    - `handler_latency_seconds{group}`: time a batch handler took (histogram).
    - `events_processed_total{group, topic}`: records handled and committed.
    - `dead_letters_total{group, topic}`: records sent to the dead-letter topic.
    - `outbox_pending`: outbox rows committed but not yet published.
    - `events_published_total{topic}`: records the log acknowledged.
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
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.events_published_total = Counter(
            "events_published",
            "Records published and acknowledged by the log.",
            ["topic"],
            namespace=NAMESPACE,
            registry=self.registry,
        )

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
