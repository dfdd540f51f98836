"""Dead-letter events: records a handler could not process after bounded retries.

Carried on `convohub.dlq.v1`, keyed by the original record's key so the dead letters of one
key stay in order. Any service's runtime produces them; `convohub dlq` lists and redrives them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field

from convohub.contracts.payload import EventPayload, ValueObject, event, personal
from convohub.contracts.topics import DEAD_LETTER


class DeadLetterValueEncoding(StrEnum):
    """How the original record value is written in `original_value`."""

    UTF_8 = "utf-8"
    BASE64 = "base64"


class DeadLetterStage(StrEnum):
    """Where processing failed: decoding JSON, validating the event, or in the handler."""

    DECODE = "decode"
    VALIDATE = "validate"
    HANDLE = "handle"


class DeadLetterOrigin(ValueObject):
    """Where the dead-lettered record was read from, and what it claimed to be."""

    topic: str = Field(description="Topic of the original record.", examples=["convohub.sla.v1"])
    partition: int = Field(ge=0, description="Partition of the original record.")
    offset: int = Field(ge=0, description="Offset of the original record in its partition.")
    event_id: str | None = Field(
        default=None,
        description="CloudEvents id of the original (from the `ce_id` header or the envelope); "
        "empty when the value was not a valid envelope.",
    )
    event_type: str | None = Field(
        default=None,
        description="Event type of the original (from `ce_type` or the envelope), if known.",
    )
    key: str | None = Field(
        default=None, description="Key of the original record; empty when it had none."
    )


class DeadLetterError(ValueObject):
    """The error of the last failed attempt."""

    type: str = Field(
        description="Module-qualified class name of the exception.",
        examples=["convohub.contracts.catalogue.InvalidEventError"],
    )
    message: str = personal("The exception's message (may quote the input, so personal data).")
    stage: DeadLetterStage = Field(description="Where processing failed.")


@event("convohub.dlq.dead_lettered.v1", topic=DEAD_LETTER)
class EventDeadLettered(EventPayload):
    """A consumed record failed every bounded retry and was set aside so its partition keeps
    flowing. Emitted by the runtime of the consuming service, one per failed record and handler."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "partition_key": "conv-7f3a",
                    "original": {
                        "topic": "convohub.conversation.v1",
                        "partition": 4,
                        "offset": 18231,
                        "event_id": "0b6c2f4e-8a51-4f0e-9d7a-3e2c1b9a7f10",
                        "event_type": "convohub.conversation.message_received.v1",
                        "key": "conv-7f3a",
                    },
                    "original_value": (
                        '{"id":"0b6c2f4e-8a51-4f0e-9d7a-3e2c1b9a7f10",'
                        '"type":"convohub.conversation.message_received.v1",'
                        '"data":{"conversation_id":"conv-7f3a",'
                        '"content":{"text":"我的订单还没有发货"}}}'
                    ),
                    "original_value_encoding": "utf-8",
                    "original_headers": {
                        "ce_type": "convohub.conversation.message_received.v1",
                        "ce_id": "0b6c2f4e-8a51-4f0e-9d7a-3e2c1b9a7f10",
                        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    },
                    "error": {
                        "type": "convohub.contracts.catalogue.InvalidEventError",
                        "message": "data.message_id: Field required",
                        "stage": "validate",
                    },
                    "handler": "convohub-router",
                    "attempts": 1,
                    "first_failed_at": "2026-11-23T09:00:01Z",
                    "dead_lettered_at": "2026-11-23T09:00:01Z",
                }
            ]
        }
    )

    partition_key: str = Field(
        description="Key of the original record, the partition key, so one key's dead letters "
        "stay in order; `<topic>/<partition>` when the original had no key."
    )
    original: DeadLetterOrigin = Field(description="Where the original record came from.")
    original_value: str = personal(
        "The original record value, as UTF-8 text or base64 per `original_value_encoding` (may "
        "contain a customer's message)."
    )
    original_value_encoding: DeadLetterValueEncoding = Field(
        description="utf-8 when the value was valid UTF-8 text, otherwise base64."
    )
    original_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers of the original record (ce_type, ce_id, traceparent), as UTF-8.",
    )
    error: DeadLetterError = Field(description="The error of the last attempt.")
    handler: str = Field(
        description="Consumer group or handler that failed, to redrive to.",
        examples=["convohub-router"],
    )
    attempts: int = Field(ge=1, description="Attempts made, the first included.")
    first_failed_at: datetime = Field(description="When the first attempt failed.")
    dead_lettered_at: datetime = Field(description="When the record was dead-lettered.")
