"""JSON Schema (draft 2020-12) of every event type: the full envelope with its payload.

These are the documents committed under `contracts/schemas/`, one per event type, named
`<event type>.json`; BI teams and other languages validate against them.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from convohub.contracts.catalogue import envelope_class, event_types, payload_class
from convohub.contracts.envelope import schema_uri

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def event_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema of one event type's envelope (a fresh copy the caller may change)."""
    return copy.deepcopy(_event_schema(event_type))


@cache
def _event_schema(event_type: str) -> dict[str, Any]:
    schema = envelope_class(payload_class(event_type)).model_json_schema()
    schema["title"] = event_type
    return {"$schema": DRAFT_2020_12, "$id": schema_uri(event_type), **schema}


def event_schemas() -> dict[str, dict[str, Any]]:
    """Every event type's schema, keyed by type."""
    return {event_type: event_schema(event_type) for event_type in event_types()}


def schema_file_text(schema: dict[str, Any]) -> str:
    """The committed file form of a schema: stable, readable, ending in a newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` (`#/$defs/Name`) from `node` within `root`, repeatedly."""
    seen: set[str] = set()
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/") or ref in seen:
            raise ValueError(f"cannot resolve $ref {ref!r}")
        seen.add(ref)
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def object_branches(root: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas a node may be (itself, its array items, or `anyOf` branches)."""
    node = resolve(root, node)
    found: list[dict[str, Any]] = []
    if "properties" in node:
        found.append(node)
    for branch in node.get("anyOf", []) + node.get("oneOf", []):
        found.extend(object_branches(root, branch))
    if isinstance(node.get("items"), dict):
        found.extend(object_branches(root, node["items"]))
    return found
