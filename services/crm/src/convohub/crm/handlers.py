"""Event handlers of the crm service: the conversation projection (event in, domain call,
unit of work) and the commands the API carries out in a unit of work of their own."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from convohub.contracts import Envelope, caused_by, derived_event_id, new_event
from convohub.contracts.events.common import ChannelIdentity, Participant, ParticipantKind
from convohub.contracts.events.conversation import (
    CallEnded,
    CallStarted,
    ChannelSwitched,
    ConversationClosed,
    ConversationReopened,
    ConversationResolved,
    ConversationStarted,
    MessageReceived,
    MessageSent,
)
from convohub.contracts.events.customer import (
    CustomerErased,
    CustomerErasureRequested,
    CustomerIdentified,
    CustomerIdentitiesMerged,
    CustomerMergeUndone,
    CustomerProfileUpdated,
    ErasureReason,
    MergeReason,
)
from convohub.contracts.payload import EventPayload
from convohub.contracts.topics import CONVERSATION, CUSTOMER, CUSTOMER_PROFILE
from convohub.crm.adapters.repository import CustomerRepository, lock_tenant
from convohub.crm.adapters.tables import APPLIED_COMMANDS, CONVERSATIONS, METADATA, TIMELINE
from convohub.crm.domain.book import (
    Book,
    CustomerNotFoundError,
    MergeConflictError,
    ProfileChange,
)
from convohub.crm.domain.identifiers import Identifier, SeenIdentifier, identifiers_of
from convohub.crm.domain.profiles import DISPLAY_NAME
from convohub.crm.domain.settings import CrmSettings
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.store import UnitOfWork

SOURCE = "/convohub/crm"
_IDS = uuid.UUID("5b0c9f55-8f3c-4d38-9a44-0c1d3e2f4a60")


def minted_id(prefix: str, *parts: str) -> str:
    """A deterministic id (redelivery mints the same one)."""
    return f"{prefix}-{uuid.uuid5(_IDS, '/'.join(parts)).hex[:20]}"


def _identity_of(payload: EventPayload) -> ChannelIdentity | None:
    if isinstance(payload, ConversationStarted | MessageReceived | ChannelSwitched | CallStarted):
        return payload.customer
    return None


def _timeline_row(event: Envelope[Any]) -> dict[str, Any] | None:
    """The timeline entry an event makes (texts of messages included), or None."""
    data = event.data
    row: dict[str, Any] = {"direction": None, "message_id": None, "text": None}
    match data:
        case ConversationStarted():
            row |= {"kind": "conversation_started", "at": data.started_at}
            row |= {"channel": data.channel.value, "channel_id": data.channel_id}
        case MessageReceived():
            row |= {"kind": "message", "at": data.received_at, "direction": "inbound"}
            row |= {"channel": data.channel.value, "channel_id": data.channel_id}
            row |= {"message_id": data.message_id, "text": data.content.text}
        case MessageSent():
            row |= {"kind": "message", "at": data.sent_at, "direction": "outbound"}
            row |= {"channel": data.channel.value, "channel_id": data.channel_id}
            row |= {"message_id": data.message_id, "text": data.content.text}
        case ChannelSwitched():
            row |= {"kind": "channel_switched", "at": data.switched_at}
            row |= {"channel": data.to_channel.value, "channel_id": data.to_channel_id}
        case CallStarted():
            row |= {"kind": "call_started", "at": data.started_at, "channel": "voice"}
            row |= {"channel_id": data.channel_id, "direction": data.direction.value}
        case CallEnded():
            row |= {"kind": "call_ended", "at": data.ended_at, "channel": "voice"}
            row |= {"channel_id": data.channel_id}
        case ConversationResolved():
            row |= {"kind": "conversation_resolved", "at": data.resolved_at}
        case ConversationReopened():
            row |= {"kind": "conversation_reopened", "at": data.reopened_at}
        case ConversationClosed():
            row |= {"kind": "conversation_closed", "at": data.closed_at}
        case _:
            return None
    at = row.pop("at")
    return {
        "tenant_id": event.tenantid,
        "entry_id": event.id,
        "conversation_id": data.conversation_id,
        "occurred_at": at,
        "channel": row.get("channel"),
        "channel_id": row.get("channel_id"),
        "kind": row["kind"],
        "direction": row["direction"],
        "message_id": row["message_id"],
        "text": row["text"],
    }


async def save_book(repository: CustomerRepository, book: Book, at: datetime) -> list[Any]:
    """Re-evaluate the changed customers' segments and write the book back; returns the
    segment events to emit (with `emit_book_changes`)."""
    segment_events = book.refresh_segments(at)
    await repository.save(book, at)
    return segment_events


def emit_book_changes(
    uow: UnitOfWork,
    book: Book,
    tenant_id: str,
    at: datetime,
    segment_events: list[Any],
    *,
    correlation_id: str | None = None,
    traceparent: str | None = None,
) -> None:
    """Segment events and one profile snapshot per changed customer, with ids derived from
    the customer's profile version (a redelivered batch emits the same ids)."""
    for payload in [*segment_events, *book.snapshots(at)]:
        customer = book.customers[payload.customer_id]
        discriminator = getattr(payload, "segment_id", "")
        event_id = derived_event_id(
            f"{tenant_id}/{customer.id}/{customer.version}", payload.event_type, discriminator
        )
        uow.emit(
            new_event(
                payload,
                tenant_id=tenant_id,
                source=SOURCE,
                time=at,
                event_id=event_id,
                correlation_id=correlation_id,
            ),
            traceparent=traceparent,
        )


def emit_profile_tombstones(
    uow: UnitOfWork, tenant_id: str, request_id: str, erased_ids: Sequence[str]
) -> None:
    """A tombstone (null value) per erased customer on the compacted profile topic, after
    the erased snapshots: compaction then deletes every snapshot of the person."""
    for customer_id in erased_ids:
        uow.emit_tombstone(
            CUSTOMER_PROFILE.name,
            customer_id,
            tombstone_id=derived_event_id(
                f"{tenant_id}/{request_id}", f"tombstone:{CUSTOMER_PROFILE.name}", customer_id
            ),
        )


_COMMAND_TYPES = {
    CustomerIdentified.event_type,  # only those without a conversation: the API's
    CustomerIdentitiesMerged.event_type,
    CustomerMergeUndone.event_type,
    CustomerProfileUpdated.event_type,
    CustomerErasureRequested.event_type,
}


class ConversationProjection(Projection):
    """Identities, conversations and the timeline from the conversation topic; and, from
    the customer topic, the effects of the API's commands (merges, undos, profile updates,
    erasures), which live were applied by the API already (skipped here by event id) and
    on a replay are rebuilt in log order."""

    name = "crm.customers"
    topics = (CONVERSATION.name, CUSTOMER.name)
    metadata = METADATA

    def __init__(self, settings: dict[str, CrmSettings]) -> None:
        self.settings = settings

    async def apply(self, events: Sequence[ConsumedEvent], uow: UnitOfWork) -> None:
        by_tenant: dict[str, list[ConsumedEvent]] = {}
        for consumed in events:
            if consumed.event.tenantid in self.settings:
                by_tenant.setdefault(consumed.event.tenantid, []).append(consumed)
        for tenant_id in sorted(by_tenant):  # one lock order for every replica
            await self._apply_tenant(tenant_id, by_tenant[tenant_id], uow)

    async def _apply_tenant(
        self, tenant_id: str, events: list[ConsumedEvent], uow: UnitOfWork
    ) -> None:
        await lock_tenant(uow.connection, tenant_id)
        commands = [c for c in events if c.event.type in _COMMAND_TYPES]
        applied = await _applied_commands(uow, tenant_id, [c.event.id for c in commands])
        run: list[ConsumedEvent] = []
        for consumed in events:
            if consumed.event.type.startswith("convohub.conversation."):
                run.append(consumed)
            elif consumed.event.type in _COMMAND_TYPES and consumed.event.id not in applied:
                if run:
                    await self._apply_conversation_events(tenant_id, run, uow)
                    run = []
                await self._apply_command(tenant_id, consumed, uow)
        if run:
            await self._apply_conversation_events(tenant_id, run, uow)

    async def _apply_command(
        self, tenant_id: str, consumed: ConsumedEvent, uow: UnitOfWork
    ) -> None:
        """Rebuild the effect of an API command from its event (see the class doc)."""
        event, data = consumed.event, consumed.event.data
        settings = self.settings[tenant_id]
        repository = CustomerRepository(uow.connection, tenant_id)
        at = event.time
        try:
            if isinstance(data, CustomerIdentified):
                if data.conversation_id is not None:
                    return  # decided by this projection from conversation events
                book = await repository.load(settings, [data.customer_id])
                identifier = Identifier(data.identifier.kind, data.identifier.value)
                book.attach_identifier(
                    data.customer_id,
                    SeenIdentifier(
                        identifier, data.identifier.verified, data.identifier.channel_id
                    ),
                )
            elif isinstance(data, CustomerIdentitiesMerged):
                if data.reason == MergeReason.VERIFIED_EXACT_MATCH:
                    return  # decided by this projection from conversation events
                book = await repository.load(settings, [data.customer_id, data.merged_customer_id])
                book.merge(
                    data.customer_id,
                    data.merged_customer_id,
                    merge_id=data.merge_id,
                    reason=data.reason,
                    at=at,
                    approved_by=data.approved_by,
                    proposal_id=data.proposal_id,
                )
                if data.proposal_id:
                    await repository.close_proposal(data.proposal_id, "approved")
            elif isinstance(data, CustomerMergeUndone):
                book = await repository.load(settings, [], merge_ids=[data.merge_id])
                book.undo(data.merge_id, at=at, undone_by=data.undone_by, reason=data.reason)
            elif isinstance(data, CustomerProfileUpdated):
                book = await repository.load(settings, [data.customer_id])
                change = ProfileChange(
                    display_name=data.changed_attributes.get(DISPLAY_NAME),  # type: ignore[arg-type]
                    tier=data.tier,
                    lifetime_value=Decimal(data.lifetime_value) if data.lifetime_value else None,
                    lifetime_value_currency=data.lifetime_value_currency,
                    attributes={
                        **{
                            name: value
                            for name, value in data.changed_attributes.items()
                            if name != DISPLAY_NAME
                        },
                        **dict.fromkeys(data.removed_attributes),
                    },
                    tags_added=tuple(data.tags_added),
                    tags_removed=tuple(data.tags_removed),
                )
                book.update_profile(data.customer_id, change, at=at, updated_by=data.updated_by)
            elif isinstance(data, CustomerErasureRequested):
                book = await repository.load(settings, [data.customer_id], with_family=True)
                erased = book.erase(data.customer_id)
                segment_events = await save_book(repository, book, at)
                await repository.purge(erased, at)
                emit_book_changes(uow, book, tenant_id, at, segment_events)
                emit_profile_tombstones(uow, tenant_id, data.request_id, erased)
                return
            else:
                return
        except (CustomerNotFoundError, MergeConflictError):
            return  # its customers were erased since (their conversations are skipped)
        segment_events = await save_book(repository, book, at)
        emit_book_changes(uow, book, tenant_id, at, segment_events)

    async def _apply_conversation_events(
        self, tenant_id: str, events: list[ConsumedEvent], uow: UnitOfWork
    ) -> None:
        settings = self.settings[tenant_id]
        repository = CustomerRepository(uow.connection, tenant_id)
        conversation_ids = {c.event.data.conversation_id for c in events}
        erased = await repository.erased_conversations(conversation_ids)
        events = [c for c in events if c.event.data.conversation_id not in erased]
        if not events:
            return
        seen_by_event = {}
        names = []
        for consumed in events:
            identity = _identity_of(consumed.event.data)
            if identity is not None:
                seen_by_event[consumed.event.id] = identifiers_of(identity, settings.default_region)
                names.append(identity.display_name)
        conversations = await repository.conversation_customers(conversation_ids)
        owners = await repository.owners(
            seen.identifier for found in seen_by_event.values() for seen in found
        )
        named = await repository.ids_named(names)
        book = await repository.load(settings, {*conversations.values(), *owners.values(), *named})
        new_conversations = []
        for consumed in events:
            event = consumed.event
            data = event.data
            seen = seen_by_event.get(event.id)
            if not seen:
                continue
            identity = _identity_of(data)
            assert identity is not None
            observation = book.observe(
                seen,
                at=event.time,
                new_customer_id=minted_id("cust", event.id),
                new_id=lambda discriminator, cause=event.id: minted_id("m", cause, discriminator),
                conversation_customer_id=conversations.get(data.conversation_id),
                conversation_id=data.conversation_id,
                display_name=identity.display_name,
                new_conversation=data.conversation_id not in conversations,
            )
            if data.conversation_id not in conversations and observation.customer_id:
                conversations[data.conversation_id] = observation.customer_id
                new_conversations.append(
                    {
                        "tenant_id": tenant_id,
                        "conversation_id": data.conversation_id,
                        "customer_id": observation.customer_id,
                        "channel": identity.channel.value,
                        "channel_id": identity.channel_id,
                        "started_at": event.time,
                    }
                )
            for index, payload in enumerate(observation.events):
                uow.emit(
                    caused_by(event, payload, source=SOURCE, discriminator=str(index)),
                    traceparent=consumed.traceparent,
                )
        segment_events = await save_book(repository, book, events[-1].event.time)
        if new_conversations:
            await uow.connection.execute(CONVERSATIONS.insert(), new_conversations)
        rows = [row for row in (_timeline_row(c.event) for c in events) if row is not None]
        if rows:
            existing = await uow.connection.execute(
                select(TIMELINE.c.entry_id).where(
                    TIMELINE.c.tenant_id == tenant_id,
                    TIMELINE.c.entry_id.in_([row["entry_id"] for row in rows]),
                )
            )
            known = set(existing.scalars())
            rows = [row for row in rows if row["entry_id"] not in known]
            if rows:
                await uow.connection.execute(TIMELINE.insert(), rows)
        last = events[-1]
        emit_book_changes(
            uow,
            book,
            tenant_id,
            last.event.time,
            segment_events,
            correlation_id=last.event.correlationid,
            traceparent=last.traceparent,
        )


async def _applied_commands(uow: UnitOfWork, tenant_id: str, event_ids: list[str]) -> set[str]:
    if not event_ids:
        return set()
    rows = await uow.connection.execute(
        select(APPLIED_COMMANDS.c.event_id).where(
            APPLIED_COMMANDS.c.tenant_id == tenant_id,
            APPLIED_COMMANDS.c.event_id.in_(sorted(set(event_ids))),
        )
    )
    return set(rows.scalars())


# --- commands the API carries out ---------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who asked, as named in the audit events."""

    tenant_id: str
    user: str


async def _emit_new(
    uow: UnitOfWork, actor: Actor, payloads: Sequence[EventPayload], at: datetime
) -> None:
    """Emit the events of a command the API applied itself, remembering their ids so the
    projection does not apply them a second time when it reads them back."""
    events = [new_event(p, tenant_id=actor.tenant_id, source=SOURCE, time=at) for p in payloads]
    await uow.connection.execute(
        APPLIED_COMMANDS.insert(),
        [{"tenant_id": actor.tenant_id, "event_id": event.id} for event in events],
    )
    for event in events:
        uow.emit(event)


async def merge_customers(
    uow: UnitOfWork,
    settings: CrmSettings,
    actor: Actor,
    *,
    survivor_id: str,
    merged_id: str,
    at: datetime,
    proposal_id: str | None = None,
) -> Any:
    """Merge two customers (LookupError for an unknown id, MergeConflictError when they
    cannot be merged); returns the `identities_merged` payload."""
    await lock_tenant(uow.connection, actor.tenant_id)
    repository = CustomerRepository(uow.connection, actor.tenant_id)
    book = await repository.load(settings, [survivor_id, merged_id])
    merged = book.merge(
        survivor_id,
        merged_id,
        merge_id=minted_id("merge", actor.tenant_id, str(uuid.uuid4())),
        reason=MergeReason.SUPERVISOR_APPROVED if proposal_id else MergeReason.INTEGRATOR_REQUEST,
        at=at,
        approved_by=actor.user,
        proposal_id=proposal_id,
    )
    segment_events = await save_book(repository, book, at)
    if proposal_id:
        await repository.close_proposal(proposal_id, "approved")
    await _emit_new(uow, actor, [merged], at)
    emit_book_changes(uow, book, actor.tenant_id, at, segment_events)
    return merged


async def undo_merge(
    uow: UnitOfWork,
    settings: CrmSettings,
    actor: Actor,
    merge_id: str,
    *,
    at: datetime,
    reason: str | None,
) -> Any:
    await lock_tenant(uow.connection, actor.tenant_id)
    repository = CustomerRepository(uow.connection, actor.tenant_id)
    book = await repository.load(settings, [], merge_ids=[merge_id])
    undone = book.undo(merge_id, at=at, undone_by=actor.user, reason=reason)
    segment_events = await save_book(repository, book, at)
    await _emit_new(uow, actor, [undone], at)
    emit_book_changes(uow, book, actor.tenant_id, at, segment_events)
    return undone


async def update_profile(
    uow: UnitOfWork,
    settings: CrmSettings,
    actor: Actor,
    customer_id: str,
    change: ProfileChange,
    *,
    at: datetime,
) -> str:
    """Apply an integrator's profile change; returns the (surviving) customer id."""
    await lock_tenant(uow.connection, actor.tenant_id)
    repository = CustomerRepository(uow.connection, actor.tenant_id)
    book = await repository.load(settings, [customer_id])
    root = book.root(customer_id)
    updated = book.update_profile(
        root, change, at=at, updated_by=Participant(kind=ParticipantKind.SYSTEM, id=actor.user)
    )
    if updated is not None:
        segment_events = await save_book(repository, book, at)
        await _emit_new(uow, actor, [updated], at)
        emit_book_changes(uow, book, actor.tenant_id, at, segment_events)
    return root


async def add_identifier(
    uow: UnitOfWork,
    settings: CrmSettings,
    actor: Actor,
    customer_id: str,
    seen: SeenIdentifier,
    *,
    at: datetime,
) -> str:
    """An integrator gives the customer an identifier. If another customer holds it and
    the integrator vouches for it (`verified`), that customer is merged into this one
    (reason integrator_request); an unverified identifier of another customer is refused
    (MergeConflictError). Returns the customer id that holds it now."""
    await lock_tenant(uow.connection, actor.tenant_id)
    repository = CustomerRepository(uow.connection, actor.tenant_id)
    owners = await repository.owners([seen.identifier])
    book = await repository.load(settings, [customer_id, *owners.values()])
    root = book.root(customer_id)
    owner = book.owner(seen.identifier)
    payloads: list[EventPayload] = []
    if owner is not None and book.root(owner) != root:
        if not seen.verified:
            raise MergeConflictError(
                "another customer holds this unverified identifier; merge the customers first"
            )
        payloads.append(
            book.merge(
                root,
                owner,
                merge_id=minted_id("merge", actor.tenant_id, str(uuid.uuid4())),
                reason=MergeReason.INTEGRATOR_REQUEST,
                at=at,
                approved_by=actor.user,
            )
        )
    else:
        identified = book.attach_identifier(root, seen)
        if identified is not None:
            payloads.append(identified)
    if payloads:
        segment_events = await save_book(repository, book, at)
        await _emit_new(uow, actor, payloads, at)
        emit_book_changes(uow, book, actor.tenant_id, at, segment_events)
    return root


async def erase_customer(
    uow: UnitOfWork,
    settings: CrmSettings,
    actor: Actor,
    customer_id: str,
    *,
    reason: ErasureReason,
    at: datetime,
) -> CustomerErasureRequested:
    """Record who asked to erase whom (the audit event), purge CRM's own personal data of
    the customer and everyone merged into it, then announce `erased` to every service and
    tombstone each erased customer's key on the compacted profile topic."""
    await lock_tenant(uow.connection, actor.tenant_id)
    repository = CustomerRepository(uow.connection, actor.tenant_id)
    book = await repository.load(settings, [customer_id], with_family=True)
    root = book.root(customer_id)
    book = await repository.load(settings, [root], with_family=True)
    request = CustomerErasureRequested(
        customer_id=root,
        request_id=minted_id("erase", actor.tenant_id, str(uuid.uuid4())),
        requested_by=actor.user,
        reason=reason,
        requested_at=at,
    )
    erased_ids = book.erase(root)
    segment_events = await save_book(repository, book, at)
    await repository.purge(erased_ids, at)
    erased = [
        CustomerErased(
            customer_id=member,
            request_id=request.request_id,
            erased_at=at,
            confirmed_by_services=["crm"],
        )
        for member in erased_ids
    ]
    await _emit_new(uow, actor, [request, *erased], at)
    emit_book_changes(uow, book, actor.tenant_id, at, segment_events)
    emit_profile_tombstones(uow, actor.tenant_id, request.request_id, erased_ids)
    return request
