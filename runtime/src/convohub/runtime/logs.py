"""Structured logs: one JSON object per line, with trace ids, bound context, no personal data.

`configure_logging(settings)` routes structlog and the standard library's `logging` through
the same processors, so a line from a library looks like a line from our code. Each line
carries `timestamp`, `level`, `service`, `logger`, the current OpenTelemetry `trace_id` and
`span_id` when a span is active, and whatever was bound with
`structlog.contextvars.bind_contextvars(tenant=..., conversation_id=...)`.

Personal data never leaves: a logged envelope document (a mapping with `type` and `data`,
or an `Envelope`) is passed through `convohub.contracts.personal.redact`, and any value
under a key named like a personal field (`text`, `email`, `phone`, `address`, ...) or a
secret (`password`, `token`, `api_key`, ...) is masked, at any depth. The log message
itself (`event`) is not inspected: write messages as constants and put values in keys.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from pydantic import BaseModel
from structlog.typing import EventDict, Processor, WrappedLogger

from convohub.contracts.personal import REDACTED, redact
from convohub.runtime.settings import RuntimeSettings

__all__ = ["PERSONAL_KEYS", "REDACTED", "configure_logging", "redact_personal_data"]

PERSONAL_KEYS = frozenset(
    {
        # free text people type, and how to reach or identify them
        "text",
        "body",
        "comment",
        "note",
        "reason_note",
        "raw_answer",
        "matched_text",
        "trigger_text",
        "address",
        "email",
        "phone",
        "phone_number",
        "display_name",
        "first_name",
        "last_name",
        "full_name",
        "filename",
        "latitude",
        "longitude",
        # secrets are not personal data but must not be logged either
        "password",
        "secret",
        "token",
        "api_key",
        "authorization",
    }
)


def _is_personal_key(key: object) -> bool:
    """`email`, `customer_email`, `Phone`: the name or its last `_` part is a known field."""
    if not isinstance(key, str):
        return False
    name = key.lower()
    return name in PERSONAL_KEYS or any(name.endswith(f"_{known}") for known in PERSONAL_KEYS)


def _redact_envelope(document: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return redact(dict(document))
    except Exception:  # logging must not fail on an odd value
        # not a type we know the personal fields of: keep the attributes, hide the payload
        return {**document, "data": REDACTED}


def _scrub(value: Any) -> Any:
    if isinstance(value, BaseModel) and {"type", "data"} <= set(type(value).model_fields):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        if "type" in value and "data" in value:
            return _redact_envelope(value)
        return {
            key: REDACTED if _is_personal_key(key) and item is not None else _scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def redact_personal_data(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask personal data and secrets in every value (see module doc)."""
    for key, value in list(event_dict.items()):
        if key == "event" or key.startswith("_"):
            continue  # the message, and structlog's own bookkeeping (`_record`)
        if _is_personal_key(key) and value is not None:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(value)
    return event_dict


def add_trace_context(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: `trace_id` and `span_id` of the current span, when one is active."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def _add_service(service: str) -> Processor:
    def add_service(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


# Run where the log call happens (the current span and context variables are there).
_CALL_SITE_PROCESSORS: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    add_trace_context,
]


def configure_logging(settings: RuntimeSettings, *, stream: TextIO | None = None) -> None:
    """Send structlog and standard-library logs through one pipeline to `stream` (stdout).

    Replaces the root logger's handlers (like `logging.basicConfig(force=True)`); calling it
    again reconfigures. `settings.log_format` picks JSON lines or a human console layout.
    """
    renderer: Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_CALL_SITE_PROCESSORS,
            structlog.stdlib.PositionalArgumentsFormatter(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _add_service(settings.service_name),
            redact_personal_data,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_CALL_SITE_PROCESSORS,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # the chain above does not depend on settings, so cached loggers stay correct
        cache_logger_on_first_use=True,
    )
