"""Redaction finds every personal field through the marks in the contracts."""

from __future__ import annotations

import json

import pytest

from convohub.contracts import event_types
from convohub.contracts.catalogue import example_event
from convohub.contracts.personal import REDACTED, personal_data_paths, redact


def _values_at(document: object, parts: list[str]) -> list[object]:
    if not parts:
        return [document]
    if not isinstance(document, dict):
        return []
    head = parts[0]
    name = head.removesuffix("[]")
    value = document.get(name)
    if value is None:
        return []
    if head.endswith("[]"):
        return [found for item in value for found in _values_at(item, parts[1:])]
    return _values_at(value, parts[1:])


@pytest.mark.parametrize("event_type", event_types())
def test_redaction_replaces_every_present_personal_value_and_nothing_else(event_type: str) -> None:
    document = json.loads(example_event(event_type).model_dump_json())
    redacted = redact(document)
    for path in personal_data_paths(event_type):
        for value in _values_at(redacted, path.split(".")):
            assert value == REDACTED, f"{path} still holds {value!r}"
    assert redacted["id"] == document["id"]
    assert redacted["partitionkey"] == document["partitionkey"]
    assert document != redacted or not any(
        _values_at(document, p.split(".")) for p in personal_data_paths(event_type)
    )


def test_a_customer_message_is_unreadable_after_redaction() -> None:
    document = json.loads(
        example_event("convohub.conversation.message_received.v1").model_dump_json()
    )
    text = document["data"]["content"]["text"]
    address = document["data"]["customer"]["address"]
    redacted = json.dumps(redact(document), ensure_ascii=False)
    assert text not in redacted
    assert address not in redacted
