"""The event bus port: what every service needs from the log, whatever the mode.

Two adapters implement it: `kafka.KafkaBus` (FastStream over aiokafka, for the
distributed mode) and `embedded.EmbeddedBus` (a durable log in SQLite, for one process on
a laptop). Handlers never see which one runs them.

Delivery contract of `subscribe`, which both adapters keep (the scenario suite checks it):

- A batch holds records of the subscribed topics from partitions this member owns. Within
  a partition, offsets ascend and continue where the previous batch of that partition
  ended; records of one key are on one partition, so they arrive in publish order.
- When the handler returns, the adapter commits, for each partition in the batch, the
  offset after the batch's last record (the group's next position). Offsets are never
  committed before the handler returned: delivery is at least once.
- When the handler raises, nothing is committed; the adapter rewinds each partition of the
  batch to the batch's first record and redelivers after a backoff (capped exponential,
  0.1 s doubling to 5 s). Bounded retries and dead-lettering are the consumer runner's
  job, above the port.
- Members of one group split the partitions; when a member joins or leaves, partitions
  move, and the new owner starts from the group's committed offset (or from the earliest
  record when the group has none). A record may then be delivered twice; projections
  recognise the repeat through their own bookkeeping.
- `Subscription.stop()` lets the batch in progress finish and commit, then leaves the group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from convohub.contracts import Envelope, KafkaRecord, to_kafka_record

TopicPartition = tuple[str, int]

REDELIVERY_FIRST_BACKOFF = 0.1
REDELIVERY_MAX_BACKOFF = 5.0
"""Seconds a bus waits before redelivering a batch whose handler raised: doubling from
the first to the max, and back to the first after a success."""


class UnknownTopicError(LookupError):
    """The topic (or partition) does not exist on the log."""


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record as read from the log. `value` is None for a tombstone (a key deleted from
    a compacted topic; see `convohub.contracts.kafka.tombstone`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    def header(self, name: str) -> bytes | None:
        """The first header of that name, if any."""
        return next((value for key, value in self.headers if key == name), None)

    @property
    def topic_partition(self) -> TopicPartition:
        return (self.topic, self.partition)

    @property
    def is_tombstone(self) -> bool:
        """A null value: the key is deleted (compacted topics)."""
        return self.value is None


BatchHandler = Callable[[Sequence[LogRecord]], Awaitable[None]]


def check_subscription(topics: Sequence[str], max_batch: int) -> None:
    """The arguments every adapter's `subscribe` refuses, with the same errors."""
    if not topics:
        raise ValueError("subscribe to at least one topic")
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")


class Subscription(ABC):
    """A running member of a consumer group."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns right now."""

    @abstractmethod
    async def stop(self) -> None:
        """Finish and commit the batch in progress, then leave the group."""


class EventBus(ABC):
    """Publish to and subscribe from the log."""

    @abstractmethod
    async def start(self) -> None:
        """Connect (idempotent)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop every subscription of this bus, flush and disconnect."""

    @abstractmethod
    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        """Append records and return once the log acknowledged all of them.

        Kafka: idempotent producer, `acks=all`. Records of one call that share a key keep
        their order. A record whose value is None goes out as a tombstone (a null value).
        Raises when any record could not be acknowledged.
        """

    async def publish_events(
        self, events: Sequence[Envelope[Any]], *, traceparent: str | None = None
    ) -> None:
        """Validate, bind and publish events (see `publish`)."""
        await self.publish([to_kafka_record(event, traceparent=traceparent) for event in events])

    @abstractmethod
    async def subscribe(
        self,
        *,
        group: str,
        topics: Sequence[str],
        handler: BatchHandler,
        max_batch: int = 500,
    ) -> Subscription:
        """Join `group` on `topics` and deliver batches to `handler` (see the module doc)."""

    @abstractmethod
    async def partitions(self, topic: str) -> int:
        """How many partitions a topic has."""

    @abstractmethod
    async def end_offsets(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """For each partition of the topics, the offset the next record will get."""

    @abstractmethod
    async def committed(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """The group's committed next offset per partition (absent where none)."""

    @abstractmethod
    async def read(
        self, topic: str, partition: int, offset: int, max_records: int = 500
    ) -> list[LogRecord]:
        """Records of one partition from `offset` on, without joining a group (may be empty)."""
