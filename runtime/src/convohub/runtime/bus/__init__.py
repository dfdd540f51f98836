"""The event bus: the port and its two adapters (Kafka and embedded)."""

from convohub.runtime.bus.port import (
    BatchHandler,
    EventBus,
    LogRecord,
    Subscription,
    TopicPartition,
)

__all__ = [
    "BatchHandler",
    "EventBus",
    "LogRecord",
    "Subscription",
    "TopicPartition",
    "UnknownTopicError",
]
