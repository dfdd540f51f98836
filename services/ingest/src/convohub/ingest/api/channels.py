"""The generic API channel: an integrator's backend posts customer messages as JSON,
authenticated by its API key, idempotent by the caller's `external_id`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from convohub.contracts.events.common import Attachment, Channel, MessageContent
from convohub.ingest.api.edge import ChannelEdge, read_body
from convohub.ingest.domain.identifiers import (
    InvalidIdentifierError,
    email_key,
    external_key,
    normalise_email,
    normalise_phone,
    phone_key,
)
from convohub.ingest.domain.inbound import Customer, InboundMessage
from convohub.runtime.http import AnyRole, Problem

__all__ = ["ApiCustomer", "ApiMessage", "ApiMessageAccepted", "channels_router"]


class ApiCustomer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128, description="Your id of the customer.")
    display_name: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(
        default=None,
        max_length=32,
        description="Phone number (E.164 preferred); recognises "
        "the customer on SMS, WhatsApp and voice too.",
    )
    email: str | None = Field(default=None, max_length=320, description="E-mail address.")


class ApiAttachment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, max_length=2048)
    content_type: str = Field(min_length=1, max_length=255)
    filename: str | None = Field(default=None, max_length=255)
    size_bytes: int | None = Field(default=None, ge=0)


class ApiMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    external_id: str = Field(
        min_length=1,
        max_length=200,
        description="Your id of the message: a retry with the "
        "same external_id is recognised and yields no second event.",
    )
    customer: ApiCustomer
    text: str | None = Field(default=None, max_length=65_536)
    attachments: list[ApiAttachment] = Field(default_factory=list, max_length=20)
    received_at: datetime | None = Field(
        default=None, description="When you received the message (timezone-aware); now if absent."
    )
    routing_hints: dict[str, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=20
    )

    @field_validator("received_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a timezone offset")
        return value


class ApiMessageAccepted(BaseModel):
    conversation_id: str
    message_id: str
    duplicate: bool = Field(description="True when this external_id was accepted before.")


def channels_router(edge: ChannelEdge) -> APIRouter:
    router = APIRouter(prefix="/v1/channels", tags=["api channel"])

    @router.post(
        "/{channel_id}/messages",
        status_code=202,
        response_model=ApiMessageAccepted,
        summary="Post a customer message on a generic API channel",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ApiMessage.model_json_schema()}},
            }
        },
    )
    async def post_message(
        channel_id: str, request: Request, principal: AnyRole
    ) -> ApiMessageAccepted:
        channel = edge.channel(channel_id, [Channel.API], tenant=principal.tenant)
        if not principal.allows_channel(channel.id):
            raise Problem(403, "forbidden", f"this key may not use channel {channel.id!r}")
        edge.limit(channel, principal.api_key.key.get_secret_value())
        body = await read_body(request, channel.settings.max_body_bytes)
        try:
            posted = ApiMessage.model_validate_json(body)
        except ValidationError as error:
            errors = [
                {"field": ".".join(["body", *map(str, item["loc"])]), "message": item["msg"]}
                for item in error.errors(include_url=False)
            ]
            fields = ", ".join(entry["field"] for entry in errors)
            raise Problem(422, "validation", f"invalid: {fields}", errors=errors) from None
        if not posted.text and not posted.attachments:
            raise Problem(
                422,
                "validation",
                "invalid: body.text",
                errors=[{"field": "body.text", "message": "a message needs text or attachments"}],
            )
        customer = _customer(posted.customer, channel.id, channel.settings.default_region)
        message = InboundMessage(
            provider_message_id=posted.external_id,
            customer=customer,
            content=MessageContent(
                text=posted.text,
                attachments=[Attachment(**item.model_dump()) for item in posted.attachments],
            ),
            received_at=posted.received_at or edge.context().clock.now(),
            routing_hints=dict(posted.routing_hints),
        )
        accepted = await edge.run(
            edge.pipeline.message(
                channel.tenant.id, message, human_keywords=channel.settings.human_request_keywords
            )
        )
        outcome: dict[str, Any] = accepted.outcome
        return ApiMessageAccepted(
            conversation_id=outcome["conversation_id"],
            message_id=outcome["message_id"],
            duplicate=accepted.duplicate,
        )

    return router


def _customer(posted: ApiCustomer, channel_id: str, region: str | None) -> Customer:
    key = external_key(channel_id, posted.id)
    try:
        if posted.phone:
            key = phone_key(normalise_phone(posted.phone, region))
        elif posted.email:
            key = email_key(normalise_email(posted.email))
    except InvalidIdentifierError as error:
        field = "body.customer.phone" if posted.phone else "body.customer.email"
        raise Problem(
            422, "validation", f"invalid: {field}", errors=[{"field": field, "message": str(error)}]
        ) from None
    return Customer(
        channel=Channel.API,
        channel_id=channel_id,
        address=posted.id,
        key=key,
        display_name=posted.display_name,
    )
