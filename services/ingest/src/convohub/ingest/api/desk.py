"""The agent desk API: read conversations, and act on them as an agent, supervisor or bot.

Reads (`GET /v1/conversations`, `GET /v1/conversations/{id}`) serve the desk's read model.
Commands (`POST /v1/conversations/{id}/...`) check the conversation's state with the pure
rules of `domain.desk`, then write the event (through the outbox), its effect on the read
model and the idempotency record in one transaction, and answer 202 with the event id.

Tenant isolation: everything is loaded by (the key's tenant, id) and limited to the key's
channels; another tenant's conversation is a 404, exactly like one that does not exist.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from convohub.contracts import EventPayload, new_event
from convohub.contracts.events.common import Channel, Participant, ParticipantKind
from convohub.contracts.events.conversation import (
    ConversationClosed,
    ConversationCloseReason,
    ConversationReopened,
    ConversationReopenReason,
    ConversationResolved,
    HumanRequested,
    HumanRequestTrigger,
    MessageSent,
    NoteAdded,
)
from convohub.ingest.adapters.desk import (
    DESK_COMMANDS,
    from_moment,
    list_conversations,
    load_conversation,
    load_timeline,
    moment,
)
from convohub.ingest.domain import desk as rules
from convohub.ingest.domain.desk import (
    CommandRefusal,
    ConversationState,
    InvalidCursorError,
    ListCursor,
    decode_cursor,
    encode_cursor,
)
from convohub.ingest.handlers.readmodel import apply_to_read_model
from convohub.runtime.config import Role
from convohub.runtime.http import AnyRole, Principal, Problem
from convohub.runtime.service import Service

__all__ = ["desk_router"]

SOURCE = "/convohub/ingest/desk"
IDEMPOTENCY_NAMESPACE = uuid.UUID("5d1f3c9e-2a47-4d8b-9f61-7c0e8a4b2d13")
MAX_TEXT = 10_000
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Makes the command safe to retry: the same key and body answer the "
        "first result again; the same key with another body is refused (422).",
    ),
]

# --- request and response bodies ----------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthorIn(_Body):
    """Who writes, for keys that are not an agent's own (bots, integrations)."""

    kind: Literal["agent", "bot", "system"] = Field(description="agent, bot or system.")
    id: str | None = Field(default=None, min_length=1, max_length=255)
    display_name: str | None = Field(default=None, min_length=1, max_length=255)


class ReplyIn(_Body):
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="What to send.")
    subject: str | None = Field(default=None, max_length=998, description="E-mail subject.")
    in_reply_to_message_id: str | None = Field(default=None, max_length=255)
    template: str | None = Field(default=None, max_length=255)
    author: AuthorIn | None = Field(
        default=None, description="Ignored for an agent's personal key (it writes as that agent)."
    )


class NoteIn(_Body):
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="The internal note.")


class ResolveIn(_Body):
    resolution_code: str | None = Field(default=None, min_length=1, max_length=128)


class ReopenIn(_Body):
    note: str | None = Field(default=None, max_length=MAX_TEXT)


class CloseIn(_Body):
    reason: Literal["resolved", "abandoned", "spam"] = Field(default="resolved")


class HumanRequestIn(_Body):
    trigger: HumanRequestTrigger = Field(default=HumanRequestTrigger.BUTTON)
    trigger_text: str | None = Field(default=None, max_length=MAX_TEXT)
    message_id: str | None = Field(default=None, min_length=1, max_length=255)


class Accepted(BaseModel):
    """A command accepted: its event is written and will be published."""

    status: Literal["accepted"] = "accepted"
    event_id: str = Field(description="Id of the event the command produced.")
    event_type: str = Field(description="Type of that event.")
    conversation_id: str
    message_id: str | None = Field(default=None, description="Id of the message sent, if any.")
    note_id: str | None = Field(default=None, description="Id of the note added, if any.")


class ChannelRef(BaseModel):
    channel: str
    channel_id: str


class ParticipantOut(BaseModel):
    kind: str = Field(description="customer, agent or bot.")
    id: str | None = None
    role: str | None = Field(default=None, description="For agents: assigned or participant.")
    channel: str | None = None
    channel_id: str | None = None
    address: str | None = Field(default=None, description="The customer's address (personal).")
    display_name: str | None = None


class TimelineEntry(BaseModel):
    event_id: str
    type: str
    at: datetime
    message_id: str | None = None
    delivery_state: str | None = Field(
        default=None, description="For outbound messages: pending, retrying, failed, sent..."
    )
    delivery_error: str | None = None
    data: dict[str, Any] = Field(
        description="The event's payload (personal fields redacted once the customer is erased)."
    )


class ConversationSummary(BaseModel):
    conversation_id: str
    state: ConversationState
    channel: str | None
    channel_id: str | None
    assigned_agent_id: str | None
    skill_group: str | None
    priority: str | None
    vip: bool | None
    tags: list[str]
    customer_id: str | None
    started_at: datetime | None
    updated_at: datetime


class ConversationOut(ConversationSummary):
    channels: list[ChannelRef]
    participants: list[ParticipantOut]
    timeline: list[TimelineEntry]


class ConversationPage(BaseModel):
    items: list[ConversationSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; empty at the end."
    )


# --- helpers ------------------------------------------------------------------------------


def _refuse(refusal: CommandRefusal | None) -> None:
    if refusal is not None:
        raise Problem(refusal.status, refusal.code, refusal.detail)


def _not_found(conversation_id: str) -> Problem:
    return Problem(404, "not_found", f"no conversation {conversation_id!r}")


def _visible(row: dict[str, Any] | None, principal: Principal) -> bool:
    if row is None:
        return False
    return row["channel_id"] is None or principal.allows_channel(row["channel_id"])


def _actor(principal: Principal, requested: AuthorIn | None = None) -> Participant:
    if principal.agent_id is not None:
        return Participant(kind=ParticipantKind.AGENT, id=principal.agent_id)
    if requested is not None:
        return Participant(
            kind=ParticipantKind(requested.kind),
            id=requested.id,
            display_name=requested.display_name,
        )
    return Participant(
        kind=ParticipantKind.AGENT if principal.role == Role.AGENT else ParticipantKind.SYSTEM
    )


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "conversation_id": row["conversation_id"],
        "state": row["state"],
        "channel": row["channel"],
        "channel_id": row["channel_id"],
        "assigned_agent_id": row["assigned_agent_id"],
        "skill_group": row["skill_group"],
        "priority": row["priority"],
        "vip": row["vip"],
        "tags": row["tags"],
        "customer_id": row["customer_id"],
        "started_at": from_moment(row["started_at"]) if row["started_at"] else None,
        "updated_at": from_moment(row["updated_at"]),
    }


def _participants(row: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    customer = row["customer"]
    if customer:
        found.append(
            {
                "kind": "customer",
                "id": row["customer_id"],
                "channel": customer.get("channel"),
                "channel_id": customer.get("channel_id"),
                "address": customer.get("address"),
                "display_name": customer.get("display_name"),
            }
        )
    for agent in row["agents"]:
        role = "assigned" if agent == row["assigned_agent_id"] else "participant"
        found.append({"kind": "agent", "id": agent, "role": role})
    if row["assigned_agent_id"] and row["assigned_agent_id"] not in row["agents"]:
        found.append({"kind": "agent", "id": row["assigned_agent_id"], "role": "assigned"})
    return found


# --- the router ---------------------------------------------------------------------------


def desk_router(service: Service) -> APIRouter:
    """The desk's routes; each request reaches the running service through `service.context`."""
    router = APIRouter(tags=["desk"])

    @router.get("/v1/conversations", response_model=ConversationPage)
    async def list_(
        principal: AnyRole,
        state: Annotated[ConversationState | None, Query()] = None,
        channel: Annotated[Channel | None, Query(description="Channel kind.")] = None,
        channel_id: Annotated[str | None, Query(max_length=64)] = None,
        assignee: Annotated[
            str | None, Query(max_length=255, description="Agent id, or `me` for a personal key.")
        ] = None,
        updated_since: Annotated[AwareDatetime | None, Query()] = None,
        cursor: Annotated[str | None, Query(max_length=2048)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        after: tuple[str, str] | None = None
        if cursor is not None:
            try:
                decoded = decode_cursor(cursor)
            except InvalidCursorError as error:
                raise Problem(
                    400,
                    "invalid_cursor",
                    f"query.cursor: {error}",
                    errors=[{"field": "query.cursor", "message": str(error)}],
                ) from None
            after = (moment(decoded.updated_at), decoded.conversation_id)
        if assignee == "me":
            if principal.agent_id is None:
                raise Problem(
                    400,
                    "no_agent",
                    "query.assignee: `me` needs an agent's personal key",
                    errors=[{"field": "query.assignee", "message": "the key acts as no agent"}],
                )
            assignee = principal.agent_id
        async with service.context.store.reader.connect() as connection:
            rows = await list_conversations(
                connection,
                principal.tenant_id,
                state=state.value if state else None,
                channel=channel.value if channel else None,
                channel_id=channel_id,
                allowed_channel_ids=principal.api_key.channels,
                assignee=assignee,
                updated_since=updated_since,
                after=after,
                limit=limit + 1,
            )
        page, more = rows[:limit], len(rows) > limit
        next_cursor = None
        if more and page:
            last = page[-1]
            next_cursor = encode_cursor(
                ListCursor(from_moment(last["updated_at"]), last["conversation_id"])
            )
        return {"items": [_summary(row) for row in page], "next_cursor": next_cursor}

    @router.get("/v1/conversations/{conversation_id}", response_model=ConversationOut)
    async def get(conversation_id: str, principal: AnyRole) -> dict[str, Any]:
        async with service.context.store.reader.connect() as connection:
            row = await load_conversation(connection, principal.tenant_id, conversation_id)
            if not _visible(row, principal):
                raise _not_found(conversation_id)
            assert row is not None
            timeline = await load_timeline(connection, principal.tenant_id, conversation_id)
        return {
            **_summary(row),
            "channels": row["channels"],
            "participants": _participants(row),
            "timeline": [
                {
                    "event_id": entry["event_id"],
                    "type": entry["type"],
                    "at": from_moment(entry["occurred_at"]),
                    "message_id": entry["message_id"],
                    "delivery_state": entry["delivery_state"],
                    "delivery_error": entry["delivery_error"],
                    "data": entry["data"],
                }
                for entry in timeline
            ],
        }

    async def run_command(
        command: str,
        conversation_id: str,
        principal: Principal,
        body: BaseModel,
        idempotency_key: str | None,
        decide: Any,
    ) -> JSONResponse:
        """Load, decide, emit, apply, remember: one transaction. `decide(row, now, ids)`
        returns (payload, extra response fields) or raises Problem."""
        context = service.context
        fingerprint = rules.command_fingerprint(
            command, conversation_id, body.model_dump(mode="json")
        )
        tenant_id = principal.tenant_id
        async with context.store.unit_of_work() as uow:
            connection = uow.connection
            # The row lock first (PostgreSQL): a concurrent retry waits here, then sees the
            # idempotency record the first one committed.
            row = await load_conversation(connection, tenant_id, conversation_id, for_update=True)
            if not _visible(row, principal):
                raise _not_found(conversation_id)
            if idempotency_key is not None:
                replayed = await _replay(connection, tenant_id, idempotency_key, fingerprint)
                if replayed is not None:
                    return replayed
            assert row is not None
            now = context.clock.now()
            seed = (
                str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{tenant_id}\n{idempotency_key}"))
                if idempotency_key is not None
                else str(uuid.uuid4())
            )
            try:
                payload, extra = decide(row, now, seed)
            except ValidationError as error:  # the body broke a rule of the event contract
                errors = [
                    {"field": "body." + ".".join(map(str, item["loc"])), "message": item["msg"]}
                    for item in error.errors()
                ]
                raise Problem(
                    422, "validation", "the command does not make a valid event", errors=errors
                ) from None
            event = new_event(payload, tenant_id=tenant_id, source=SOURCE, time=now, event_id=seed)
            uow.emit(event)
            await apply_to_read_model(connection, [event])
            answer = Accepted(
                event_id=event.id, event_type=event.type, conversation_id=conversation_id, **extra
            ).model_dump(mode="json")
            try:
                if idempotency_key is not None:
                    await connection.execute(
                        DESK_COMMANDS.insert().values(
                            tenant_id=tenant_id,
                            idempotency_key=idempotency_key,
                            fingerprint=fingerprint,
                            status_code=202,
                            response=answer,
                            created_at=moment(now),
                        )
                    )
                await uow.commit()
            except IntegrityError:
                # A concurrent retry with the same key won the race: answer what it answered.
                pass
            else:
                return JSONResponse(answer, status_code=202)
        async with context.store.reader.connect() as connection:
            replayed = await _replay(connection, tenant_id, idempotency_key or "", fingerprint)
        if replayed is None:
            raise Problem(409, "conflict", "a concurrent command changed the conversation; retry")
        return replayed

    responses: dict[int | str, dict[str, Any]] = {
        202: {"model": Accepted},
    }

    @router.post(
        "/v1/conversations/{conversation_id}/messages",
        status_code=202,
        responses=responses,
        response_model=Accepted,
    )
    async def reply(
        conversation_id: str,
        body: ReplyIn,
        principal: AnyRole,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        def decide(
            row: dict[str, Any], now: datetime, seed: str
        ) -> tuple[EventPayload, dict[str, Any]]:
            _refuse(rules.check_reply(ConversationState(row["state"])))
            if not row["customer"] or not row["channel"]:
                raise Problem(
                    409, "no_recipient", "the conversation has no customer address to reply to"
                )
            message_id = f"msg-{seed}"
            content: dict[str, Any] = {"text": body.text}
            if body.subject:
                content["subject"] = body.subject
            author = _actor(principal, body.author)
            payload = MessageSent(
                conversation_id=conversation_id,
                message_id=message_id,
                channel=row["channel"],
                channel_id=row["channel_id"],
                author=author,
                recipient=row["customer"],
                content=content,
                sent_at=now,
                in_reply_to_message_id=body.in_reply_to_message_id,
                template=body.template,
            )
            return payload, {"message_id": message_id}

        if (
            body.author is not None
            and body.author.kind == "system"
            and not principal.has(Role.SUPERVISOR)
        ):
            raise Problem(
                403, "forbidden", "body.author: only supervisors and admins write as the system"
            )
        return await run_command("reply", conversation_id, principal, body, idempotency_key, decide)

    @router.post(
        "/v1/conversations/{conversation_id}/notes",
        status_code=202,
        response_model=Accepted,
    )
    async def note(
        conversation_id: str,
        body: NoteIn,
        principal: AnyRole,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        def decide(
            row: dict[str, Any], now: datetime, seed: str
        ) -> tuple[EventPayload, dict[str, Any]]:
            _refuse(rules.check_note(ConversationState(row["state"])))
            note_id = f"note-{seed}"
            payload = NoteAdded(
                conversation_id=conversation_id,
                note_id=note_id,
                author=_actor(principal),
                text=body.text,
                added_at=now,
            )
            return payload, {"note_id": note_id}

        return await run_command("note", conversation_id, principal, body, idempotency_key, decide)

    @router.post(
        "/v1/conversations/{conversation_id}/resolve",
        status_code=202,
        response_model=Accepted,
    )
    async def resolve(
        conversation_id: str,
        principal: AnyRole,
        body: ResolveIn | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        body = body or ResolveIn()

        def decide(
            row: dict[str, Any], now: datetime, seed: str
        ) -> tuple[EventPayload, dict[str, Any]]:
            _refuse(rules.check_resolve(ConversationState(row["state"])))
            payload = ConversationResolved(
                conversation_id=conversation_id,
                resolved_by=_actor(principal),
                resolution_code=body.resolution_code,
                resolved_at=now,
            )
            return payload, {}

        return await run_command(
            "resolve", conversation_id, principal, body, idempotency_key, decide
        )

    @router.post(
        "/v1/conversations/{conversation_id}/reopen",
        status_code=202,
        response_model=Accepted,
    )
    async def reopen(
        conversation_id: str,
        principal: AnyRole,
        body: ReopenIn | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        body = body or ReopenIn()

        def decide(
            row: dict[str, Any], now: datetime, seed: str
        ) -> tuple[EventPayload, dict[str, Any]]:
            _refuse(rules.check_reopen(ConversationState(row["state"])))
            payload = ConversationReopened(
                conversation_id=conversation_id,
                reopened_by=_actor(principal),
                reason=ConversationReopenReason.AGENT_ACTION,
                reason_note=body.note,
                reopened_at=now,
            )
            return payload, {}

        return await run_command(
            "reopen", conversation_id, principal, body, idempotency_key, decide
        )

    @router.post(
        "/v1/conversations/{conversation_id}/close",
        status_code=202,
        response_model=Accepted,
    )
    async def close(
        conversation_id: str,
        principal: AnyRole,
        body: CloseIn | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        body = body or CloseIn()

        def decide(
            row: dict[str, Any], now: datetime, seed: str
        ) -> tuple[EventPayload, dict[str, Any]]:
            _refuse(rules.check_close(ConversationState(row["state"])))
            payload = ConversationClosed(
                conversation_id=conversation_id,
                reason=ConversationCloseReason(body.reason),
                closed_by=_actor(principal),
                closed_at=now,
            )
            return payload, {}

        return await run_command("close", conversation_id, principal, body, idempotency_key, decide)

    @router.post(
        "/v1/conversations/{conversation_id}/human-request",
        status_code=202,
        response_model=Accepted,
    )
    async def human_request(
        conversation_id: str,
        principal: AnyRole,
        body: HumanRequestIn | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """The customer asked for a human (for bots and integrators relaying the request)."""
        body = body or HumanRequestIn()

        def decide(
            row: dict[str, Any], now: datetime, seed: str
        ) -> tuple[EventPayload, dict[str, Any]]:
            _refuse(rules.check_human_request(ConversationState(row["state"])))
            if not row["channel"]:
                raise Problem(409, "no_channel", "the conversation has no channel yet")
            payload = HumanRequested(
                conversation_id=conversation_id,
                channel=row["channel"],
                channel_id=row["channel_id"],
                trigger=body.trigger,
                trigger_text=body.trigger_text,
                message_id=body.message_id,
                requested_at=now,
            )
            return payload, {}

        return await run_command(
            "human_request", conversation_id, principal, body, idempotency_key, decide
        )

    return router


async def _replay(
    connection: Any, tenant_id: str, key: str, fingerprint: str
) -> JSONResponse | None:
    found = (
        await connection.execute(
            select(
                DESK_COMMANDS.c.fingerprint, DESK_COMMANDS.c.status_code, DESK_COMMANDS.c.response
            ).where(DESK_COMMANDS.c.tenant_id == tenant_id, DESK_COMMANDS.c.idempotency_key == key)
        )
    ).first()
    if found is None:
        return None
    if found.fingerprint != fingerprint:
        raise Problem(
            422,
            "idempotency_key_reused",
            "header Idempotency-Key: this key was used for another command",
            errors=[{"field": "header.Idempotency-Key", "message": "used for another command"}],
        )
    return JSONResponse(
        found.response, status_code=found.status_code, headers={"Idempotent-Replayed": "true"}
    )
