"""The CloudEvents 1.0 envelope every ConvoHub event travels in, and how to build one.

The envelope is strict (unknown attributes are rejected); the payload under `data` is a
tolerant reader (see `EventPayload`). Ids of events caused by another event are derived
from the cause, so re-running a handler re-emits the same ids and downstream consumers
recognise the repeat.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from convohub.contracts.payload import EVENT_TYPE_PATTERN, EventPayload

DataT = TypeVar("DataT")
P = TypeVar("P", bound=EventPayload)

SPEC_VERSION = "1.0"
DATA_CONTENT_TYPE = "application/json"
CAUSATION_NAMESPACE = uuid.UUID("5b0f3c7e-6a8e-4c41-9d1f-0c6f2a7d9e10")
"""UUIDv5 namespace of ids derived from a causing event; never change it within v1."""

NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class Envelope(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 event in structured JSON form, with ConvoHub's extensions.

    `tenantid` scopes every event to one company; `correlationid` is shared by all events
    of one causal chain (one customer message and everything it caused); `causationid` is
    the id of the event that directly caused this one; `partitionkey` is the Kafka key.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: NonEmpty = Field(description="Unique id of the event (a UUID); the idempotency key.")
    source: NonEmpty = Field(
        description="URI-reference of the producer, e.g. /convohub/ingest/channels/sms-main."
    )
    type: Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN.pattern)] = Field(
        description="Event type, convohub.<area>.<event>.v<N>."
    )
    specversion: Literal["1.0"] = Field(default=SPEC_VERSION, description="CloudEvents version.")
    time: AwareDatetime = Field(description="When the fact happened (RFC 3339 with offset).")
    subject: str | None = Field(
        default=None,
        description="What the event is about inside the source, e.g. the conversation.",
    )
    datacontenttype: Literal["application/json"] = Field(
        default=DATA_CONTENT_TYPE, description="Media type of `data`; always JSON."
    )
    dataschema: str | None = Field(
        default=None, description="URI of the JSON Schema of `data`'s event type."
    )
    tenantid: NonEmpty = Field(description="Tenant (company) the event belongs to.")
    correlationid: NonEmpty = Field(
        description="Id shared by every event of one causal chain (the first event's id)."
    )
    causationid: str | None = Field(
        default=None, description="Id of the event that caused this one; empty for a first event."
    )
    partitionkey: NonEmpty = Field(
        description="Kafka record key: conversation, agent or customer id, per the topic."
    )
    data: DataT = Field(description="The event payload, per the event type's schema.")


def schema_uri(event_type: str) -> str:
    """The `dataschema` URI of an event type (the committed schema file has the same name)."""
    return f"urn:convohub:schema:{event_type}"


def derived_event_id(cause_id: str, event_type: str, discriminator: str = "") -> str:
    """A deterministic id for the event of `event_type` that `cause_id` caused.

    `discriminator` tells apart several events of one type caused by the same event
    (for example one `offered` per agent).
    """
    return str(uuid.uuid5(CAUSATION_NAMESPACE, f"{cause_id}|{event_type}|{discriminator}"))


def _envelope_for(payload: P, **attributes: Any) -> Envelope[P]:
    # Imported here: the catalogue imports this module to build its per-type classes.
    from convohub.contracts.catalogue import envelope_class

    cls = envelope_class(type(payload))
    key = getattr(payload, type(payload).topic.key)
    return cls(
        type=payload.event_type,
        dataschema=schema_uri(payload.event_type),
        subject=attributes.pop("subject", None) or key,
        partitionkey=key,
        data=payload,
        **attributes,
    )


def new_event(
    payload: P,
    *,
    tenant_id: str,
    source: str,
    time: datetime | None = None,
    event_id: str | None = None,
    correlation_id: str | None = None,
    subject: str | None = None,
) -> Envelope[P]:
    """Wrap a payload that starts a causal chain (an inbound message, an agent command).

    The partition key is the payload's value of its topic's key field. Without an explicit
    `event_id` a random UUID is used; ingest passes one derived from the provider's message
    id so a provider's retry yields the same event.
    """
    event_id = event_id or str(uuid.uuid4())
    return _envelope_for(
        payload,
        id=event_id,
        source=source,
        time=time or datetime.now(UTC),
        tenantid=tenant_id,
        correlationid=correlation_id or event_id,
        causationid=None,
        subject=subject,
    )


def caused_by(
    cause: Envelope[Any],
    payload: P,
    *,
    source: str,
    time: datetime | None = None,
    discriminator: str = "",
    subject: str | None = None,
) -> Envelope[P]:
    """Wrap a payload emitted because of `cause`: same tenant and correlation, cause's id
    as causation, and an id derived from the cause so a re-run emits the same id."""
    return _envelope_for(
        payload,
        id=derived_event_id(cause.id, payload.event_type, discriminator),
        source=source,
        time=time or datetime.now(UTC),
        tenantid=cause.tenantid,
        correlationid=cause.correlationid,
        causationid=cause.id,
        subject=subject,
    )
