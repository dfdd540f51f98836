"""The base of every event payload, the `@event` registration, and the personal-data mark."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from convohub.contracts.topics import Topic

PERSONAL_DATA_KEY = "x-personal-data"
"""JSON Schema keyword that marks a field carrying personal data (erasure and redaction find it)."""

EVENT_TYPE_PATTERN = re.compile(
    r"^convohub\.(?P<area>[a-z][a-z0-9-]*)\.(?P<name>[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]*)$"
)


class EventPayload(BaseModel):
    """Base of every event payload.

    Payloads are frozen and tolerant: a reader ignores fields added later within the same
    version, so producers may add optional fields without breaking consumers.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    topic: ClassVar[Topic]


class ValueObject(BaseModel):
    """Base of the structured values that payloads nest (same tolerance as payloads)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


_REGISTRY: dict[str, type[EventPayload]] = {}

P = TypeVar("P", bound=type[EventPayload])


def event(event_type: str, *, topic: Topic) -> Callable[[P], P]:
    """Register a payload class as the data of `event_type`, carried on `topic`.

    The type must be named `convohub.<area>.<event>.v<N>`, the class must have a docstring
    and at least one example, and it must hold the topic's key field.
    """

    def register(cls: P) -> P:
        if not EVENT_TYPE_PATTERN.match(event_type):
            raise ValueError(f"{event_type!r} is not named convohub.<area>.<event>.v<N>")
        if event_type in _REGISTRY:
            raise ValueError(f"{event_type!r} is registered twice")
        if topic.key not in cls.model_fields:
            raise ValueError(f"{cls.__name__} lacks {topic.key!r}, the key of {topic.name}")
        if not (cls.__doc__ or "").strip():
            raise ValueError(f"{cls.__name__} needs a docstring: it is the event's documentation")
        cls.event_type = event_type
        cls.topic = topic
        _REGISTRY[event_type] = cls
        return cls

    return register


def registered_payloads() -> dict[str, type[EventPayload]]:
    """Every registered event type and its payload class (import the catalogue first)."""
    return dict(_REGISTRY)


def personal(description: str, **kwargs: Any) -> Any:
    """A field that carries personal data: marked in the JSON Schema for erasure and redaction."""
    extra = kwargs.pop("json_schema_extra", {}) or {}
    return Field(
        description=description, json_schema_extra={**extra, PERSONAL_DATA_KEY: True}, **kwargs
    )
