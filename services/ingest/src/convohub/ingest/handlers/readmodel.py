"""The desk's read model: conversation, routing and feedback events folded into one row per
conversation plus its timeline, and customer erasure purging them.

An erasure also records the customer's conversations in ingest's erasure ledger
(`ingest_erased_conversations`, which no replay drops); a conversation found there is
folded as erased from its first event on, so a rebuild never stores the person again.

`apply_to_read_model` is idempotent per event (timeline rows are keyed by event id, row
changes are set-like), so an agent command applies its own event at once (read your
writes) and the projection applying it again from the log changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import MetaData, select
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.contracts import Envelope
from convohub.contracts.personal import redact
from convohub.contracts.topics import CONVERSATION, CUSTOMER, FEEDBACK, ROUTING
from convohub.ingest.adapters.desk import (
    DESK_COMMANDS,
    DESK_CONVERSATIONS,
    DESK_CUSTOMERS,
    DESK_TIMELINE,
    insert_ignoring_duplicates,
    load_conversation,
    load_conversations,
    moment,
    save_conversations,
)
from convohub.ingest.adapters.erasure import erased_conversations, remember_erased
from convohub.ingest.adapters.outbound import purge_outbound_for
from convohub.ingest.domain.desk import ConversationState, next_state
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.store import UnitOfWork

log = structlog.get_logger(__name__)

READ_MODEL_METADATA = MetaData()
for _table in (DESK_CONVERSATIONS, DESK_TIMELINE, DESK_CUSTOMERS):
    _table.to_metadata(READ_MODEL_METADATA)
del _table

_CONVERSATION = "convohub.conversation."
_ROUTING = "convohub.routing."
# Routing chatter that changes no one's view of the conversation stays out of the timeline.
_NOT_IN_TIMELINE = {
    "convohub.routing.queued.v1",
    "convohub.routing.offered.v1",
    "convohub.routing.offer_declined.v1",
    "convohub.routing.offer_expired.v1",
    "convohub.routing.offer_accepted.v1",
    "convohub.conversation.message_delivered.v1",
    "convohub.conversation.message_failed.v1",
}
_TIMELINE_FEEDBACK = {
    "convohub.feedback.survey_sent.v1",
    "convohub.feedback.survey_answered.v1",
    "convohub.feedback.survey_expired.v1",
}
_DELIVERY_RANK = {
    None: 0,
    "pending": 0,
    "retrying": 1,
    "failed": 2,
    "sent": 3,
    "delivered": 4,
    "read": 5,
}


def _is_conversation_event(event_type: str) -> bool:
    return (
        event_type.startswith(_CONVERSATION)
        or event_type.startswith(_ROUTING)
        or event_type in _TIMELINE_FEEDBACK
    )


def _new_row(tenant_id: str, conversation_id: str, at: str) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "conversation_id": conversation_id,
        "state": ConversationState.OPEN.value,
        "channel": None,
        "channel_id": None,
        "channels": [],
        "customer": None,
        "customer_id": None,
        "customer_erased": False,
        "assigned_agent_id": None,
        "skill_group": None,
        "priority": None,
        "vip": None,
        "agents": [],
        "tags": [],
        "started_at": None,
        "updated_at": at,
    }


def _add_channel(row: dict[str, Any], channel: str, channel_id: str) -> None:
    entry = {"channel": channel, "channel_id": channel_id}
    if entry not in row["channels"]:
        row["channels"] = [*row["channels"], entry]
    row["channel"], row["channel_id"] = channel, channel_id


def _add_agent(row: dict[str, Any], participant: dict[str, Any] | None) -> None:
    agent_id = participant.get("id") if participant else None
    is_agent = bool(participant) and participant.get("kind") == "agent"  # type: ignore[union-attr]
    if is_agent and agent_id and agent_id not in row["agents"]:
        row["agents"] = [*row["agents"], agent_id]


def _fold(row: dict[str, Any], event: Envelope[Any], data: dict[str, Any]) -> None:
    """Change the conversation row for one event (set-like: re-applying changes nothing)."""
    kind = event.type
    state = next_state(ConversationState(row["state"]), kind)
    row["state"] = state.value if state else row["state"]
    if kind == "convohub.conversation.started.v1":
        _add_channel(row, data["channel"], data["channel_id"])
        if not row["customer_erased"]:
            row["customer"] = data["customer"]
        row["started_at"] = row["started_at"] or moment(event.time)
    elif kind == "convohub.conversation.message_received.v1":
        if row["channel"] is None:
            _add_channel(row, data["channel"], data["channel_id"])
        if row["customer"] is None and not row["customer_erased"]:
            row["customer"] = data["customer"]
    elif kind == "convohub.conversation.channel_switched.v1":
        _add_channel(row, data["to_channel"], data["to_channel_id"])
        if not row["customer_erased"]:
            row["customer"] = data["customer"]
    elif kind in ("convohub.conversation.message_sent.v1", "convohub.conversation.note_added.v1"):
        _add_agent(row, data.get("author"))
    elif kind == "convohub.conversation.priority_changed.v1":
        row["priority"] = data["to_priority"]
    elif kind == "convohub.conversation.tags_changed.v1":
        tags = [tag for tag in row["tags"] if tag not in data.get("tags_removed", [])]
        row["tags"] = tags + [tag for tag in data.get("tags_added", []) if tag not in tags]
    elif kind == "convohub.routing.classified.v1":
        row["skill_group"] = data["skill_group"]
        row["priority"] = row["priority"] or data["priority"]
        row["vip"] = data["vip"]
    elif kind == "convohub.routing.queued.v1":
        row["skill_group"] = data["skill_group"]
    elif kind == "convohub.routing.assigned.v1":
        row["assigned_agent_id"] = data["agent_id"]
        row["skill_group"] = data["skill_group"]
        _add_agent(row, {"kind": "agent", "id": data["agent_id"]})
    elif kind == "convohub.routing.transferred.v1":
        row["assigned_agent_id"] = data.get("to_agent_id")
        if data.get("to_skill_group"):
            row["skill_group"] = data["to_skill_group"]
        if data.get("to_agent_id"):
            _add_agent(row, {"kind": "agent", "id": data["to_agent_id"]})
    row["updated_at"] = max(row["updated_at"], moment(event.time))


def _timeline_data(event: Envelope[Any], erased: bool) -> dict[str, Any]:
    data = event.data.model_dump(mode="json")
    if erased:
        data = redact({"type": event.type, "data": data})["data"]
    return data


async def apply_to_read_model(connection: AsyncConnection, events: Iterable[Envelope[Any]]) -> None:
    """Fold `events` (any topic; unrelated ones are ignored) into the read model.

    A batch loads each conversation row once, folds its events in memory, and writes the
    rows, the timeline entries and the delivery states with a few statements.
    """
    batch = _Batch(connection)
    events = list(events)
    await batch.prefetch(events)
    for event in events:
        if event.type == "convohub.customer.identified.v1":
            await batch.flush()
            await _identified(connection, event)
        elif event.type == "convohub.customer.erased.v1":
            await batch.flush()
            await _erase(connection, event.tenantid, event.data.customer_id, event.data.erased_at)
        elif _is_conversation_event(event.type):
            await batch.add(event)
    await batch.flush()


class _Batch:
    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.rows: dict[tuple[str, str], tuple[dict[str, Any], bool]] = {}
        self.timeline: list[dict[str, Any]] = []
        self.deliveries: list[tuple[str, str, str, str, str | None]] = []
        self.prefetched: dict[tuple[str, str], dict[str, Any]] = {}
        self.fetched: set[tuple[str, str]] = set()
        self.erased: set[tuple[str, str]] = set()  # in the erasure ledger, of `fetched`

    async def prefetch(self, events: list[Envelope[Any]]) -> None:
        """Load every conversation the batch touches in one query (per tenant)."""
        keys = {
            (event.tenantid, event.data.conversation_id)
            for event in events
            if _is_conversation_event(event.type)
        }
        self.prefetched = await load_conversations(self.connection, keys)
        self.fetched = keys
        by_tenant: dict[str, list[str]] = {}
        for tenant_id, conversation_id in keys:
            by_tenant.setdefault(tenant_id, []).append(conversation_id)
        for tenant_id, ids in by_tenant.items():
            found = await erased_conversations(self.connection, tenant_id, ids)
            self.erased |= {(tenant_id, conversation_id) for conversation_id in found}

    async def _is_erased(self, key: tuple[str, str]) -> bool:
        if key in self.fetched:
            return key in self.erased
        return bool(await erased_conversations(self.connection, key[0], [key[1]]))

    async def add(self, event: Envelope[Any]) -> None:
        data = event.data.model_dump(mode="json")
        tenant_id, conversation_id = event.tenantid, data["conversation_id"]
        key = (tenant_id, conversation_id)
        if key not in self.rows:
            loaded = self.prefetched.pop(key, None)
            if loaded is None and key not in self.fetched:
                loaded = await load_conversation(self.connection, tenant_id, conversation_id)
            if loaded is None and event.type in _TIMELINE_FEEDBACK:
                return  # a survey of a conversation this desk never saw
            if loaded is None:
                self.rows[key] = (_new_row(tenant_id, conversation_id, moment(event.time)), False)
            else:
                self.rows[key] = (loaded, True)
            row = self.rows[key][0]
            if not row["customer_erased"] and await self._is_erased(key):
                row["customer_erased"] = True
                row["customer"] = _redacted_customer(row["customer"])
        row, _ = self.rows[key]
        _fold(row, event, data)
        if event.type == "convohub.conversation.message_delivered.v1":
            self.deliveries.append(
                (tenant_id, conversation_id, data["message_id"], data["state"], None)
            )
        elif event.type == "convohub.conversation.message_failed.v1":
            state = "retrying" if data["retryable"] else "failed"
            self.deliveries.append(
                (tenant_id, conversation_id, data["message_id"], state, data["error_code"])
            )
        if event.type in _NOT_IN_TIMELINE:
            return
        is_message = event.type.endswith(("message_sent.v1", "message_received.v1"))
        self.timeline.append(
            {
                "tenant_id": tenant_id,
                "conversation_id": conversation_id,
                "event_id": event.id,
                "type": event.type,
                "occurred_at": moment(event.time),
                "message_id": data.get("message_id") if is_message else None,
                "delivery_state": "pending" if event.type.endswith("message_sent.v1") else None,
                "delivery_error": None,
                "data": _timeline_data(event, row["customer_erased"]),
            }
        )

    async def flush(self) -> None:
        await save_conversations(
            self.connection,
            [row for row, existed in self.rows.values() if not existed],
            [row for row, existed in self.rows.values() if existed],
        )
        await insert_ignoring_duplicates(self.connection, DESK_TIMELINE, self.timeline)
        for tenant_id, conversation_id, message_id, state, error in self.deliveries:
            await _delivery_state(
                self.connection, tenant_id, conversation_id, message_id, state, error
            )
        # What follows a flush (an identification, an erasure) changes rows in the
        # database: later events of the batch read them again.
        self.prefetched.clear()
        self.fetched.clear()
        self.erased.clear()
        self.rows.clear()
        self.timeline.clear()
        self.deliveries.clear()


async def _delivery_state(
    connection: AsyncConnection,
    tenant_id: str,
    conversation_id: str,
    message_id: str,
    state: str,
    error: str | None,
) -> None:
    where = (
        DESK_TIMELINE.c.tenant_id == tenant_id,
        DESK_TIMELINE.c.conversation_id == conversation_id,
        DESK_TIMELINE.c.message_id == message_id,
        DESK_TIMELINE.c.type == "convohub.conversation.message_sent.v1",
    )
    current = await connection.scalar(select(DESK_TIMELINE.c.delivery_state).where(*where))
    if _DELIVERY_RANK.get(state, 0) >= _DELIVERY_RANK.get(current, 0):
        await connection.execute(
            DESK_TIMELINE.update().where(*where).values(delivery_state=state, delivery_error=error)
        )


async def _identified(connection: AsyncConnection, event: Envelope[Any]) -> None:
    conversation_id = event.data.conversation_id
    if conversation_id is None:
        return
    await insert_ignoring_duplicates(
        connection,
        DESK_CUSTOMERS,
        [
            {
                "tenant_id": event.tenantid,
                "customer_id": event.data.customer_id,
                "conversation_id": conversation_id,
            }
        ],
    )
    await connection.execute(
        DESK_CONVERSATIONS.update()
        .where(
            DESK_CONVERSATIONS.c.tenant_id == event.tenantid,
            DESK_CONVERSATIONS.c.conversation_id == conversation_id,
        )
        .values(customer_id=event.data.customer_id)
    )


async def conversations_of_customer(
    connection: AsyncConnection, tenant_id: str, customer_id: str
) -> list[str]:
    mapped = select(DESK_CUSTOMERS.c.conversation_id).where(
        DESK_CUSTOMERS.c.tenant_id == tenant_id, DESK_CUSTOMERS.c.customer_id == customer_id
    )
    direct = select(DESK_CONVERSATIONS.c.conversation_id).where(
        DESK_CONVERSATIONS.c.tenant_id == tenant_id,
        DESK_CONVERSATIONS.c.customer_id == customer_id,
    )
    found = set((await connection.execute(mapped)).scalars())
    found |= set((await connection.execute(direct)).scalars())
    return sorted(found)


def _redacted_customer(customer: dict[str, Any] | None) -> dict[str, Any] | None:
    """The conversation's customer identity without its personal fields."""
    if not customer:
        return customer
    document = {"type": "convohub.conversation.started.v1", "data": {"customer": customer}}
    redacted: dict[str, Any] = redact(document)["data"]["customer"]
    return redacted


async def _erase(
    connection: AsyncConnection, tenant_id: str, customer_id: str, at: datetime
) -> None:
    """Purge the customer's personal data: identities, message texts and every other
    personal field of their conversations' timelines, and their outbound queue rows; and
    record the conversations in the erasure ledger."""
    conversation_ids = await conversations_of_customer(connection, tenant_id, customer_id)
    await remember_erased(connection, tenant_id, conversation_ids, at)
    for conversation_id in conversation_ids:
        row = await load_conversation(connection, tenant_id, conversation_id)
        if row is not None:
            customer = _redacted_customer(row["customer"])
            await connection.execute(
                DESK_CONVERSATIONS.update()
                .where(
                    DESK_CONVERSATIONS.c.tenant_id == tenant_id,
                    DESK_CONVERSATIONS.c.conversation_id == conversation_id,
                )
                .values(customer=customer, customer_erased=True)
            )
        entries = await connection.execute(
            select(DESK_TIMELINE.c.event_id, DESK_TIMELINE.c.type, DESK_TIMELINE.c.data).where(
                DESK_TIMELINE.c.tenant_id == tenant_id,
                DESK_TIMELINE.c.conversation_id == conversation_id,
            )
        )
        for entry in entries.all():
            redacted = redact({"type": entry.type, "data": entry.data})["data"]
            await connection.execute(
                DESK_TIMELINE.update()
                .where(
                    DESK_TIMELINE.c.tenant_id == tenant_id,
                    DESK_TIMELINE.c.conversation_id == conversation_id,
                    DESK_TIMELINE.c.event_id == entry.event_id,
                )
                .values(data=redacted)
            )
        await purge_outbound_for(connection, tenant_id, conversation_id)
    log.info("customer erased from the desk", conversations=len(conversation_ids))


class DeskReadModel(Projection):
    """Conversations as the agent desk reads them (`GET /v1/conversations[/{id}]`)."""

    name = "ingest.desk_read_model"
    topics = (CONVERSATION.name, ROUTING.name, FEEDBACK.name, CUSTOMER.name)
    metadata = READ_MODEL_METADATA

    async def apply(self, events: Sequence[ConsumedEvent], uow: UnitOfWork) -> None:
        await apply_to_read_model(uow.connection, (consumed.event for consumed in events))


__all__ = ["DESK_COMMANDS", "DeskReadModel", "apply_to_read_model", "conversations_of_customer"]
