"""The catalogue: every event type, its payload and envelope classes, and decoding.

Decoding validates the whole envelope and the payload of its type in one pass; anything
that fails raises `InvalidEventError` naming the type and the problem, so an invalid event
never reaches a handler.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError, create_model

import convohub.contracts.events  # noqa: F401  (registers every event)
from convohub.contracts.envelope import Envelope
from convohub.contracts.payload import EventPayload, registered_payloads
from convohub.contracts.topics import TOPICS, Topic


class InvalidEventError(ValueError):
    """A document that is not a valid ConvoHub event of a known type."""

    def __init__(self, message: str, *, event_type: str | None = None) -> None:
        super().__init__(message)
        self.event_type = event_type


class UnknownEventTypeError(InvalidEventError):
    """An envelope whose `type` is not in the catalogue."""


def event_types() -> list[str]:
    """Every registered event type, sorted."""
    return sorted(registered_payloads())


def payload_class(event_type: str) -> type[EventPayload]:
    """The payload class of an event type."""
    try:
        return registered_payloads()[event_type]
    except KeyError:
        raise UnknownEventTypeError(
            f"unknown event type {event_type!r}", event_type=event_type
        ) from None


def event_types_on(topic: Topic) -> list[str]:
    """The event types carried on a topic, sorted."""
    return sorted(t for t, cls in registered_payloads().items() if cls.topic == topic)


def topic_of(event_type: str) -> Topic:
    """The topic an event type is carried on."""
    return payload_class(event_type).topic


@cache
def envelope_class(payload_cls: type[EventPayload]) -> type[Envelope[Any]]:
    """The envelope class of one event type: `type` fixed to it, `data` its payload."""
    return create_model(
        f"{payload_cls.__name__}Event",
        __base__=Envelope[payload_cls],  # type: ignore[valid-type]
        __doc__=payload_cls.__doc__,
        __module__=payload_cls.__module__,
        type=(Literal[payload_cls.event_type], Field(description="Event type.")),
    )


@cache
def _any_event_adapter() -> TypeAdapter[Any]:
    classes = tuple(envelope_class(registered_payloads()[t]) for t in event_types())
    return TypeAdapter(Annotated[Union[classes], Field(discriminator="type")])  # noqa: UP007


def decode_event(document: bytes | str, event_type: str | None = None) -> Envelope[Any]:
    """Validate a JSON envelope and its payload; `event_type` (from the `ce_type` header)
    skips the type lookup. Raises `InvalidEventError`."""
    try:
        if event_type is None:
            return _any_event_adapter().validate_json(document)
        return envelope_class(payload_class(event_type)).model_validate_json(document)
    except ValidationError as error:
        raise InvalidEventError(_describe(error), event_type=event_type) from error


def encode_event(event: Envelope[Any]) -> bytes:
    """The structured JSON form of an event, after checking its payload matches its type."""
    expected = payload_class(event.type)
    if type(event.data) is not expected:
        raise InvalidEventError(
            f"{event.type} carries {type(event.data).__name__}, expected {expected.__name__}",
            event_type=event.type,
        )
    return event.model_dump_json(exclude_none=False).encode()


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(p) for p in item["loc"]) or "(document)"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def check_topic_registry() -> list[str]:
    """Problems with the registry: topics without events, events on unregistered topics."""
    problems = [f"topic {t.name} carries no event type" for t in TOPICS if not event_types_on(t)]
    registered = set(TOPICS)
    for event_type, cls in registered_payloads().items():
        if cls.topic not in registered:
            problems.append(f"{event_type} is on {cls.topic.name}, which is not in TOPICS")
    return problems


def payload_examples(event_type: str) -> list[dict[str, Any]]:
    """The documented example payloads of an event type, as JSON-ready dicts."""
    extra = payload_class(event_type).model_config.get("json_schema_extra") or {}
    return list(extra.get("examples", [])) if isinstance(extra, dict) else []


def example_event(event_type: str) -> Envelope[Any]:
    """A complete, deterministic example envelope of an event type (for docs and tests)."""
    from datetime import UTC, datetime

    from convohub.contracts.envelope import derived_event_id, new_event

    cls = payload_class(event_type)
    payload = cls.model_validate(payload_examples(event_type)[0])
    producer = cls.topic.producers[0]
    return new_event(
        payload,
        tenant_id="acme",
        source=f"/convohub/{producer}",
        time=datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC),
        event_id=derived_event_id("example", event_type),
    )
