"""Where personal data sits in each event, and redaction for logs and erasure.

Fields are marked with `personal(...)` in the payload classes, which writes
`"x-personal-data": true` into the JSON Schema; everything here reads those marks.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from convohub.contracts.payload import PERSONAL_DATA_KEY
from convohub.contracts.schemas import event_schema, object_branches, resolve

REDACTED = "[redacted]"


@cache
def personal_data_paths(event_type: str) -> tuple[str, ...]:
    """Dotted paths of personal fields in an envelope of this type, `[]` marking list items.

    For example `data.customer.address` or `data.content.attachments[].url`.
    """
    schema = event_schema(event_type)
    paths: list[str] = []
    _collect(schema, schema, "", paths, frozenset())
    return tuple(sorted(set(paths)))


def _collect(
    root: dict[str, Any], node: dict[str, Any], prefix: str, paths: list[str], seen: frozenset[int]
) -> None:
    for obj in object_branches(root, node):
        if id(obj) in seen:  # a recursive model: its fields were listed on the way in
            continue
        for name, prop in obj.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            if prop.get(PERSONAL_DATA_KEY):
                paths.append(path)
                continue
            target = resolve(root, prop)
            is_list = target.get("type") == "array" or any(
                resolve(root, b).get("type") == "array" for b in target.get("anyOf", [])
            )
            _collect(root, prop, f"{path}[]" if is_list else path, paths, seen | {id(obj)})


def redact(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of an envelope document with every personal field replaced by `[redacted]`.

    The document must have a known `type`; values that are absent or null stay as they are.
    """
    redacted = copy.deepcopy(document)
    for path in personal_data_paths(document["type"]):
        _redact_path(redacted, path.split("."))
    return redacted


def _redact_path(node: Any, parts: list[str]) -> None:
    if not parts or not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    is_list = head.endswith("[]")
    name = head.removesuffix("[]")
    if name not in node or node[name] is None:
        return
    if not rest:
        node[name] = REDACTED
    elif is_list:
        for item in node[name]:
            _redact_path(item, rest)
    else:
        _redact_path(node[name], rest)
