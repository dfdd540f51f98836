"""The inbound pipeline: a provider's contact in, exactly one set of events on the log.

For each provider message (or delivery status, or call phase):

1. in one transaction, claim its dedupe key `(tenant, channel, provider id)` with a unique
   row, decide which conversation the contact belongs to, write that state and store the
   events it will publish on the claim; a concurrent duplicate waits for the winner's
   outcome, a retry after success gets it at once;
2. publish them and wait for the broker's acknowledgement (only then the webhook answers
   2xx), and mark the claim done right after answering.

Concurrent requests share the expensive steps. Messages not threaded by reference (every
channel but e-mail) are claimed and decided together: while one batch's transaction is in
flight the next requests queue, and the next batch claims all their keys in one statement,
locks their customers in one, reads their customers' latest conversations in one, and
writes the placements and the events to publish with one executemany each: a handful of
round trips and one commit for the batch instead of about ten round trips a message. A
batch that fails (a deadlock with another replica's, say) is retried message by message.
Their events go to the bus in one publish call (one produce request per partition,
acknowledged together) while the previous call is in flight, and their done marks are
written in one transaction. A publish that fails fails every request of that call (each is
retried by its provider; nothing is marked accepted).

Event ids are UUIDv5 of (tenant, channel, dedupe key, event type): a claim taken over
after a crash between publish and done re-publishes the same ids, which consumers
recognise. A publish that fails leaves the claim immediately retakable by the retry.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.contracts import (
    Envelope,
    KafkaRecord,
    decode_event,
    encode_event,
    new_event,
    to_kafka_record,
)
from convohub.contracts.events.common import Channel, Participant, ParticipantKind
from convohub.contracts.events.conversation import (
    CallAnswered,
    CallDirection,
    CallEnded,
    CallEndStatus,
    CallStarted,
    ChannelSwitched,
    ConversationReopened,
    ConversationReopenReason,
    ConversationStarted,
    DeliveryState,
    HumanRequested,
    HumanRequestTrigger,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
)
from convohub.contracts.payload import EventPayload
from convohub.ingest.adapters import repository
from convohub.ingest.adapters.tables import CALLS, CONVERSATIONS, PROVIDER_MESSAGES
from convohub.ingest.domain.conversations import (
    DEFAULT_HUMAN_KEYWORDS,
    ConversationState,
    ConversationStatus,
    Placement,
    is_human_request,
    place_contact,
)
from convohub.ingest.domain.inbound import (
    CallPhase,
    Customer,
    InboundCall,
    InboundMessage,
    InboundStatus,
    StatusKind,
)
from convohub.runtime.service import ServiceContext
from convohub.runtime.telemetry import producer_span

__all__ = ["SOURCE", "Accepted", "BusUnavailableError", "ClaimBusyError", "InboundPipeline"]

log = structlog.get_logger(__name__)

SOURCE = "convohub/ingest"
ID_NAMESPACE = uuid.UUID("6f1d3c52-0d7e-5b7a-9a59-3f0c2c7e4a11")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Decision = tuple[list[Envelope[Any]], dict[str, Any]] | None
Decide = Callable[[AsyncConnection], Awaitable[Decision]]
Finish = tuple[repository.ClaimKey, str, dict[str, Any]]


T = TypeVar("T")


class _NothingToRecord(Exception):
    """The decision records nothing: roll the claim back with it."""


class Coalescer(Generic[T]):
    """Hands items submitted by concurrent callers to `flush` together: while one flush is
    in flight, new items queue and go out in the next (up to `max_items` at once). Each
    caller awaits the flush that carried its item and gets its exception, if any."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], max_items: int = 500):
        self._flush = flush
        self.max_items = max_items
        self._queue: list[tuple[T, asyncio.Future[None] | None]] = []
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        """Queue `item` and return once a flush carrying it succeeded (or raise its error)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(item, done)
        await asyncio.shield(done)  # a cancelled caller does not cancel the others' flush

    def post(self, item: T) -> None:
        """Queue `item` without waiting for its flush (whose errors `flush` must handle)."""
        self._enqueue(item, None)

    async def drained(self) -> None:
        """Wait until every queued item was flushed (or failed)."""
        while (draining := self._draining) is not None and not draining.done():
            if draining.get_loop() is not asyncio.get_running_loop():
                return  # a drain of an event loop that is gone: nothing left to wait for
            await asyncio.wait([draining])

    def _enqueue(self, item: T, done: asyncio.Future[None] | None) -> None:
        loop = asyncio.get_running_loop()
        self._queue.append((item, done))
        draining = self._draining
        if draining is None or draining.done() or draining.get_loop() is not loop:
            self._draining = loop.create_task(self._drain())

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_items]
            del self._queue[: self.max_items]
            try:
                await self._flush([item for item, _ in batch])
            except BaseException as error:
                for _, done in batch:
                    if done is not None and not done.done():
                        done.set_exception(error)
                if not isinstance(error, Exception):
                    raise
            else:
                for _, done in batch:
                    if done is not None and not done.done():
                        done.set_result(None)


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, "/".join(parts)))


@dataclass(frozen=True)
class Accepted:
    """The outcome of one contact: ids (never content), and whether it was a retry."""

    outcome: dict[str, Any]
    duplicate: bool


@dataclass(eq=False)
class _Contact:
    """A customer message waiting for the next batch of claims and decisions."""

    tenant_id: str
    dedupe_key: str
    message: InboundMessage
    human_keywords: tuple[str, ...]
    owner: str = field(default_factory=lambda: str(uuid.uuid4()))
    decided: tuple[list[Envelope[Any]], dict[str, Any]] | None = None
    """Set once the batch that claimed this message committed its decision."""

    @property
    def key(self) -> repository.ClaimKey:
        return (self.tenant_id, self.message.customer.channel_id, self.dedupe_key[:255])


class ClaimBusyError(Exception):
    """Another request holds the claim and did not finish in time; the caller retries."""


class BusUnavailableError(Exception):
    """The broker did not acknowledge; nothing is recorded as accepted."""


class InboundPipeline:
    def __init__(
        self,
        context: Callable[[], ServiceContext],
        *,
        claim_timeout: float = 30.0,
        wait_timeout: float = 10.0,
        poll_every: float = 0.02,
    ) -> None:
        self._context = context
        self.claim_timeout = claim_timeout
        self.wait_timeout = wait_timeout
        self.poll_every = poll_every
        self._claimer: Coalescer[_Contact] = Coalescer(self._claim_and_decide, max_items=100)
        self._publisher: Coalescer[list[KafkaRecord]] = Coalescer(self._publish_records)
        self._finisher: Coalescer[Finish] = Coalescer(self._finish_claims)
        # Each coalescer flushes one batch at a time: each keeps its own connection.
        self._claim_connection = repository.KeptConnection(lambda: self._context().store)
        self._finish_connection = repository.KeptConnection(lambda: self._context().store)

    async def drained(self) -> None:
        """Wait for the claims, publishes and done marks in flight (before the store closes)."""
        await self._claimer.drained()
        await self._publisher.drained()
        await self._finisher.drained()
        await self._claim_connection.close()
        await self._finish_connection.close()

    # --- the claim protocol -----------------------------------------------------------

    async def accept(
        self, tenant_id: str, channel_id: str, dedupe_key: str, decide: Decide
    ) -> Accepted:
        context = self._context()
        store = context.store
        key = (tenant_id, channel_id, dedupe_key[:255])
        owner = str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_timeout
        stored: list[str] | None = None
        decided: Decision = None
        while True:
            now = context.clock.now()
            try:
                async with store.begin() as connection:
                    if await repository.try_claim(connection, key, owner, now):
                        # Claim and decision in one transaction: a failed decision leaves
                        # no claim behind, and the request costs one commit, not two.
                        decided = await self._decide_claimed(connection, key, owner, decide)
                        break
                    row = await repository.read_claim(connection, key)
                    if row is None:
                        continue  # released between our insert and read: try again
                    if row.state == "done":
                        return Accepted(outcome=row.outcome or {}, duplicate=True)
                    claimed_at = row.claimed_at
                    if claimed_at.tzinfo is None:
                        claimed_at = claimed_at.replace(tzinfo=UTC)
                    if now - claimed_at > timedelta(seconds=self.claim_timeout) and (
                        await repository.take_over_claim(connection, key, row.owner, owner, now)
                    ):
                        # A crashed owner may have decided already (records stored): then
                        # exactly those events are published, else we decide afresh.
                        stored, outcome = row.records, row.outcome or {}
                        break
            except _NothingToRecord:  # an unknown message's status: the claim rolled back
                return Accepted(outcome={"status": "ignored"}, duplicate=False)
            if loop.time() > deadline:
                raise ClaimBusyError(dedupe_key)
            await asyncio.sleep(self.poll_every)

        if decided is not None:
            events, outcome = decided
        elif stored is not None:  # a crashed owner decided already: publish exactly that
            log.info("retaking a stale claim", tenant=tenant_id, channel=channel_id)
            events = [decode_event(record) for record in stored]
        else:  # a stale claim of a crashed owner that had not decided
            try:
                decided = await self._decide(key, owner, decide)
            except BaseException:
                async with store.begin() as connection:
                    await repository.release_claim(connection, key, owner)
                raise
            if decided is None:  # nothing to record (an unknown message's status)
                async with store.begin() as connection:
                    await repository.release_claim(connection, key, owner)
                return Accepted(outcome={"status": "ignored"}, duplicate=False)
            events, outcome = decided
        return await self._publish(key, owner, events, outcome)

    async def _publish(
        self,
        key: repository.ClaimKey,
        owner: str,
        events: list[Envelope[Any]],
        outcome: dict[str, Any],
    ) -> Accepted:
        """Publish a claim's decided events, answer, and mark the claim done just after."""
        context = self._context()
        try:
            if events:
                # One customer message, one trace: the events carry the request's span.
                with producer_span("ingest emit", context.tracer) as traceparent:
                    records = [to_kafka_record(event, traceparent=traceparent) for event in events]
                    await self._publisher.submit(records)
        except Exception as error:
            async with context.store.begin() as connection:
                await repository.expire_claim(connection, key, owner, EPOCH)
            raise BusUnavailableError(str(error)) from error
        # The events are on the log: answer now and mark the claim done just after (a
        # retry meanwhile waits for the mark). Were the process to die in between, the
        # claim stays pending with its events and a retry re-publishes the same ids.
        self._finisher.post((key, owner, outcome))
        return Accepted(outcome=outcome, duplicate=False)

    async def _claim_and_decide(self, contacts: list[_Contact]) -> None:
        """Claim and decide a batch of messages in one transaction; each contact whose claim
        this batch won gets its decision once the transaction committed. The others (a key
        claimed before, or twice in this batch) are left to the one-by-one path."""
        context = self._context()
        now = context.clock.now()
        first: dict[repository.ClaimKey, _Contact] = {}
        for contact in contacts:
            first.setdefault(contact.key, contact)
        decided: list[tuple[_Contact, tuple[list[Envelope[Any]], dict[str, Any]]]] = []
        async with self._claim_connection.begin() as connection:
            claims = [(contact.key, contact.owner) for contact in first.values()]
            won = await repository.try_claims(connection, claims, now)
            batch = [contact for contact in first.values() if contact.key in won]
            if not batch:
                return
            customers = [(contact.tenant_id, contact.message.customer.key) for contact in batch]
            await repository.lock_customers(connection, customers)
            current: dict[tuple[str, str], ConversationState] = {}
            for tenant_id in {tenant_id for tenant_id, _ in customers}:
                keys = [key for owner, key in customers if owner == tenant_id]
                latest = await repository.latest_conversations(connection, tenant_id, keys)
                current.update({(tenant_id, key): state for key, state in latest.items()})
            writes = _ConversationWrites(now)
            stored: list[tuple[repository.ClaimKey, str, list[str], dict[str, Any]]] = []
            for contact, who in zip(batch, customers, strict=True):
                customer = contact.message.customer
                ids = _Ids(contact.tenant_id, customer.channel_id, contact.dedupe_key)
                state = current.get(who)
                placement = place_contact(
                    state, customer.channel_id, "conv-" + ids.of("conversation")
                )
                events, outcome = _message_decision(
                    contact.tenant_id, contact.message, placement, ids, contact.human_keywords
                )
                writes.place(contact.tenant_id, customer, placement)
                current[who] = _placed_state(customer, placement, state)
                records = [encode_event(event).decode() for event in events]
                stored.append((contact.key, contact.owner, records, outcome))
                decided.append((contact, (events, outcome)))
            await repository.save_conversations(connection, writes.started, writes.changed)
            await repository.store_many_claim_records(connection, stored)
        for contact, decision in decided:
            contact.decided = decision

    async def _publish_records(self, batches: list[list[KafkaRecord]]) -> None:
        await self._context().bus.publish([record for batch in batches for record in batch])

    async def _finish_claims(self, finished: list[Finish]) -> None:
        try:
            async with self._finish_connection.begin() as connection:
                await repository.finish_claims(connection, finished)
        except Exception:
            log.exception("marking published claims done failed", claims=len(finished))

    async def _decide_claimed(
        self,
        connection: AsyncConnection,
        key: repository.ClaimKey,
        owner: str,
        decide: Decide,
    ) -> tuple[list[Envelope[Any]], dict[str, Any]]:
        decided = await decide(connection)
        if decided is None:
            raise _NothingToRecord
        events, outcome = decided
        records = [encode_event(event).decode() for event in events]
        await repository.store_claim_records(connection, key, owner, records, outcome)
        return events, outcome

    async def _decide(self, key: repository.ClaimKey, owner: str, decide: Decide) -> Decision:
        context = self._context()
        async with context.store.unit_of_work() as uow:
            decided = await decide(uow.connection)
            if decided is None:
                return None
            events, outcome = decided
            records = [encode_event(event).decode() for event in events]
            if not await repository.store_claim_records(
                uow.connection, key, owner, records, outcome
            ):
                raise ClaimBusyError(key[2])  # taken over while we decided; roll back
            await uow.commit()
        return events, outcome

    # --- the decisions ------------------------------------------------------------------

    async def message(
        self,
        tenant_id: str,
        message: InboundMessage,
        *,
        human_keywords: tuple[str, ...] = DEFAULT_HUMAN_KEYWORDS,
        dedupe_key: str | None = None,
    ) -> Accepted:
        channel_id = message.customer.channel_id
        dedupe = dedupe_key or f"message:{message.provider_message_id}"
        if not message.thread_refs and message.customer.channel is not Channel.EMAIL:
            contact = _Contact(tenant_id, dedupe, message, human_keywords)
            try:
                await self._claimer.submit(contact)
            except Exception:
                log.warning("a batch of claims failed; deciding its messages one by one")
            if contact.decided is not None:
                events, outcome = contact.decided
                return await self._publish(contact.key, contact.owner, events, outcome)

        async def decide(connection: AsyncConnection) -> Decision:
            now = self._context().clock.now()
            ids = _Ids(tenant_id, channel_id, dedupe)
            placement = await _place(
                connection, tenant_id, message.customer, message.thread_refs, ids
            )
            decided = _message_decision(tenant_id, message, placement, ids, human_keywords)
            await _record_placement(connection, tenant_id, message.customer, placement, now)
            if message.thread_refs or message.customer.channel.value == "email":
                await repository.remember_thread_message(
                    connection, tenant_id, message.provider_message_id, placement.conversation_id
                )
            return decided

        return await self.accept(tenant_id, channel_id, dedupe, decide)

    async def status(self, tenant_id: str, channel_id: str, status: InboundStatus) -> Accepted:
        dedupe = f"status:{status.provider_message_id}:{status.state.value}"

        async def decide(connection: AsyncConnection) -> Decision:
            row = (
                await connection.execute(
                    select(
                        PROVIDER_MESSAGES.c.conversation_id, PROVIDER_MESSAGES.c.message_id
                    ).where(
                        PROVIDER_MESSAGES.c.tenant_id == tenant_id,
                        PROVIDER_MESSAGES.c.channel_id == channel_id,
                        PROVIDER_MESSAGES.c.provider_message_id == status.provider_message_id,
                    )
                )
            ).first()
            if row is None:
                log.info("status of an unknown outbound message", channel=channel_id)
                return None
            conversation = (
                await connection.execute(
                    select(CONVERSATIONS.c.channel).where(
                        CONVERSATIONS.c.conversation_id == row.conversation_id
                    )
                )
            ).first()
            channel = _channel_of(self._context(), tenant_id, channel_id, conversation)
            ids = _Ids(tenant_id, channel_id, dedupe)
            payload: EventPayload
            if status.state is StatusKind.FAILED:
                payload = MessageFailed(
                    conversation_id=row.conversation_id,
                    message_id=row.message_id,
                    channel=channel,
                    channel_id=channel_id,
                    provider_message_id=status.provider_message_id,
                    error_code=status.error_code or "unknown",
                    error_message=status.error_message or "the provider reported a failure",
                    retryable=False,
                    attempts=1,
                    failed_at=status.at,
                )
            else:
                payload = MessageDelivered(
                    conversation_id=row.conversation_id,
                    message_id=row.message_id,
                    channel=channel,
                    channel_id=channel_id,
                    provider_message_id=status.provider_message_id,
                    state=DeliveryState(status.state.value),
                    state_changed_at=status.at,
                )
            event = ids.event(payload, status.at)
            return [event], {
                "conversation_id": row.conversation_id,
                "message_id": row.message_id,
                "events": [event.type],
            }

        return await self.accept(tenant_id, channel_id, dedupe, decide)

    async def call(self, tenant_id: str, call: InboundCall) -> Accepted:
        channel_id = call.customer.channel_id
        dedupe = f"call:{call.call_id}:{call.phase.value}"

        async def decide(connection: AsyncConnection) -> Decision:
            now = self._context().clock.now()
            ids = _Ids(tenant_id, channel_id, dedupe)
            events: list[Envelope[Any]] = []
            where = and_(
                CALLS.c.tenant_id == tenant_id,
                CALLS.c.channel_id == channel_id,
                CALLS.c.call_id == call.call_id,
            )
            row = (await connection.execute(select(CALLS).where(where))).first()
            if row is None:
                # The call's first callback (whatever phase it reports) starts it.
                start_ids = _Ids(tenant_id, channel_id, f"call:{call.call_id}:started")
                placement = await _place(connection, tenant_id, call.customer, (), start_ids)
                hints = {"ivr_choice": call.ivr_choice} if call.ivr_choice else {}
                events += _lifecycle_events(
                    tenant_id, call.customer, placement, start_ids, call.at, hints, None
                )
                events.append(
                    start_ids.event(
                        CallStarted(
                            conversation_id=placement.conversation_id,
                            channel_id=channel_id,
                            provider_call_id=call.call_id,
                            customer=call.customer.identity(),
                            company_number=call.company_number,
                            direction=CallDirection.INBOUND
                            if call.inbound
                            else CallDirection.OUTBOUND,
                            started_at=call.at,
                            ivr_choice=call.ivr_choice,
                        ),
                        call.at,
                    )
                )
                await _record_placement(connection, tenant_id, call.customer, placement, now)
                await connection.execute(
                    CALLS.insert().values(
                        tenant_id=tenant_id,
                        channel_id=channel_id,
                        call_id=call.call_id,
                        conversation_id=placement.conversation_id,
                        started_at=call.at,
                        answered=False,
                        ended=False,
                        ivr_choice=call.ivr_choice,
                    )
                )
                row = (await connection.execute(select(CALLS).where(where))).one()
            elif call.ivr_choice and row.ivr_choice != call.ivr_choice:
                await connection.execute(
                    update(CALLS).where(where).values(ivr_choice=call.ivr_choice)
                )
            ivr_choice = call.ivr_choice or row.ivr_choice
            started_at = (
                row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=UTC)
            )
            if call.phase is CallPhase.ANSWERED and not row.answered and not row.ended:
                events.append(
                    ids.event(
                        CallAnswered(
                            conversation_id=row.conversation_id,
                            channel_id=channel_id,
                            provider_call_id=call.call_id,
                            answered_at=call.at,
                            wait_seconds=max(0.0, (call.at - started_at).total_seconds()),
                        ),
                        call.at,
                    )
                )
                await connection.execute(update(CALLS).where(where).values(answered=True))
            if call.phase is CallPhase.ENDED and not row.ended:
                duration = call.duration_seconds
                if duration is None:
                    duration = max(0, int((call.at - started_at).total_seconds()))
                events.append(
                    ids.event(
                        CallEnded(
                            conversation_id=row.conversation_id,
                            channel_id=channel_id,
                            provider_call_id=call.call_id,
                            ended_at=call.at,
                            duration_seconds=duration,
                            end_status=call.end_status or CallEndStatus.COMPLETED,
                            ivr_choice=ivr_choice,
                            recording=call.recording,
                        ),
                        call.at,
                    )
                )
                await connection.execute(update(CALLS).where(where).values(ended=True))
            return events, {
                "conversation_id": row.conversation_id,
                "events": [event.type for event in events],
            }

        return await self.accept(tenant_id, channel_id, dedupe, decide)


@dataclass(frozen=True)
class _Ids:
    tenant_id: str
    channel_id: str
    dedupe_key: str

    def of(self, what: str) -> str:
        return stable_id(self.tenant_id, self.channel_id, self.dedupe_key, what)

    def event(self, payload: EventPayload, time: datetime) -> Envelope[Any]:
        return new_event(
            payload,
            tenant_id=self.tenant_id,
            source=SOURCE,
            time=time,
            event_id=self.of(payload.event_type),
            correlation_id=self.of("correlation"),
        )


def _message_decision(
    tenant_id: str,
    message: InboundMessage,
    placement: Placement,
    ids: _Ids,
    human_keywords: tuple[str, ...],
) -> tuple[list[Envelope[Any]], dict[str, Any]]:
    """The events of a customer message placed in `placement`, and the answer's outcome."""
    channel_id = message.customer.channel_id
    message_id = "msg-" + ids.of("message")
    conversation_id = placement.conversation_id
    events = _lifecycle_events(
        tenant_id,
        message.customer,
        placement,
        ids,
        message.received_at,
        message.routing_hints,
        message_id,
    )
    events.append(
        ids.event(
            MessageReceived(
                conversation_id=conversation_id,
                message_id=message_id,
                channel=message.customer.channel,
                channel_id=channel_id,
                provider_message_id=message.provider_message_id,
                customer=message.customer.identity(),
                content=message.content,
                received_at=message.received_at,
                in_reply_to=message.in_reply_to,
            ),
            message.received_at,
        )
    )
    if is_human_request(message.content.text, human_keywords):
        trigger = (
            HumanRequestTrigger.BUTTON
            if message.content.interactive_reply_id
            else HumanRequestTrigger.TYPED_TEXT
        )
        events.append(
            ids.event(
                HumanRequested(
                    conversation_id=conversation_id,
                    channel=message.customer.channel,
                    channel_id=channel_id,
                    trigger=trigger,
                    trigger_text=message.content.text,
                    message_id=message_id,
                    requested_at=message.received_at,
                ),
                message.received_at,
            )
        )
    return events, {
        "conversation_id": conversation_id,
        "message_id": message_id,
        "events": [event.type for event in events],
    }


async def _place(
    connection: AsyncConnection,
    tenant_id: str,
    customer: Customer,
    thread_refs: tuple[str, ...],
    ids: _Ids,
) -> Placement:
    await repository.lock_customer(connection, tenant_id, customer.key)
    current = await repository.threaded_conversation(connection, tenant_id, thread_refs)
    if current is None or current.status is ConversationStatus.CLOSED:
        current = await repository.latest_conversation(connection, tenant_id, customer.key)
    return place_contact(current, customer.channel_id, "conv-" + ids.of("conversation"))


def _lifecycle_events(
    tenant_id: str,
    customer: Customer,
    placement: Placement,
    ids: _Ids,
    at: datetime,
    routing_hints: dict[str, str],
    message_id: str | None,
) -> list[Envelope[Any]]:
    events: list[Envelope[Any]] = []
    if placement.started:
        events.append(
            ids.event(
                ConversationStarted(
                    conversation_id=placement.conversation_id,
                    channel=customer.channel,
                    channel_id=customer.channel_id,
                    customer=customer.identity(),
                    started_at=at,
                    routing_hints=routing_hints,
                ),
                at,
            )
        )
    if placement.reopened:
        events.append(
            ids.event(
                ConversationReopened(
                    conversation_id=placement.conversation_id,
                    reopened_by=Participant(kind=ParticipantKind.CUSTOMER),
                    reason=ConversationReopenReason.CUSTOMER_MESSAGE,
                    message_id=message_id,
                    reopened_at=at,
                ),
                at,
            )
        )
    if placement.switched_from is not None:
        from_channel, from_channel_id = placement.switched_from
        events.append(
            ids.event(
                ChannelSwitched(
                    conversation_id=placement.conversation_id,
                    from_channel=from_channel,
                    from_channel_id=from_channel_id,
                    to_channel=customer.channel,
                    to_channel_id=customer.channel_id,
                    customer=customer.identity(),
                    first_message_id=message_id,
                    switched_at=at,
                ),
                at,
            )
        )
    return events


async def _record_placement(
    connection: AsyncConnection,
    tenant_id: str,
    customer: Customer,
    placement: Placement,
    now: datetime,
) -> None:
    writes = _ConversationWrites(now)
    writes.place(tenant_id, customer, placement)
    await repository.save_conversations(connection, writes.started, writes.changed)


class _ConversationWrites:
    """A batch's placements as rows to write: conversations started (full rows) and the
    changed columns of existing ones, each the net effect of the batch's messages."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.started: list[dict[str, Any]] = []
        self._started: dict[str, dict[str, Any]] = {}
        self.changed: dict[str, dict[str, Any]] = {}

    def place(self, tenant_id: str, customer: Customer, placement: Placement) -> None:
        conversation_id = placement.conversation_id
        if placement.started:
            row = {
                "conversation_id": conversation_id,
                "tenant_id": tenant_id,
                "customer_key": customer.key,
                "channel": customer.channel.value,
                "channel_id": customer.channel_id,
                "address": customer.address,
                "display_name": customer.display_name,
                "status": ConversationStatus.OPEN.value,
                "survey_pending": False,
                "started_at": self.now,
                "updated_at": self.now,
            }
            self.started.append(row)
            self._started[conversation_id] = row
            return
        values = self._started.get(conversation_id)
        if values is None:
            values = self.changed.setdefault(conversation_id, {})
        values["updated_at"] = self.now
        if placement.reopened:
            values["status"] = ConversationStatus.OPEN.value
        if placement.switched_from is not None:
            values.update(
                channel=customer.channel.value,
                channel_id=customer.channel_id,
                address=customer.address,
                display_name=customer.display_name,
            )


def _placed_state(
    customer: Customer, placement: Placement, before: ConversationState | None
) -> ConversationState:
    """The customer's latest conversation once `placement` is recorded."""
    if placement.started or before is None:
        return ConversationState(
            placement.conversation_id,
            customer.channel,
            customer.channel_id,
            ConversationStatus.OPEN,
        )
    state = before
    if placement.reopened:
        state = replace(state, status=ConversationStatus.OPEN)
    if placement.switched_from is not None:
        state = replace(state, channel=customer.channel, channel_id=customer.channel_id)
    return state


def _channel_of(
    context: ServiceContext, tenant_id: str, channel_id: str, conversation: Any
) -> Channel:
    if conversation is not None:
        return Channel(conversation.channel)
    return context.config.tenant(tenant_id).channel(channel_id).type
