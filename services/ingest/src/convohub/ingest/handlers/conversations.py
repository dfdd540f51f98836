"""The channel side's projection: what ingest must know, from the log, to place the next
customer contact and to serve web chat.

- conversation topic: resolved / reopened / closed (the desk's commands) keep each
  conversation's status; message_delivered / message_failed with a provider id map that
  id to the outbound message, so provider status callbacks find it; message_sent to a web
  chat visitor is kept for the visitor's event stream.
- feedback topic: survey_sent / survey_answered / survey_expired say whether a survey
  awaits the customer's answer (then a message does not reopen a resolved conversation).
- customer topic: customer.identified maps customer keys to customer ids;
  customer.erased purges that customer's personal data from ingest's tables and records
  the conversations in the erasure ledger, which a replay never drops (web chat replies
  of a ledgered conversation are not stored again).

The projection owns (and a replay drops and rebuilds) only the tables it builds from the
log alone: provider message ids, web chat replies and customer keys. The conversations
themselves are written by the inbound pipeline; a replay re-applies their status changes
in log order, which converges to the same state.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import MetaData, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.contracts.events.common import Channel
from convohub.contracts.events.customer import CustomerIdentifier, IdentifierKind
from convohub.contracts.topics import CONVERSATION, CUSTOMER, FEEDBACK
from convohub.ingest.adapters.erasure import erased_conversations, remember_erased
from convohub.ingest.adapters.repository import insert_ignoring_duplicates
from convohub.ingest.adapters.tables import (
    CALLS,
    CONVERSATIONS,
    CUSTOMER_KEYS,
    EMAIL_THREADS,
    PROVIDER_MESSAGES,
    WEBCHAT_REPLIES,
    WEBCHAT_SESSIONS,
)
from convohub.ingest.domain.conversations import ConversationStatus
from convohub.ingest.domain.identifiers import (
    InvalidIdentifierError,
    email_key,
    external_key,
    normalise_phone,
    phone_key,
    visitor_key,
    whatsapp_phone,
)
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.store import UnitOfWork

__all__ = ["ConversationStateProjection", "customer_key_of"]

CHANNEL_STATE_METADATA = MetaData()
for _table in (PROVIDER_MESSAGES, WEBCHAT_REPLIES, CUSTOMER_KEYS):
    _table.to_metadata(CHANNEL_STATE_METADATA)
del _table

_PREFIX = "convohub.conversation."
_STATUS_BY_TYPE = {
    "convohub.conversation.resolved.v1": ConversationStatus.RESOLVED,
    "convohub.conversation.reopened.v1": ConversationStatus.OPEN,
    "convohub.conversation.closed.v1": ConversationStatus.CLOSED,
}
_SURVEY_PENDING = {
    "convohub.feedback.survey_sent.v1": True,
    "convohub.feedback.survey_answered.v1": False,
    "convohub.feedback.survey_expired.v1": False,
}


def customer_key_of(identifier: CustomerIdentifier) -> str | None:
    """The customer key ingest uses for an identifier CRM resolved (None if it has none)."""
    value = identifier.value
    try:
        if identifier.kind is IdentifierKind.PHONE:
            return phone_key(normalise_phone(value))
        if identifier.kind is IdentifierKind.WHATSAPP_ID:
            return phone_key(whatsapp_phone(value))
    except InvalidIdentifierError:
        return None
    if identifier.kind is IdentifierKind.EMAIL:
        return email_key(value.strip().lower())
    if identifier.kind is IdentifierKind.WEB_VISITOR_ID and identifier.channel_id:
        return visitor_key(identifier.channel_id, value)
    if identifier.kind is IdentifierKind.EXTERNAL_ID and identifier.channel_id:
        return external_key(identifier.channel_id, value)
    return None


class ConversationStateProjection(Projection):
    name = "ingest.conversations"
    topics = (CONVERSATION.name, FEEDBACK.name, CUSTOMER.name)
    metadata = CHANNEL_STATE_METADATA

    async def apply(self, events: Sequence[ConsumedEvent], uow: UnitOfWork) -> None:
        connection = uow.connection
        for consumed in events:
            event = consumed.event
            data: Any = event.data
            status = _STATUS_BY_TYPE.get(event.type)
            if status is not None:
                await _set_status(connection, data.conversation_id, status)
            elif event.type in _SURVEY_PENDING:
                await connection.execute(
                    update(CONVERSATIONS)
                    .where(CONVERSATIONS.c.conversation_id == data.conversation_id)
                    .values(survey_pending=_SURVEY_PENDING[event.type])
                )
            elif event.type in (
                "convohub.conversation.message_delivered.v1",
                "convohub.conversation.message_failed.v1",
            ):
                if data.provider_message_id:
                    await connection.execute(
                        insert_ignoring_duplicates(connection, PROVIDER_MESSAGES).values(
                            tenant_id=event.tenantid,
                            channel_id=data.channel_id,
                            provider_message_id=data.provider_message_id,
                            conversation_id=data.conversation_id,
                            message_id=data.message_id,
                        )
                    )
            elif event.type == "convohub.conversation.message_sent.v1":
                if data.channel is Channel.WEB_CHAT and not await erased_conversations(
                    connection, event.tenantid, [data.conversation_id]
                ):
                    await connection.execute(
                        insert_ignoring_duplicates(connection, WEBCHAT_REPLIES).values(
                            message_id=data.message_id,
                            tenant_id=event.tenantid,
                            channel_id=data.channel_id,
                            address=data.recipient.address,
                            conversation_id=data.conversation_id,
                            author=data.author.model_dump(mode="json"),
                            text=data.content.text,
                            sent_at=data.sent_at,
                        )
                    )
            elif event.type == "convohub.customer.identified.v1":
                key = customer_key_of(data.identifier)
                if key is not None:
                    await connection.execute(
                        insert_ignoring_duplicates(connection, CUSTOMER_KEYS).values(
                            tenant_id=event.tenantid, customer_id=data.customer_id, customer_key=key
                        )
                    )
            elif event.type == "convohub.customer.erased.v1":
                await erase_customer(connection, event.tenantid, data.customer_id, data.erased_at)


async def _set_status(
    connection: AsyncConnection, conversation_id: str, status: ConversationStatus
) -> None:
    query = update(CONVERSATIONS).where(CONVERSATIONS.c.conversation_id == conversation_id)
    if status is not ConversationStatus.CLOSED:  # nothing reopens a closed conversation
        query = query.where(CONVERSATIONS.c.status != ConversationStatus.CLOSED.value)
    values: dict[str, Any] = {"status": status.value}
    if status is not ConversationStatus.RESOLVED:
        values["survey_pending"] = False
    await connection.execute(query.values(**values))


async def erase_customer(
    connection: AsyncConnection, tenant_id: str, customer_id: str, at: datetime
) -> None:
    """Purge identifiers, names and message texts of the customer from ingest's tables,
    and record their conversations in the erasure ledger."""
    erased_key = f"erased:{customer_id}"
    keys = list(
        (
            await connection.execute(
                select(CUSTOMER_KEYS.c.customer_key).where(
                    CUSTOMER_KEYS.c.tenant_id == tenant_id,
                    CUSTOMER_KEYS.c.customer_id == customer_id,
                )
            )
        ).scalars()
    )
    # On a replay the conversations were purged already (their key is `erased_key`);
    # what the replay rebuilt of them (web chat replies) goes again.
    conversations = list(
        (
            await connection.execute(
                select(CONVERSATIONS.c.conversation_id).where(
                    CONVERSATIONS.c.tenant_id == tenant_id,
                    or_(
                        CONVERSATIONS.c.customer_key.in_(keys),
                        CONVERSATIONS.c.customer_key == erased_key,
                    ),
                )
            )
        ).scalars()
    )
    if conversations:
        await remember_erased(connection, tenant_id, conversations, at)
        await connection.execute(
            update(CONVERSATIONS)
            .where(CONVERSATIONS.c.conversation_id.in_(conversations))
            .values(customer_key=erased_key, address="", display_name=None)
        )
        await connection.execute(
            delete(WEBCHAT_REPLIES).where(WEBCHAT_REPLIES.c.conversation_id.in_(conversations))
        )
        await connection.execute(
            delete(EMAIL_THREADS).where(EMAIL_THREADS.c.conversation_id.in_(conversations))
        )
        await connection.execute(delete(CALLS).where(CALLS.c.conversation_id.in_(conversations)))
    await connection.execute(
        delete(WEBCHAT_SESSIONS).where(
            WEBCHAT_SESSIONS.c.tenant_id == tenant_id, WEBCHAT_SESSIONS.c.customer_key.in_(keys)
        )
    )
    await connection.execute(
        delete(CUSTOMER_KEYS).where(
            CUSTOMER_KEYS.c.tenant_id == tenant_id, CUSTOMER_KEYS.c.customer_id == customer_id
        )
    )
