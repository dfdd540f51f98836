"""The consumer runner: log records in, projection applied exactly once, poison set aside.

For each batch the bus delivers, the runner

1. decodes and validates every record (an invalid one never reaches the projection: it is
   dead-lettered at once, stage `decode` or `validate`);
2. in one unit of work, locks the group's stored positions of the batch's partitions,
   skips records below them (a redelivery) and events whose id the group already applied
   (a re-publish), applies the rest, advances the positions, remembers the applied ids
   and commits (projection writes, bookkeeping and emitted events together);
3. when applying fails with a processing error, retries the batch with backoff a bounded
   number of times, then applies the records one by one so that only the poison records
   are dead-lettered (`convohub.dlq.v1`, through the outbox, in the same transaction
   that moves the position past them) and the partition keeps flowing.

Infrastructure errors (the database or the network is down) are not the event's fault:
they propagate to the bus, which rewinds and redelivers until the infrastructure is back,
and nothing is dead-lettered for them.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from opentelemetry.trace import Span, StatusCode, Tracer
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from convohub.contracts import Envelope, InvalidEventError, derived_event_id, from_kafka_record
from convohub.contracts.envelope import new_event
from convohub.contracts.events.deadletter import (
    DeadLetterError,
    DeadLetterOrigin,
    DeadLetterStage,
    DeadLetterValueEncoding,
    EventDeadLettered,
)
from convohub.contracts.kafka import (
    ID_HEADER,
    TRACEPARENT_HEADER,
    TRACEPARENT_PATTERN,
    TYPE_HEADER,
)
from convohub.runtime.bus.port import EventBus, LogRecord, Subscription, TopicPartition
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.store import ProjectionStore, UnitOfWork
from convohub.runtime.telemetry import recording_tracer, start_consume_span, traceparent_of

log = structlog.get_logger(__name__)

REDRIVE_HEADER = "convohub_redrive_group"
"""Set on a record redriven from the DLQ: only the named consumer group applies it."""

DEAD_LETTER_TYPE = EventDeadLettered.event_type
UNKNOWN_TENANT = "unknown"
LAG_UPDATE_SECONDS = 5.0
"""How often a runner refreshes its consumer-lag gauge (it asks the log for end offsets)."""

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def is_infrastructure_error(error: BaseException) -> bool:
    """True when the failure is the environment's (retry forever), not the event's."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, INFRASTRUCTURE_ERRORS)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of a processing error before a record is dead-lettered."""

    attempts: int = 3
    first_backoff: float = 0.05
    max_backoff: float = 2.0

    def backoff(self, attempt: int) -> float:
        return min(self.max_backoff, self.first_backoff * 2 ** (attempt - 1))


@dataclass(frozen=True, slots=True)
class _Item:
    record: LogRecord
    event: Envelope[Any] | None
    error: InvalidEventError | None


class _DecodedEvents:
    """Events decoded lately in this process, by their record's value and headers.

    A process's projection groups read the same records (ingest's three, every group of
    `convohub up`), and validating an event costs more than most projections spend applying
    it. Decoding is a function of those bytes and events are frozen models, so the groups
    share one decoded event. The oldest entries go first past `size`.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._events: dict[tuple[bytes, tuple[tuple[str, bytes], ...]], Envelope[Any]] = {}

    def decode(self, value: bytes, headers: tuple[tuple[str, bytes], ...]) -> Envelope[Any]:
        key = (value, headers)
        try:
            event = self._events.get(key)
        except TypeError:  # headers given as lists: decode without remembering
            return from_kafka_record(value, headers)
        if event is None:
            event = from_kafka_record(value, headers)  # raises InvalidEventError
            self._events[key] = event
            if len(self._events) > self.size:
                del self._events[next(iter(self._events))]
        return event


_DECODED = _DecodedEvents()


class ProjectionRunner:
    """Runs one projection as a member of its consumer group."""

    def __init__(
        self,
        bus: EventBus,
        store: ProjectionStore,
        projection: Projection,
        *,
        retry: RetryPolicy | None = None,
        max_batch: int = 500,
        replaying: bool = False,
        metrics: RuntimeMetrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.projection = projection
        self.retry = retry or RetryPolicy()
        self.max_batch = max_batch
        self.replaying = replaying
        self.metrics = metrics
        self.tracer = tracer
        self._next_lag_update = 0.0
        self._subscription: Subscription | None = None

    @property
    def group(self) -> str:
        return self.projection.name

    async def start(self) -> None:
        """Join the projection's consumer group on its topics."""
        self._subscription = await self.bus.subscribe(
            group=self.group,
            topics=list(self.projection.topics),
            handler=self.handle_batch,
            max_batch=self.max_batch,
        )

    async def stop(self) -> None:
        """Finish the batch in progress, commit, and leave the group."""
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None

    async def handle_batch(self, records: Sequence[LogRecord]) -> None:
        """The bus's batch handler: returns once every record is applied or dead-lettered."""
        if not records:
            return
        started = time.perf_counter()
        items = [self._decode(record) for record in records]
        try:
            await self._with_retries(lambda: self._apply(items))
        except Exception as error:
            if is_infrastructure_error(error):
                raise
            if len(items) == 1:
                await self._dead_letter(items[0], error, self.retry.attempts)
            else:
                log.warning("batch failed, isolating the poison", group=self.group, size=len(items))
                for item in items:
                    await self._apply_alone(item)
        if self.metrics is not None:
            self.metrics.record_batch(self.group, records, time.perf_counter() - started)
            if time.monotonic() >= self._next_lag_update:
                self._next_lag_update = time.monotonic() + LAG_UPDATE_SECONDS
                await self.refresh_lag()

    async def refresh_lag(self) -> None:
        """Set the lag gauge per partition: the log's end against the group's applied
        position (after batches, and from the host's metrics loop, so a consumer that
        stopped receiving still shows its lag growing)."""
        metrics = self.metrics
        if self.replaying or metrics is None:
            return
        try:
            ends = await self.bus.end_offsets(list(self.projection.topics))
        except Exception:  # lag is best effort: never fail a committed batch for it
            log.warning("could not read end offsets for the lag metric", group=self.group)
            return
        metrics.record_lag(self.group, ends, await self.store.positions(self.group))

    async def _apply_alone(self, item: _Item) -> None:
        try:
            await self._with_retries(lambda: self._apply([item]))
        except Exception as error:
            if is_infrastructure_error(error):
                raise
            await self._dead_letter(item, error, self.retry.attempts)

    async def _with_retries(self, operation: Callable[[], Awaitable[None]]) -> None:
        for attempt in range(1, self.retry.attempts + 1):
            try:
                await operation()
                return
            except Exception as error:
                if is_infrastructure_error(error) or attempt == self.retry.attempts:
                    raise
                log.info("retrying", group=self.group, attempt=attempt, error=type(error).__name__)
                await asyncio.sleep(self.retry.backoff(attempt))

    def _decode(self, record: LogRecord) -> _Item:
        if record.value is None:  # a tombstone deletes a key; it is no event to apply
            return _Item(record, None, None)
        try:
            return _Item(record, _DECODED.decode(record.value, tuple(record.headers)), None)
        except InvalidEventError as error:
            return _Item(record, None, error)

    async def _apply(self, items: Sequence[_Item]) -> None:
        spans: list[Span] = []
        try:
            async with self.store.unit_of_work(replaying=self.replaying) as uow:
                fresh = await self._fresh(uow, items)
                candidates, invalid = [], []
                for item in fresh:
                    if item.error is not None:
                        self._emit_dead_letter(uow, item, item.error, attempts=1)
                        invalid.append(item)
                    elif item.event is not None and self._is_for_this_group(item.record):
                        candidates.append(self._traced(item.event, item.record, spans))
                consumed = await self._not_yet_applied(uow, candidates)
                if consumed:
                    await self.projection.apply(consumed, uow)
                    uow.remember_processed(self.group, (c.event.id for c in consumed))
                self._advance(uow, items)
                await uow.commit()
        except BaseException as error:
            for span in spans:
                span.record_exception(error)
                span.set_status(StatusCode.ERROR, type(error).__name__)
            raise
        finally:
            for span in spans:
                span.end()
        self._count_dead_letters(invalid)

    def _traced(self, event: Envelope[Any], record: LogRecord, spans: list[Span]) -> ConsumedEvent:
        """The consumed event, with a CONSUMER span started for it (a child of the
        producer's span, ended by `_apply` once the batch committed) whose context the
        events it causes carry. Without a recording tracer the producer's context is passed
        on as it is: the trace stays one, and the hot path saves the span."""
        tracer = None if self.replaying else (self.tracer or recording_tracer())
        if tracer is None:
            return ConsumedEvent.of(event, record)
        span = start_consume_span(record, f"{self.group} process", tracer)
        span.set_attribute("convohub.event.type", event.type)
        spans.append(span)
        return ConsumedEvent(event, record, traceparent_of(span))

    async def _not_yet_applied(
        self, uow: UnitOfWork, candidates: list[ConsumedEvent]
    ) -> list[ConsumedEvent]:
        """Drops events the group applied before: an outbox re-publish after a crash puts
        the same event id on the log again at a new offset."""
        seen = await uow.already_processed(self.group, [c.event.id for c in candidates])
        fresh = []
        for consumed in candidates:
            if consumed.event.id not in seen:
                seen.add(consumed.event.id)
                fresh.append(consumed)
        return fresh

    async def _dead_letter(self, item: _Item, error: BaseException, attempts: int) -> None:
        log.error(
            "dead-lettering a record",
            group=self.group,
            topic=item.record.topic,
            partition=item.record.partition,
            offset=item.record.offset,
            error=type(error).__name__,
        )
        async with self.store.unit_of_work(replaying=self.replaying) as uow:
            fresh = await self._fresh(uow, [item])
            if fresh:
                self._emit_dead_letter(uow, item, error, attempts)
            self._advance(uow, [item])
            await uow.commit()
        self._count_dead_letters(fresh)

    async def _fresh(self, uow: UnitOfWork, items: Sequence[_Item]) -> list[_Item]:
        partitions = {item.record.topic_partition for item in items}
        positions = await uow.lock_positions(self.group, partitions)
        return [i for i in items if i.record.offset >= positions.get(i.record.topic_partition, 0)]

    def _advance(self, uow: UnitOfWork, items: Sequence[_Item]) -> None:
        last: dict[TopicPartition, int] = {}
        for item in items:
            key = item.record.topic_partition
            last[key] = max(last.get(key, -1), item.record.offset)
        for (topic, partition), offset in last.items():
            uow.advance(self.group, topic, partition, offset + 1)

    def _is_for_this_group(self, record: LogRecord) -> bool:
        target = record.header(REDRIVE_HEADER)
        return target is None or target.decode() == self.group

    def _emit_dead_letter(
        self, uow: UnitOfWork, item: _Item, error: BaseException, attempts: int
    ) -> None:
        # The dead letter joins the failed event's trace (a valid header, else none).
        header = item.record.header(TRACEPARENT_HEADER)
        traceparent = header.decode(errors="replace") if header else None
        if traceparent is not None and not TRACEPARENT_PATTERN.match(traceparent):
            traceparent = None
        event = dead_letter_event(item.record, item.event, error, self.group, attempts)
        uow.emit(event, traceparent=traceparent)

    def _count_dead_letters(self, items: Sequence[_Item]) -> None:
        """Count dead letters once their transaction committed (a rollback sends none)."""
        if self.metrics is None or self.replaying:
            return
        for item in items:
            self.metrics.dead_letters_total.labels(group=self.group, topic=item.record.topic).inc()


def dead_letter_event(
    record: LogRecord,
    event: Envelope[Any] | None,
    error: BaseException,
    handler: str,
    attempts: int,
) -> Envelope[EventDeadLettered]:
    """The DLQ event for a record; its id is derived from the record and the handler."""
    now = datetime.now(UTC)
    raw = record.value or b""  # a tombstone is never dead-lettered; typed for safety
    try:
        value, encoding = raw.decode(), DeadLetterValueEncoding.UTF_8
    except UnicodeDecodeError:
        value = base64.b64encode(raw).decode()
        encoding = DeadLetterValueEncoding.BASE64
    headers = {name: raw.decode(errors="replace") for name, raw in record.headers}
    key = record.key.decode(errors="replace") if record.key else None
    if isinstance(error, InvalidEventError):
        stage = DeadLetterStage.DECODE if "json" in str(error).lower() else DeadLetterStage.VALIDATE
    else:
        stage = DeadLetterStage.HANDLE
    payload = EventDeadLettered(
        partition_key=key or f"{record.topic}/{record.partition}",
        original=DeadLetterOrigin(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_id=event.id if event else headers.get(ID_HEADER),
            event_type=event.type if event else headers.get(TYPE_HEADER),
            key=key,
        ),
        original_value=value,
        original_value_encoding=encoding,
        original_headers=headers,
        error=DeadLetterError(
            type=f"{type(error).__module__}.{type(error).__qualname__}",
            message=str(error)[:4000],
            stage=stage,
        ),
        handler=handler,
        attempts=attempts,
        first_failed_at=now,
        dead_lettered_at=now,
    )
    cause = f"{record.topic}/{record.partition}/{record.offset}"
    return new_event(
        payload,
        tenant_id=event.tenantid if event else UNKNOWN_TENANT,
        source=f"/convohub/{handler}",
        time=now,
        event_id=derived_event_id(cause, DEAD_LETTER_TYPE, handler),
        correlation_id=event.correlationid if event else None,
    )
