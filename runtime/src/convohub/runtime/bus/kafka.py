"""The Kafka adapter of the event bus: FastStream over aiokafka.

`KafkaBus` keeps the delivery contract of `port.py` on a real Apache Kafka. One FastStream
`KafkaBroker` owns the connections; where FastStream 0.7 cannot say what the contract needs,
the adapter uses the aiokafka client FastStream runs underneath, and says why:

- Consuming is a FastStream batch subscriber (`batch=True`, `max_records`, `group_id`,
  `auto_offset_reset="earliest"`, `ack_policy=AckPolicy.MANUAL`, so no auto-commit and no
  acknowledge-first). The adapter commits and rewinds with the subscriber's aiokafka consumer:
  FastStream's `message.ack()` commits every consumed position of the consumer rather than
  the batch's own offsets, and commit and rewind must tolerate a partition revoked meanwhile.
  A rebalance listener waits for the batch in progress, so its commit lands before the
  partitions move (no duplicate on a clean handover).
- Publishing uses the aiokafka producer FastStream's broker connected (idempotent,
  `acks="all"`, both set on the broker). FastStream's `publish` takes headers as
  `dict[str, str]` and adds its own `correlation_id` and `content-type` headers, and its
  `publish_batch` sends to one partition; the adapter instead groups records per partition
  (Kafka's default partitioner, `partition_for`) and awaits every acknowledgement together.
  A large group fills aiokafka batches of its own (two to three times the rate of one
  `send` per record on this machine); a small one joins the producer's open batch, so
  concurrent one-event calls share a request (3.7 times the one-batch-per-call rate).
- Lookups use aiokafka directly: partition counts come from a full metadata request of an
  `AIOKafkaClient` (a request naming the topic would create it on a broker that
  auto-creates topics), end offsets and `read` from group-less consumers, and `committed`
  from the admin client FastStream's broker connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka import Topic as FastStreamTopic
from faststream.middlewares import AckPolicy

from convohub.contracts import KafkaRecord
from convohub.runtime.bus.partitioning import partition_for
from convohub.runtime.bus.port import (
    REDELIVERY_FIRST_BACKOFF,
    REDELIVERY_MAX_BACKOFF,
    BatchHandler,
    EventBus,
    LogRecord,
    Subscription,
    TopicPartition,
    UnknownTopicError,
    check_subscription,
)

log = structlog.get_logger(__name__)


class KafkaBus(EventBus):
    """The event bus on Apache Kafka (see the module doc for what runs where).

    `linger_ms` and `max_batch_bytes` tune the producer; `session_timeout_ms`,
    `heartbeat_interval_ms` and `max_poll_interval_ms` the group membership of every
    subscription (a shorter heartbeat makes rebalances quicker); `poll_timeout_ms` is how
    long an idle subscription waits for records per poll; `join_timeout_s` bounds how long
    `subscribe` waits for the member's first assignment.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "convohub",
        linger_ms: int = 5,
        max_batch_bytes: int = 256 * 1024,
        request_timeout_ms: int = 40_000,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        poll_timeout_ms: int = 100,
        join_timeout_s: float = 60.0,
        read_timeout_ms: int = 10_000,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self._broker_options: dict[str, Any] = {
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_bytes,
            "request_timeout_ms": request_timeout_ms,
        }
        self._member_options: dict[str, Any] = {
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "max_poll_interval_ms": max_poll_interval_ms,
        }
        self._poll_timeout_ms = poll_timeout_ms
        self._join_timeout_s = join_timeout_s
        self._read_timeout_ms = read_timeout_ms
        self._broker: KafkaBroker | None = None
        self._producer: AIOKafkaProducer | None = None
        self._metadata: AIOKafkaClient | None = None
        self._lookups: AIOKafkaConsumer | None = None
        self._subscriptions: set[_KafkaSubscription] = set()
        self._lifecycle = asyncio.Lock()
        self._keyless_turn = itertools.count()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lifecycle:
            if self._broker is not None:
                return
            broker = KafkaBroker(
                self.bootstrap_servers,
                **self._broker_options,
                # Handlers get LogRecords, not FastStream's dependency injection.
                apply_types=False,
                # A plain stdlib logger, so FastStream's lines go where the service's logging
                # (convohub.runtime.logs) sends everything; its per-batch lines only at DEBUG.
                logger=logging.getLogger(f"{__name__}.faststream"),
                log_level=logging.DEBUG,
            )
            await broker.start()
            metadata = AIOKafkaClient(
                bootstrap_servers=self.bootstrap_servers, client_id=f"{self.client_id}-metadata"
            )
            lookups = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=f"{self.client_id}-lookups",
                enable_auto_commit=False,
            )
            try:
                await metadata.bootstrap()
                await lookups.start()
            except BaseException:
                await metadata.close()
                await lookups.stop()
                await broker.stop()
                raise
            self._broker, self._producer = broker, _producer_of(broker)
            self._metadata, self._lookups = metadata, lookups

    async def stop(self) -> None:
        async with self._lifecycle:
            await asyncio.gather(*(s.stop() for s in list(self._subscriptions)))
            broker, metadata, lookups = self._broker, self._metadata, self._lookups
            self._broker = self._producer = self._metadata = self._lookups = None
            if lookups is not None:
                await lookups.stop()
            if metadata is not None:
                await metadata.close()
            if broker is not None:
                await broker.stop()  # flushes the producer

    def _require_broker(self) -> KafkaBroker:
        if self._broker is None:
            raise RuntimeError("KafkaBus is not started")
        return self._broker

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaBus is not started")
        return self._producer

    def _require_lookups(self) -> AIOKafkaConsumer:
        if self._lookups is None:
            raise RuntimeError("KafkaBus is not started")
        return self._lookups

    # -- publish -----------------------------------------------------------------------------

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        if not records:
            return
        producer = self._require_producer()
        partition_counts: dict[str, int] = {}
        for topic in {record.topic for record in records}:
            partition_counts[topic] = len(await producer.partitions_for(topic))
        # Grouped per partition in call order: records of one key keep their order.
        by_partition: dict[TopicPartition, list[KafkaRecord]] = defaultdict(list)
        for record in records:
            count = partition_counts[record.topic]
            if record.key is not None:
                partition = partition_for(record.key, count)
            else:
                partition = next(self._keyless_turn) % count
            by_partition[(record.topic, partition)].append(record)
        sent = await asyncio.gather(
            *(
                _send_partition(producer, topic, partition, batch)
                for (topic, partition), batch in by_partition.items()
            ),
            return_exceptions=True,
        )
        acknowledgements = [f for result in sent if isinstance(result, list) for f in result]
        acknowledged = await asyncio.gather(*acknowledgements, return_exceptions=True)
        for outcome in (*sent, *acknowledged):
            if isinstance(outcome, BaseException):
                raise outcome

    # -- consume -----------------------------------------------------------------------------

    async def subscribe(
        self,
        *,
        group: str,
        topics: Sequence[str],
        handler: BatchHandler,
        max_batch: int = 500,
    ) -> Subscription:
        """Join `group` and return once this member received its first (maybe empty) share."""
        check_subscription(topics, max_batch)
        subscription = _KafkaSubscription(
            self,
            group=group,
            topics=tuple(topics),
            handler=handler,
            max_batch=max_batch,
        )
        await subscription.join(self._join_timeout_s)
        self._subscriptions.add(subscription)
        return subscription

    # -- lookups -----------------------------------------------------------------------------

    async def _partitions_of(self, topic: str) -> list[int]:
        return [tp.partition for tp in await self._topic_partitions([topic])]

    async def _topic_partitions(self, topics: Sequence[str]) -> list[KafkaTopicPartition]:
        """Every partition of the topics, from one metadata request."""
        if self._metadata is None:
            raise RuntimeError("KafkaBus is not started")
        cluster = await self._metadata.fetch_all_metadata()
        found = []
        for topic in dict.fromkeys(topics):
            partitions = cluster.partitions_for_topic(topic)
            if not partitions:
                raise UnknownTopicError(f"unknown topic {topic!r}")
            found.extend(KafkaTopicPartition(topic, p) for p in sorted(partitions))
        return found

    async def partitions(self, topic: str) -> int:
        return len(await self._partitions_of(topic))

    async def end_offsets(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        partitions = await self._topic_partitions(topics)
        if not partitions:
            return {}
        ends = await self._require_lookups().end_offsets(partitions)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def committed(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
        partitions = await self._topic_partitions(topics)
        if not partitions:
            return {}
        admin = self._require_broker().config.admin_client
        offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
        # The broker answers -1 for a partition the group never committed.
        return {
            (tp.topic, tp.partition): meta.offset
            for tp, meta in offsets.items()
            if meta.offset >= 0
        }

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int = 500
    ) -> list[LogRecord]:
        """Records of one partition from `offset` on (from the log start if it was deleted)."""
        if offset < 0 or max_records < 1:
            raise ValueError("offset must be >= 0 and max_records >= 1")
        if partition not in await self._partitions_of(topic):
            raise UnknownTopicError(f"topic {topic!r} has no partition {partition}")
        tp = KafkaTopicPartition(topic, partition)
        end = (await self._require_lookups().end_offsets([tp]))[tp]
        if offset >= end:
            return []
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-reader",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await reader.start()
        try:
            reader.assign([tp])
            reader.seek(tp, offset)
            fetched = await reader.getmany(
                tp, timeout_ms=self._read_timeout_ms, max_records=max_records
            )
        finally:
            await reader.stop()
        return [_log_record(record) for record in fetched.get(tp, [])]


class _KafkaSubscription(Subscription, ConsumerRebalanceListener):
    """One member of a consumer group: a FastStream batch subscriber with manual commits."""

    def __init__(
        self,
        bus: KafkaBus,
        *,
        group: str,
        topics: tuple[str, ...],
        handler: BatchHandler,
        max_batch: int,
    ) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self._handler = handler
        self._failures = 0
        # Held while a batch is handled and committed; a revoke waits for it.
        self._batch_in_progress = asyncio.Lock()
        self._batch_task: asyncio.Task[Any] | None = None
        self._stop_requested = asyncio.Event()
        self._joined = asyncio.Event()
        self._leaving: asyncio.Future[None] | None = None
        self._subscriber = bus._require_broker().subscriber(
            # declare=False: topics are provisioned by `convohub topics apply`, never here.
            *(FastStreamTopic(topic, declare=False) for topic in topics),
            batch=True,
            group_id=group,
            max_records=max_batch,
            batch_timeout_ms=bus._poll_timeout_ms,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,
            listener=self,
            parser=self._parse,
            decoder=_raw_records,
            no_reply=True,
            persistent=False,
            include_in_schema=False,
            **bus._member_options,
        )
        self._subscriber(self._on_batch)

    # -- Subscription ------------------------------------------------------------------------

    def assignment(self) -> set[TopicPartition]:
        consumer = self._subscriber.consumer
        if consumer is None or self._leaving is not None:
            return set()
        return {(tp.topic, tp.partition) for tp in consumer.assignment()}

    async def join(self, timeout_s: float) -> None:
        await self._subscriber.start()
        try:
            async with asyncio.timeout(timeout_s):
                await self._joined.wait()
        except TimeoutError:
            await self._subscriber.stop()
            raise TimeoutError(
                f"consumer group {self.group!r} gave no assignment within {timeout_s} s"
            ) from None

    async def stop(self) -> None:
        if self._leaving is None:
            self._stop_requested.set()
            self._leaving = asyncio.ensure_future(self._leave())
        if self._batch_task is asyncio.current_task():
            # Stopped from inside the handler: the member leaves once this batch committed.
            return
        await asyncio.shield(self._leaving)

    async def _leave(self) -> None:
        try:
            async with self._batch_in_progress:  # the batch in progress finishes and commits
                pass
            await self._subscriber.stop()  # ends the poll loop, leaves the group
        finally:
            self.bus._subscriptions.discard(self)

    # -- ConsumerRebalanceListener (awaited by aiokafka around every rebalance) --------------

    async def on_partitions_revoked(self, revoked: set[KafkaTopicPartition]) -> None:
        # aiokafka hands out no new batch meanwhile; let the current one commit first.
        async with self._batch_in_progress:
            pass

    async def on_partitions_assigned(self, assigned: set[KafkaTopicPartition]) -> None:
        self._joined.set()  # FastStream logs the assignment itself

    # -- the batch loop (FastStream calls `_on_batch` once per `getmany`) --------------------

    async def _parse(self, raw: tuple[ConsumerRecord, ...]) -> KafkaMessage:
        # Our own parser: FastStream's decodes every header value as UTF-8 text.
        first = raw[0]
        return KafkaMessage(
            raw,
            raw,
            consumer=self._subscriber.consumer,
            message_id=f"{first.topic}-{first.partition}-{first.offset}",
            correlation_id=f"{first.topic}-{first.partition}-{first.offset}",
        )

    async def _on_batch(self, raw: tuple[ConsumerRecord, ...]) -> None:
        """Handle, then commit; on failure rewind and back off. Never raises to FastStream."""
        consumer = self._subscriber.consumer
        if not raw or consumer is None or self._stop_requested.is_set():
            return  # not committed: the group's next member starts at these records again
        records = [_log_record(record) for record in raw]
        async with self._batch_in_progress:
            self._batch_task = asyncio.current_task()
            try:
                await self._handler(records)
            except Exception as error:
                self._failures += 1
                _rewind(consumer, records)
                failed_with: Exception | None = error
            else:
                self._failures = 0
                await self._commit(consumer, records)
                failed_with = None
            finally:
                self._batch_task = None
        if failed_with is not None:
            backoff = min(
                REDELIVERY_FIRST_BACKOFF * 2 ** (self._failures - 1), REDELIVERY_MAX_BACKOFF
            )
            log.warning(
                "handler failed, redelivering",
                group=self.group,
                records=len(records),
                attempt=self._failures,
                backoff=backoff,
                error=repr(failed_with),
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._stop_requested.wait()

    async def _commit(self, consumer: AIOKafkaConsumer, records: Sequence[LogRecord]) -> None:
        next_offsets = {
            KafkaTopicPartition(record.topic, record.partition): record.offset + 1
            for record in records  # ascending within a partition: the last one wins
        }
        try:
            await consumer.commit(next_offsets)
        except KafkaError as error:
            # The group rebalanced under this batch: the new owner may deliver it again,
            # which the projection's own bookkeeping recognises.
            log.warning(
                "commit failed, records may be redelivered",
                group=self.group,
                offsets=sorted((tp.topic, tp.partition, o) for tp, o in next_offsets.items()),
                error=repr(error),
            )


def _raw_records(message: KafkaMessage) -> tuple[ConsumerRecord, ...]:
    """FastStream decoder: hand the handler the records as they came (no JSON decoding)."""
    return message.raw_message  # type: ignore[return-value]


def _log_record(record: ConsumerRecord) -> LogRecord:
    return LogRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,  # None: a tombstone
        headers=tuple(record.headers),
        timestamp_ms=record.timestamp,
    )


def _rewind(consumer: AIOKafkaConsumer, records: Sequence[LogRecord]) -> None:
    """Seek each partition of the batch back to the batch's first record of it."""
    first_offsets: dict[KafkaTopicPartition, int] = {}
    for record in records:
        first_offsets.setdefault(KafkaTopicPartition(record.topic, record.partition), record.offset)
    for tp, offset in first_offsets.items():
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile: its new owner rewinds
            consumer.seek(tp, offset)


_OWN_BATCH_FROM = 16
"""Records of one partition in one call from which the call fills batches of its own."""


async def _send_partition(
    producer: AIOKafkaProducer, topic: str, partition: int, records: Sequence[KafkaRecord]
) -> list[asyncio.Future[Any]]:
    """Queue the records of one partition; the acks to await.

    A few records join the partition's open batch in the producer's accumulator, so the
    records of concurrent small calls (one webhook, one command) travel in one request. Many
    records fill batches of their own, which is cheaper per record than one `send` each.
    """
    if len(records) < _OWN_BATCH_FROM:
        return [
            await producer.send(
                topic, value=r.value, key=r.key, partition=partition, headers=list(r.headers)
            )
            for r in records
        ]
    acknowledgements: list[asyncio.Future[Any]] = []
    batch = producer.create_batch()
    for record in records:
        appended = batch.append(
            key=record.key, value=record.value, timestamp=None, headers=list(record.headers)
        )
        if appended is None:  # the batch is full: send it and start the next one
            acknowledgements.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            # An empty batch takes any first record; the broker rejects one too large.
            batch.append(
                key=record.key, value=record.value, timestamp=None, headers=list(record.headers)
            )
    acknowledgements.append(await producer.send_batch(batch, topic, partition=partition))
    return acknowledgements


def _producer_of(broker: KafkaBroker) -> AIOKafkaProducer:
    """The aiokafka producer FastStream's broker connected with our acks and idempotence.

    FastStream 0.7 has no public accessor for it; it sits behind the broker's
    `AioKafkaFastProducer` (`config.producer`) in a `RealProducer` state (`_producer`).
    """
    producer = getattr(getattr(broker.config.producer, "_producer", None), "producer", None)
    if not isinstance(producer, AIOKafkaProducer):
        raise RuntimeError(
            "cannot reach FastStream's aiokafka producer (has FastStream's layout changed?)"
        )
    return producer
