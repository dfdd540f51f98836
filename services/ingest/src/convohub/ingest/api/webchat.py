"""Web chat for a site widget: a visitor opens a session (from an allowed origin), sends
messages with the session token, and receives agents' replies over Server-Sent Events.

Browsers' EventSource cannot set headers, so the stream takes the token as a query
parameter; it ends after `wait` seconds and the browser reconnects with Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from convohub.contracts.events.common import Channel, MessageContent
from convohub.ingest.adapters.tables import WEBCHAT_REPLIES, WEBCHAT_SESSIONS
from convohub.ingest.api.edge import ChannelEdge, EdgeChannel, read_body
from convohub.ingest.domain.identifiers import (
    InvalidIdentifierError,
    email_key,
    normalise_email,
    normalise_phone,
    phone_key,
    visitor_key,
)
from convohub.ingest.domain.inbound import Customer, InboundMessage
from convohub.runtime.http import Problem

__all__ = ["webchat_router"]

SESSION_HEADER = "X-Session-Token"


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    visitor_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The widget's id of the visitor (kept in the browser); new if absent.",
    )
    display_name: str | None = Field(default=None, max_length=255)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)


class SessionStarted(BaseModel):
    session_token: str = Field(description=f"Send it as {SESSION_HEADER}; `token` on the stream.")
    visitor_id: str
    expires_at: datetime


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    client_message_id: str = Field(
        min_length=1, max_length=128, description="The widget's id: a resend is recognised."
    )
    text: str = Field(min_length=1, max_length=10_000)


class ChatMessageAccepted(BaseModel):
    conversation_id: str
    message_id: str
    duplicate: bool


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _validated(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as error:
        errors = [
            {"field": ".".join(["body", *map(str, item["loc"])]), "message": item["msg"]}
            for item in error.errors(include_url=False)
        ]
        fields = ", ".join(entry["field"] for entry in errors)
        raise Problem(422, "validation", f"invalid: {fields}", errors=errors) from None


def _cors(channel: EdgeChannel, origin: str | None) -> dict[str, str]:
    if origin and origin in channel.settings.allowed_origins:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {}


def _check_origin(channel: EdgeChannel, origin: str | None, *, required: bool) -> None:
    if origin is None and not required:
        return
    if origin not in channel.settings.allowed_origins:
        raise Problem(403, "origin_not_allowed", "this site may not use the channel's web chat")


def webchat_router(edge: ChannelEdge) -> APIRouter:
    router = APIRouter(prefix="/v1/webchat", tags=["web chat"])

    def chat_channel(channel_id: str) -> EdgeChannel:
        return edge.channel(channel_id, [Channel.WEB_CHAT])

    async def session_of(channel: EdgeChannel, token: str | None) -> Any:
        if not token:
            raise Problem(401, "unauthenticated", f"the {SESSION_HEADER} is required")
        async with edge.context().store.reader.connect() as connection:
            row = (
                await connection.execute(
                    select(WEBCHAT_SESSIONS).where(WEBCHAT_SESSIONS.c.token_hash == _hash(token))
                )
            ).first()
        now = edge.context().clock.now()
        if row is None or row.tenant_id != channel.tenant.id or row.channel_id != channel.id:
            raise Problem(401, "unauthenticated", "unknown session token")
        expires_at = (
            row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=now.tzinfo)
        )
        if expires_at < now:
            raise Problem(401, "session_expired", "the session expired; start a new one")
        return row

    @router.options("/{channel_id}/{rest:path}", include_in_schema=False)
    async def preflight(channel_id: str, rest: str, origin: str | None = Header(None)) -> Response:
        channel = chat_channel(channel_id)
        _check_origin(channel, origin, required=True)
        return Response(
            status_code=204,
            headers={
                **_cors(channel, origin),
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": f"Content-Type, {SESSION_HEADER}",
                "Access-Control-Max-Age": "600",
            },
        )

    @router.post(
        "/{channel_id}/sessions",
        status_code=201,
        response_model=SessionStarted,
        summary="Start a web chat session for a visitor (from an allowed origin)",
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": SessionRequest.model_json_schema()}}
            }
        },
    )
    async def start_session(
        channel_id: str, request: Request, origin: str | None = Header(None)
    ) -> JSONResponse:
        channel = chat_channel(channel_id)
        _check_origin(channel, origin, required=True)
        edge.limit(channel, f"origin:{origin}")
        asked = _validated(
            SessionRequest, await read_body(request, channel.settings.max_body_bytes)
        )
        visitor_id = asked.visitor_id or f"v-{uuid.uuid4().hex}"
        key = visitor_key(channel.id, visitor_id)
        try:
            if asked.phone:
                key = phone_key(normalise_phone(asked.phone, channel.settings.default_region))
            elif asked.email:
                key = email_key(normalise_email(asked.email))
        except InvalidIdentifierError as error:
            field = "body.phone" if asked.phone else "body.email"
            raise Problem(
                422,
                "validation",
                f"invalid: {field}",
                errors=[{"field": field, "message": str(error)}],
            ) from None
        token = secrets.token_urlsafe(32)
        expires_at = edge.context().clock.now() + timedelta(
            seconds=channel.settings.session_ttl_seconds
        )
        async with edge.context().store.begin() as connection:
            await connection.execute(
                WEBCHAT_SESSIONS.insert().values(
                    token_hash=_hash(token),
                    tenant_id=channel.tenant.id,
                    channel_id=channel.id,
                    visitor_id=visitor_id,
                    customer_key=key,
                    display_name=asked.display_name,
                    expires_at=expires_at,
                )
            )
        started = SessionStarted(session_token=token, visitor_id=visitor_id, expires_at=expires_at)
        return JSONResponse(
            started.model_dump(mode="json"), status_code=201, headers=_cors(channel, origin)
        )

    @router.post(
        "/{channel_id}/messages",
        status_code=202,
        response_model=ChatMessageAccepted,
        summary="Send the visitor's message",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ChatMessage.model_json_schema()}},
            }
        },
    )
    async def send_message(
        channel_id: str,
        request: Request,
        origin: str | None = Header(None),
        session_token: str | None = Header(None, alias=SESSION_HEADER),
    ) -> JSONResponse:
        channel = chat_channel(channel_id)
        _check_origin(channel, origin, required=False)
        session = await session_of(channel, session_token)
        edge.limit(channel, f"session:{session.token_hash}")
        sent = _validated(ChatMessage, await read_body(request, channel.settings.max_body_bytes))
        message = InboundMessage(
            provider_message_id=f"{session.visitor_id}:{sent.client_message_id}",
            customer=Customer(
                channel=Channel.WEB_CHAT,
                channel_id=channel.id,
                address=session.visitor_id,
                key=session.customer_key,
                display_name=session.display_name,
            ),
            content=MessageContent(text=sent.text),
            received_at=edge.context().clock.now(),
        )
        accepted = await edge.run(
            edge.pipeline.message(
                channel.tenant.id, message, human_keywords=channel.settings.human_request_keywords
            )
        )
        body = ChatMessageAccepted(
            conversation_id=accepted.outcome["conversation_id"],
            message_id=accepted.outcome["message_id"],
            duplicate=accepted.duplicate,
        )
        return JSONResponse(body.model_dump(), status_code=202, headers=_cors(channel, origin))

    @router.get(
        "/{channel_id}/events",
        summary="Agents' replies to the visitor, as Server-Sent Events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(
        channel_id: str,
        token: str = Query(min_length=1, max_length=256, description="The session token."),
        after: int = Query(default=0, ge=0, le=2**62, description="Last event id seen."),
        wait: float = Query(default=25.0, ge=0, le=60, description="Seconds to keep it open."),
        last_event_id: str | None = Header(None, alias="Last-Event-ID"),
        origin: str | None = Header(None),
    ) -> StreamingResponse:
        channel = chat_channel(channel_id)
        _check_origin(channel, origin, required=False)
        session = await session_of(channel, token)
        if last_event_id and last_event_id.isdigit():
            after = max(after, int(last_event_id))

        async def events() -> AsyncIterator[bytes]:
            position = after
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            yield b"retry: 2000\n\n"
            while True:
                async with edge.context().store.reader.connect() as connection:
                    rows = (
                        await connection.execute(
                            select(WEBCHAT_REPLIES)
                            .where(
                                WEBCHAT_REPLIES.c.tenant_id == channel.tenant.id,
                                WEBCHAT_REPLIES.c.channel_id == channel.id,
                                WEBCHAT_REPLIES.c.address == session.visitor_id,
                                WEBCHAT_REPLIES.c.seq > position,
                            )
                            .order_by(WEBCHAT_REPLIES.c.seq)
                            .limit(100)
                        )
                    ).all()
                for row in rows:
                    position = row.seq
                    author = row.author or {}
                    data = {
                        "message_id": row.message_id,
                        "conversation_id": row.conversation_id,
                        "author": {"kind": author.get("kind"), "name": author.get("display_name")},
                        "text": row.text,
                        "sent_at": row.sent_at.isoformat(),
                    }
                    payload = json.dumps(data, ensure_ascii=False)
                    yield f"id: {row.seq}\nevent: message\ndata: {payload}\n\n".encode()
                if loop.time() >= deadline:
                    return
                await asyncio.sleep(min(0.25, max(0.0, deadline - loop.time())))

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", **_cors(channel, origin)},
        )

    return router
