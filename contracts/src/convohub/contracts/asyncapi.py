"""The AsyncAPI 3.0 document of every topic and message, built from the catalogue.

Schemas are the same JSON Schemas as `contracts/schemas/`, with their `$defs` hoisted
into `components.schemas` so that references resolve inside one document.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from convohub.contracts.catalogue import event_types_on, example_event, payload_class
from convohub.contracts.kafka import CONTENT_TYPE, TRACEPARENT_PATTERN
from convohub.contracts.schemas import event_schema
from convohub.contracts.topics import TOPICS, Topic

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
HEADERS_SCHEMA = "KafkaRecordHeaders"


def asyncapi_document() -> dict[str, Any]:
    """The whole AsyncAPI 3.0 document, as plain JSON-ready data."""
    schemas: dict[str, Any] = {HEADERS_SCHEMA: _headers_schema()}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in TOPICS:
        channel_id = _channel_id(topic)
        names = []
        for event_type in event_types_on(topic):
            name = payload_class(event_type).__name__
            names.append(name)
            messages[name] = _message(event_type, schemas)
        channels[channel_id] = {
            "address": topic.name,
            "title": topic.name,
            "description": topic.description + f" Key: `{topic.key}`.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
            "bindings": {"kafka": _channel_binding(topic)},
        }
        operations[f"publish{_camel(channel_id)}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "title": f"Publish to {topic.name}",
            "summary": f"Produced by: {', '.join(topic.producers)}.",
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{name}"} for name in names],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "ConvoHub events",
            "version": "1.0.0",
            "description": (
                "Every fact of the ConvoHub conversation hub, one CloudEvents 1.0 envelope per "
                "Kafka record (structured JSON value, key = partitionkey). Types are named "
                "convohub.<area>.<event>.v<N>; within a version only additive, optional "
                "changes are made."
            ),
        },
        "defaultContentType": CONTENT_TYPE.split(";")[0],
        "channels": channels,
        "operations": operations,
        "components": {"schemas": dict(sorted(schemas.items())), "messages": messages},
    }


def _message(event_type: str, schemas: dict[str, Any]) -> dict[str, Any]:
    cls = payload_class(event_type)
    schema = event_schema(event_type)
    for name, definition in schema.pop("$defs", {}).items():
        _add_schema(schemas, name, _rehome_refs(definition))
    schema.pop("$schema", None)
    schema.pop("$id", None)
    envelope_name = f"{cls.__name__}Event"
    _add_schema(schemas, envelope_name, _rehome_refs(schema))
    doc = inspect.cleandoc(cls.__doc__ or "")
    example = json.loads(example_event(event_type).model_dump_json())
    return {
        "name": event_type,
        "title": cls.__name__,
        "summary": doc.splitlines()[0],
        "description": doc,
        "contentType": CONTENT_TYPE.split(";")[0],
        "headers": {"$ref": f"#/components/schemas/{HEADERS_SCHEMA}"},
        "payload": {"$ref": f"#/components/schemas/{envelope_name}"},
        "correlationId": {
            "description": "All events of one causal chain share it.",
            "location": "$message.payload#/correlationid",
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"The payload's {cls.topic.key}."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
        "examples": [{"name": "example", "headers": _example_headers(example), "payload": example}],
    }


def _add_schema(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    if name in schemas and schemas[name] != schema:
        raise ValueError(f"two different schemas are both named {name!r}; rename one class")
    schemas[name] = schema


def _rehome_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                value.replace("#/$defs/", "#/components/schemas/")
                if key == "$ref" and isinstance(value, str)
                else _rehome_refs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rehome_refs(item) for item in node]
    return node


def _channel_binding(topic: Topic) -> dict[str, Any]:
    config = topic.kafka_config()
    return {
        "topic": topic.name,
        "partitions": topic.partitions,
        "topicConfiguration": {
            "cleanup.policy": [config["cleanup.policy"]],
            "retention.ms": int(config["retention.ms"]),
        },
        "bindingVersion": KAFKA_BINDING_VERSION,
    }


def _headers_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Kafka record headers of every ConvoHub event.",
        "properties": {
            "content-type": {"type": "string", "const": CONTENT_TYPE},
            "ce_type": {"type": "string", "description": "The envelope's `type`."},
            "ce_id": {"type": "string", "description": "The envelope's `id`."},
            "traceparent": {
                "type": "string",
                "pattern": TRACEPARENT_PATTERN.pattern,
                "description": "W3C trace context of the producer's span.",
            },
        },
        "required": ["content-type", "ce_type", "ce_id"],
    }


def _example_headers(example: dict[str, Any]) -> dict[str, str]:
    return {"content-type": CONTENT_TYPE, "ce_type": example["type"], "ce_id": example["id"]}


def _channel_id(topic: Topic) -> str:
    # convohub.conversation-facts.v1 -> conversationFacts
    return _camel(topic.name.split(".")[1], lower_first=True)


def _camel(text: str, lower_first: bool = False) -> str:
    words = text.replace("-", " ").replace("_", " ").split()
    camel = "".join(word[:1].upper() + word[1:] for word in words)
    return camel[:1].lower() + camel[1:] if lower_first else camel
