"""Outbound delivery: messages from agents, bots, the system and surveys back out through
the conversation's channel, with retries, reported as delivered or failed events.

`OutboundIntake` (a projection) queues one row per `message_sent` in the same transaction
that moves its position, and turns a channel-message survey with a text into a system
`message_sent`. `DeliveryWorker` (a background loop) claims due rows, calls the provider,
and records the outcome with its event through a unit of work: `message_delivered`
(state sent) once, or `message_failed` per failed attempt (`retryable` true while it will
try again, false once it gives up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from sqlalchemy import MetaData, select

from convohub.contracts import Envelope, caused_by
from convohub.contracts.catalogue import envelope_class, payload_class
from convohub.contracts.events.common import Attachment, Participant, ParticipantKind
from convohub.contracts.events.conversation import (
    DeliveryState,
    MessageDelivered,
    MessageFailed,
    MessageSent,
)
from convohub.contracts.topics import CONVERSATION, CUSTOMER, FEEDBACK
from convohub.ingest.adapters.desk import insert_ignoring_duplicates, moment
from convohub.ingest.adapters.erasure import erased_conversations, remember_erased
from convohub.ingest.adapters.outbound import (
    OUTBOUND_CUSTOMERS,
    OUTBOUND_DELIVERIES,
    OUTBOUND_THREADS,
    any_due,
    claim_due,
    load_threads,
    purge_outbound_for,
    retry_policy_of,
    save_threads,
    send_message,
    sends_natively,
)
from convohub.ingest.domain.desk import DeliveryOutcome
from convohub.ingest.domain.settings import ChannelSettings
from convohub.ingest.handlers.readmodel import DeskReadModel
from convohub.ingest.sdk import (
    AdapterChannel,
    AdapterRegistry,
    ChannelAdapter,
    OutboundMessage,
    adapter_channel,
)
from convohub.runtime.config import ChannelConfig, HubConfig
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.store import UnitOfWork

if TYPE_CHECKING:
    from convohub.runtime.service import Service, ServiceContext

__all__ = ["DeliveryWorker", "OutboundIntake", "desk_background", "desk_projections"]

log = structlog.get_logger(__name__)
SOURCE = "/convohub/ingest/outbound"

OUTBOUND_METADATA = MetaData()
for _table in (OUTBOUND_DELIVERIES, OUTBOUND_THREADS, OUTBOUND_CUSTOMERS):
    _table.to_metadata(OUTBOUND_METADATA)
del _table


class OutboundIntake(Projection):
    """Queues outbound messages and keeps what a reply needs per conversation.

    It also reads the customer topic: `customer.identified` tells it whose conversation is
    whose, and `customer.erased` purges the person's addresses and texts and records the
    conversations in the erasure ledger. A conversation in the ledger gets no address, name
    or subject, and its messages are queued as `erased` (never sent), so a rebuild of this
    projection does not bring the person back.
    """

    name = "ingest.outbound"
    topics = (CONVERSATION.name, FEEDBACK.name, CUSTOMER.name)
    metadata = OUTBOUND_METADATA

    async def apply(self, events: Sequence[ConsumedEvent], uow: UnitOfWork) -> None:
        erased = await _erased_of(uow, [consumed.event for consumed in events])
        threads = _Threads(uow)
        await threads.load(
            (consumed.event.tenantid, consumed.event.data.conversation_id)
            for consumed in events
            if consumed.event.type in _THREAD_EVENTS
        )
        for consumed in events:
            event = consumed.event
            if event.type in _THREAD_EVENTS:
                if (event.tenantid, event.data.conversation_id) not in erased:
                    await threads.apply(event)
                continue
            # Anything else may read the threads (a survey, a reply's e-mail headers) or
            # purge them (an erasure): write what this batch changed first.
            await threads.save()
            if event.type == "convohub.customer.identified.v1":
                await self._identified(uow, event)
                continue
            if event.type == "convohub.customer.erased.v1":
                conversations = await self._erase(uow, event)
                erased |= {(event.tenantid, conversation) for conversation in conversations}
                threads.forget()
                continue
            conversation_id = getattr(event.data, "conversation_id", None)
            is_erased = (event.tenantid, conversation_id) in erased
            if event.type == "convohub.conversation.message_sent.v1":
                await self._queue(uow, event, erased=is_erased)
            elif event.type in (
                "convohub.conversation.message_delivered.v1",
                "convohub.conversation.message_failed.v1",
            ):
                await self._outcome(uow, event)
            elif event.type == "convohub.feedback.survey_sent.v1" and not is_erased:
                await self._survey(uow, consumed)
        await threads.save()

    async def _identified(self, uow: UnitOfWork, event: Envelope[Any]) -> None:
        if event.data.conversation_id is None:
            return
        await insert_ignoring_duplicates(
            uow.connection,
            OUTBOUND_CUSTOMERS,
            [
                {
                    "tenant_id": event.tenantid,
                    "customer_id": event.data.customer_id,
                    "conversation_id": event.data.conversation_id,
                }
            ],
        )

    async def _erase(self, uow: UnitOfWork, event: Envelope[Any]) -> list[str]:
        """Purge the customer's conversations (their addresses, subjects and queued
        texts) and record them in the erasure ledger; returns their ids."""
        where = (
            OUTBOUND_CUSTOMERS.c.tenant_id == event.tenantid,
            OUTBOUND_CUSTOMERS.c.customer_id == event.data.customer_id,
        )
        rows = await uow.connection.execute(
            select(OUTBOUND_CUSTOMERS.c.conversation_id).where(*where)
        )
        conversations = sorted(set(rows.scalars()))
        await remember_erased(uow.connection, event.tenantid, conversations, event.data.erased_at)
        for conversation_id in conversations:
            await purge_outbound_for(uow.connection, event.tenantid, conversation_id)
        return conversations

    async def _outcome(self, uow: UnitOfWork, event: Envelope[Any]) -> None:
        """Fold a delivery outcome into the queue. Live the worker recorded it already
        (nothing changes); on a rebuild it keeps messages sent long ago from going out
        again."""
        data = event.data
        table = OUTBOUND_DELIVERIES
        where = (
            table.c.tenant_id == event.tenantid,
            table.c.message_id == data.message_id,
            table.c.status == "pending",
        )
        if event.type == "convohub.conversation.message_delivered.v1":
            values: dict[str, Any] = {"status": "sent", "lease_until": None}
            values["provider_message_id"] = data.provider_message_id
            await uow.connection.execute(table.update().where(*where).values(**values))
        elif not data.retryable:
            values = {"status": "failed", "lease_until": None}
            values["last_error"] = data.error_code[:255]
            await uow.connection.execute(table.update().where(*where).values(**values))
        else:
            await uow.connection.execute(
                table.update()
                .where(*where, table.c.attempts < data.attempts)
                .values(attempts=data.attempts)
            )

    async def _queue(self, uow: UnitOfWork, event: Envelope[Any], *, erased: bool) -> None:
        data: MessageSent = event.data
        row = {
            "tenant_id": event.tenantid,
            "message_id": data.message_id,
            "conversation_id": data.conversation_id,
            "channel": data.channel.value,
            "channel_id": data.channel_id,
            "attempts": 0,
            "next_attempt_at": moment(event.time),
            "lease_until": None,
            "provider_message_id": None,
            "last_error": None,
        }
        if erased:  # the row says the message existed; nothing about whom or what
            row |= {
                "recipient": None,
                "content": None,
                "email_headers": {},
                "cause": {"erased": True},
                "status": "erased",
            }
            await insert_ignoring_duplicates(uow.connection, OUTBOUND_DELIVERIES, [row])
            return
        thread = (
            (
                await uow.connection.execute(
                    select(OUTBOUND_THREADS.c.email_message_ids, OUTBOUND_THREADS.c.subject).where(
                        OUTBOUND_THREADS.c.tenant_id == event.tenantid,
                        OUTBOUND_THREADS.c.conversation_id == data.conversation_id,
                    )
                )
            )
            .mappings()
            .first()
        )
        headers = (
            {"message_ids": list(thread["email_message_ids"]), "subject": thread["subject"]}
            if thread
            else {}
        )
        row |= {
            "recipient": data.recipient.model_dump(mode="json"),
            "content": data.content.model_dump(mode="json"),
            "email_headers": headers,
            "cause": event.model_dump(mode="json"),
            "status": "pending",
        }
        await insert_ignoring_duplicates(uow.connection, OUTBOUND_DELIVERIES, [row])

    async def _survey(self, uow: UnitOfWork, consumed: ConsumedEvent) -> None:
        event = consumed.event
        survey = event.data
        text = getattr(survey, "text", None)
        if survey.delivery.value != "channel_message" or not text:
            return
        thread = (
            (
                await uow.connection.execute(
                    select(OUTBOUND_THREADS).where(
                        OUTBOUND_THREADS.c.tenant_id == event.tenantid,
                        OUTBOUND_THREADS.c.conversation_id == survey.conversation_id,
                    )
                )
            )
            .mappings()
            .first()
        )
        if thread is None or not thread["customer"]:
            log.warning("survey for a conversation without a known customer address; not sent")
            return
        message = MessageSent(
            conversation_id=survey.conversation_id,
            message_id=f"survey-{survey.survey_id}",
            channel=thread["channel"],
            channel_id=thread["channel_id"],
            author=Participant(kind=ParticipantKind.SYSTEM, id="feedback"),
            recipient=thread["customer"],
            content={"text": text},
            sent_at=survey.sent_at,
        )
        uow.emit(
            caused_by(event, message, source=SOURCE, time=event.time),
            traceparent=consumed.traceparent,
        )


_THREAD_EVENTS = frozenset(
    {
        "convohub.conversation.started.v1",
        "convohub.conversation.message_received.v1",
        "convohub.conversation.channel_switched.v1",
    }
)


class _Threads:
    """A batch's view of the conversations' threads (channel, customer address, e-mail
    headers): read once for the batch, changed in memory, written back with one statement
    per kind of write. A thread an event leaves as it was is not written at all."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._connection = uow.connection
        self._rows: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._inserted: dict[tuple[str, str], dict[str, Any]] = {}
        self._updated: dict[tuple[str, str], dict[str, Any]] = {}

    async def load(self, keys: Iterable[tuple[str, str]]) -> None:
        by_tenant: dict[str, set[str]] = {}
        for tenant_id, conversation_id in keys:
            if (tenant_id, conversation_id) not in self._rows:
                by_tenant.setdefault(tenant_id, set()).add(conversation_id)
        for tenant_id, conversation_ids in by_tenant.items():
            found = await load_threads(self._connection, tenant_id, conversation_ids)
            for conversation_id in conversation_ids:
                self._rows[(tenant_id, conversation_id)] = found.get(conversation_id)

    async def apply(self, event: Envelope[Any]) -> None:
        data = event.data
        key = (event.tenantid, data.conversation_id)
        await self.load([key])
        row = self._rows[key]
        values: dict[str, Any] = (
            dict(row)
            if row
            else {
                "tenant_id": event.tenantid,
                "conversation_id": data.conversation_id,
                "channel": None,
                "channel_id": None,
                "customer": None,
                "email_message_ids": [],
                "subject": None,
            }
        )
        if event.type == "convohub.conversation.channel_switched.v1":
            values["channel"], values["channel_id"] = data.to_channel.value, data.to_channel_id
            values["customer"] = data.customer.model_dump(mode="json")
        else:
            if event.type == "convohub.conversation.started.v1" or not values.get("channel"):
                values["channel"], values["channel_id"] = data.channel.value, data.channel_id
                values["customer"] = data.customer.model_dump(mode="json")
            if (
                event.type == "convohub.conversation.message_received.v1"
                and data.channel.value == "email"
            ):
                ids = list(values["email_message_ids"])
                if data.provider_message_id not in ids:
                    ids.append(data.provider_message_id)
                values["email_message_ids"] = ids[-20:]
                values["subject"] = data.content.subject or values.get("subject")
        if values == row:
            return
        self._rows[key] = values
        if row is None or key in self._inserted:
            self._inserted[key] = values
        else:
            self._updated[key] = values

    async def save(self) -> None:
        if self._inserted or self._updated:
            await save_threads(
                self._connection, list(self._inserted.values()), list(self._updated.values())
            )
            self._inserted.clear()
            self._updated.clear()

    def forget(self) -> None:
        """Drop what was read (after a purge changed the stored threads)."""
        self._rows.clear()


async def _erased_of(uow: UnitOfWork, events: Sequence[Envelope[Any]]) -> set[tuple[str, str]]:
    """The (tenant, conversation) pairs of the events that are in the erasure ledger."""
    by_tenant: dict[str, set[str]] = {}
    for event in events:
        conversation_id = getattr(event.data, "conversation_id", None)
        if conversation_id is not None:
            by_tenant.setdefault(event.tenantid, set()).add(conversation_id)
    found: set[tuple[str, str]] = set()
    for tenant_id, ids in by_tenant.items():
        erased = await erased_conversations(uow.connection, tenant_id, ids)
        found |= {(tenant_id, conversation_id) for conversation_id in erased}
    return found


def _channel_of(config: HubConfig, tenant_id: str, channel_id: str) -> ChannelConfig | None:
    try:
        return config.tenant(tenant_id).channel(channel_id)
    except KeyError:
        return None


async def send_with_adapter(
    client: httpx.AsyncClient, adapter: ChannelAdapter, channel: AdapterChannel, row: dict[str, Any]
) -> DeliveryOutcome:
    """Send one queued message through a channel adapter's `send`; never raises (an
    adapter that does is logged and the attempt counts as a retryable failure)."""
    content = row.get("content") or {}
    message = OutboundMessage(
        message_id=row["message_id"],
        conversation_id=row["conversation_id"],
        recipient_address=row["recipient"]["address"],
        text=content.get("text"),
        attachments=tuple(Attachment.model_validate(a) for a in content.get("attachments", [])),
    )
    try:
        return await adapter.send(client, channel, message)
    except Exception as error:
        log.exception("adapter send failed", adapter=adapter.name, channel=channel.channel_id)
        return DeliveryOutcome.failed("adapter_failed", type(error).__name__, retryable=True)


class DeliveryWorker:
    """Claims due deliveries, sends them and records the outcome, until cancelled."""

    def __init__(
        self,
        context_of: Callable[[], ServiceContext],
        *,
        adapters: AdapterRegistry | None = None,
        channel_settings: Mapping[tuple[str, str], ChannelSettings] | None = None,
        poll_seconds: float = 0.2,
        batch: int = 20,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.context_of = context_of
        self.adapters = adapters or AdapterRegistry({})
        self.channel_settings = channel_settings or {}
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.timeout_seconds = timeout_seconds

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
            while True:
                handled = await self.run_once(client)
                if handled < self.batch:
                    await asyncio.sleep(self.poll_seconds)

    async def run_once(self, client: httpx.AsyncClient) -> int:
        """One round: claim, send concurrently, record; returns how many were handled."""
        context = self.context_of()
        async with context.store.reader.connect() as connection:
            if not await any_due(connection, context.clock.now()):
                return 0
        async with context.store.unit_of_work() as uow:
            claimed = await claim_due(uow.connection, context.clock.now(), self.batch)
            await uow.commit()
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._attempt(client, context, row) for row in claimed))
        for row, outcome in zip(claimed, outcomes, strict=True):
            await self._record(context, row, outcome)
        return len(claimed)

    async def _attempt(
        self, client: httpx.AsyncClient, context: ServiceContext, row: dict[str, Any]
    ) -> DeliveryOutcome:
        channel = _channel_of(context.config, row["tenant_id"], row["channel_id"])
        if channel is None:
            return DeliveryOutcome.failed(
                "unknown_channel",
                f"no channel {row['channel_id']!r} is configured",
                retryable=False,
            )
        adapter = None
        if not sends_natively(channel):
            adapter = self.adapters.for_channel(channel.type, channel.provider)
        if adapter is None:
            return await send_message(client, channel, row)
        return await send_with_adapter(
            client,
            adapter,
            adapter_channel(
                row["tenant_id"],
                channel,
                self.channel_settings.get((row["tenant_id"], channel.id), ChannelSettings()),
                context.clock.now(),
            ),
            row,
        )

    async def _record(
        self, context: ServiceContext, row: dict[str, Any], outcome: DeliveryOutcome
    ) -> None:
        now = context.clock.now()
        attempt = row["attempts"]
        channel = _channel_of(context.config, row["tenant_id"], row["channel_id"])
        policy = retry_policy_of(channel)
        cause = envelope_class(payload_class(row["cause"]["type"])).model_validate(row["cause"])
        data: MessageSent = cause.data
        table = OUTBOUND_DELIVERIES
        async with context.store.unit_of_work() as uow:
            current = await uow.connection.execute(
                select(table.c.status, table.c.attempts).where(
                    table.c.tenant_id == row["tenant_id"], table.c.message_id == row["message_id"]
                )
            )
            found = current.first()
            if found is None or found.status != "pending" or found.attempts != attempt:
                return  # recorded already, or erased meanwhile
            where = (table.c.tenant_id == row["tenant_id"], table.c.message_id == row["message_id"])
            if outcome.delivered:
                assert outcome.provider_message_id is not None
                await uow.connection.execute(
                    table.update()
                    .where(*where)
                    .values(
                        status="sent",
                        lease_until=None,
                        provider_message_id=outcome.provider_message_id,
                    )
                )
                uow.emit(
                    caused_by(
                        cause,
                        MessageDelivered(
                            conversation_id=data.conversation_id,
                            message_id=data.message_id,
                            channel=data.channel,
                            channel_id=data.channel_id,
                            provider_message_id=outcome.provider_message_id,
                            state=DeliveryState.SENT,
                            state_changed_at=now,
                        ),
                        source=SOURCE,
                        time=now,
                        discriminator="sent",
                    )
                )
            else:
                final = policy.gives_up_after(attempt, outcome)
                values: dict[str, Any] = {
                    "lease_until": None,
                    "last_error": (outcome.error_code or "")[:255],
                }
                if final:
                    values["status"] = "failed"
                else:
                    values["next_attempt_at"] = moment(policy.next_attempt_at(attempt, now))
                await uow.connection.execute(table.update().where(*where).values(**values))
                uow.emit(
                    caused_by(
                        cause,
                        MessageFailed(
                            conversation_id=data.conversation_id,
                            message_id=data.message_id,
                            channel=data.channel,
                            channel_id=data.channel_id,
                            provider_message_id=None,
                            error_code=outcome.error_code or "unknown",
                            error_message=outcome.error_message or "",
                            retryable=not final,
                            attempts=attempt,
                            failed_at=now,
                        ),
                        source=SOURCE,
                        time=now,
                        discriminator=f"attempt-{attempt}",
                    )
                )
                log.info(
                    "outbound delivery failed",
                    channel_id=data.channel_id,
                    conversation_id=data.conversation_id,
                    error_code=outcome.error_code,
                    attempt=attempt,
                    final=final,
                )
            await uow.commit()


def desk_projections() -> list[Projection]:
    """The desk's projections: the conversation read model and the outbound intake."""
    return [DeskReadModel(), OutboundIntake()]


def desk_background(
    service: Service,
    *,
    adapters: AdapterRegistry | None = None,
    channel_settings: Mapping[tuple[str, str], ChannelSettings] | None = None,
) -> list[Callable[[], Awaitable[None]]]:
    """The desk's background loops: the outbound delivery worker."""
    worker = DeliveryWorker(
        lambda: service.context, adapters=adapters, channel_settings=channel_settings
    )
    return [worker.run]
