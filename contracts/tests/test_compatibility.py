"""The compatibility check: breaking changes fail, naming the event and the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, create_model

from convohub.contracts import Envelope, event_types
from convohub.contracts.compatibility import breaking_changes, compare_catalogues
from convohub.contracts.events.conversation import ConversationStarted
from convohub.contracts.schemas import event_schema, event_schemas

from .conftest import CONTRACTS_DIR

STARTED = "convohub.conversation.started.v1"


def committed_schemas() -> dict[str, dict[str, Any]]:
    folder = CONTRACTS_DIR / "schemas"
    return {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}


def test_current_contracts_do_not_break_the_committed_schemas() -> None:
    changes = compare_catalogues(committed_schemas(), event_schemas())
    assert not changes, "breaking changes within v1 (make a v2 instead):\n" + "\n".join(
        map(str, changes)
    )


def _schema_of(model: type) -> dict[str, Any]:
    return Envelope[model].model_json_schema()  # type: ignore[valid-type]


def _variant(**fields: Any) -> type:
    """ConversationStarted with some fields replaced (None removes one)."""
    kept = {
        name: (field.annotation, field)
        for name, field in ConversationStarted.model_fields.items()
        if fields.get(name, ...) is not None
    }
    kept.update({name: spec for name, spec in fields.items() if spec is not None})
    return create_model("ConversationStarted", __base__=ConversationStarted.__base__, **kept)


def _changes(new_model: type) -> list[str]:
    return [
        str(c)
        for c in breaking_changes(STARTED, _schema_of(ConversationStarted), _schema_of(new_model))
    ]


def test_changing_a_fields_type_is_breaking() -> None:
    changes = _changes(_variant(channel_id=(int, Field(description="now a number"))))
    assert changes == [f"{STARTED}: data.channel_id: type changed from string to integer"]


def test_removing_a_field_is_breaking() -> None:
    changes = _changes(_variant(routing_hints=None))
    assert changes == [f"{STARTED}: data.routing_hints: field removed (or renamed)"]


def test_adding_a_required_field_is_breaking() -> None:
    changes = _changes(_variant(language=(str, Field(description="Language of the customer."))))
    assert changes == [f"{STARTED}: data.language: new required field"]


def test_adding_an_optional_field_passes() -> None:
    variant = _variant(language=(str | None, Field(default=None, description="Language.")))
    assert _changes(variant) == []


def test_nested_changes_name_the_nested_path() -> None:
    old = event_schema(STARTED)
    new = copy.deepcopy(old)
    identity = new["$defs"]["ChannelIdentity"]
    del identity["properties"]["display_name"]
    identity["properties"]["address"]["maxLength"] = 20
    assert [str(c) for c in breaking_changes(STARTED, old, new)] == [
        f"{STARTED}: data.customer.address: constraint tightened: maxLength None -> 20",
        f"{STARTED}: data.customer.display_name: field removed (or renamed)",
    ]


def test_removing_an_enum_value_is_breaking_and_adding_one_is_not() -> None:
    old = event_schema(STARTED)
    fewer = copy.deepcopy(old)
    fewer["$defs"]["Channel"]["enum"].remove("voice")
    assert next(c.reason for c in breaking_changes(STARTED, old, fewer)).startswith(
        "enum value(s) removed: ['voice']"
    )
    more = copy.deepcopy(old)
    more["$defs"]["Channel"]["enum"].append("carrier_pigeon")
    assert breaking_changes(STARTED, old, more) == []


def test_a_removed_event_type_is_breaking() -> None:
    schemas = event_schemas()
    current = {t: s for t, s in schemas.items() if t != STARTED}
    assert [str(c) for c in compare_catalogues(schemas, current)] == [
        f"{STARTED}: (envelope): event type removed"
    ]


def test_loosening_a_constraint_passes() -> None:
    old = event_schema(STARTED)
    new = copy.deepcopy(old)
    new["properties"]["id"]["maxLength"] = 4096
    assert breaking_changes(STARTED, old, new) == []


# Property: on every event of the real catalogue, for every field of its payload.
FIELDS = [
    (event_type, field)
    for event_type in event_types()
    for field in event_schema(event_type)["$defs"][
        event_schema(event_type)["properties"]["data"]["$ref"].split("/")[-1]
    ]["properties"]
]


def _payload_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return schema["$defs"][schema["properties"]["data"]["$ref"].split("/")[-1]]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(FIELDS))
def test_any_removed_field_is_reported_by_name(case: tuple[str, str]) -> None:
    event_type, field = case
    old = event_schema(event_type)
    new = copy.deepcopy(old)
    payload = _payload_schema(new)
    del payload["properties"][field]
    if field in payload.get("required", []):
        payload["required"].remove(field)
    reported = [str(c) for c in breaking_changes(event_type, old, new)]
    assert reported == [f"{event_type}: data.{field}: field removed (or renamed)"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(event_types()), st.booleans())
def test_a_new_field_breaks_only_when_required(event_type: str, required: bool) -> None:
    old = event_schema(event_type)
    new = copy.deepcopy(old)
    payload = _payload_schema(new)
    payload["properties"]["added_later"] = {"type": "string", "description": "new"}
    if required:
        payload.setdefault("required", []).append("added_later")
    reported = [str(c) for c in breaking_changes(event_type, old, new)]
    expected = [f"{event_type}: data.added_later: new required field"] if required else []
    assert reported == expected


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(FIELDS))
def test_any_field_turned_into_a_different_type_is_reported(case: tuple[str, str]) -> None:
    event_type, field = case
    old = event_schema(event_type)
    new = copy.deepcopy(old)
    properties = _payload_schema(new)["properties"]
    was_boolean = properties[field].get("type") == "boolean"
    properties[field] = {"type": "integer" if was_boolean else "boolean", "description": "x"}
    reported = [str(c) for c in breaking_changes(event_type, old, new)]
    assert len(reported) == 1
    assert reported[0].startswith(f"{event_type}: data.{field}: type changed from ")


@pytest.mark.parametrize("event_type", event_types())
def test_a_schema_is_compatible_with_itself(event_type: str) -> None:
    schema = event_schema(event_type)
    assert breaking_changes(event_type, schema, copy.deepcopy(schema)) == []
