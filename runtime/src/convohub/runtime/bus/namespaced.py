"""A bus whose topic names live under a prefix, for several environments on one cluster.

`NamespacedBus(inner, "staging.")` publishes `convohub.conversation.v1` as
`staging.convohub.conversation.v1` and hands records back under their plain names, so
handlers and projections never see the prefix. The test suites use it to give every
test its own topics on the shared broker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from convohub.contracts import KafkaRecord
from convohub.runtime.bus.port import (
    BatchHandler,
    EventBus,
    LogRecord,
    Subscription,
    TopicPartition,
)


class NamespacedBus(EventBus):
    """Prefixes every topic name on the way in and strips it on the way out."""

    def __init__(self, inner: EventBus, prefix: str) -> None:
        if not prefix:
            raise ValueError("a namespace needs a non-empty prefix")
        self.inner = inner
        self.prefix = prefix

    def _outer(self, topic: str) -> str:
        return self.prefix + topic

    def _plain(self, topic: str) -> str:
        return topic.removeprefix(self.prefix)

    def _plain_record(self, record: LogRecord) -> LogRecord:
        return dataclasses.replace(record, topic=self._plain(record.topic))

    def _plain_offsets(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        return {(self._plain(t), p): o for (t, p), o in offsets.items()}

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        await self.inner.publish(
            [dataclasses.replace(r, topic=self._outer(r.topic)) for r in records]
        )

    async def subscribe(
        self,
        *,
        group: str,
        topics: Sequence[str],
        handler: BatchHandler,
        max_batch: int = 500,
    ) -> Subscription:
        async def plain_handler(records: Sequence[LogRecord]) -> None:
            await handler([self._plain_record(r) for r in records])

        subscription = await self.inner.subscribe(
            group=self.prefix + group,
            topics=[self._outer(t) for t in topics],
            handler=plain_handler,
            max_batch=max_batch,
        )
        return _NamespacedSubscription(subscription, self)

    async def partitions(self, topic: str) -> int:
        return await self.inner.partitions(self._outer(topic))

    async def end_offsets(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        return self._plain_offsets(await self.inner.end_offsets([self._outer(t) for t in topics]))

    async def committed(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
        outer = [self._outer(t) for t in topics]
        return self._plain_offsets(await self.inner.committed(self.prefix + group, outer))

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int = 500
    ) -> list[LogRecord]:
        records = await self.inner.read(self._outer(topic), partition, offset, max_records)
        return [self._plain_record(r) for r in records]


class _NamespacedSubscription(Subscription):
    def __init__(self, inner: Subscription, bus: NamespacedBus) -> None:
        self.inner = inner
        self.bus = bus

    def assignment(self) -> set[TopicPartition]:
        return {(self.bus._plain(t), p) for t, p in self.inner.assignment()}

    async def stop(self) -> None:
        await self.inner.stop()
