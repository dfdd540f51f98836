"""The committed JSON Schemas and AsyncAPI document are valid and current."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from convohub.contracts import event_types
from convohub.contracts.asyncapi import asyncapi_document
from convohub.contracts.schemas import DRAFT_2020_12, event_schemas, schema_file_text

from .conftest import CONTRACTS_DIR

SCHEMA_DIR = CONTRACTS_DIR / "schemas"
ASYNCAPI_FILE = CONTRACTS_DIR / "asyncapi.yaml"
REEXPORT = "run `./convohub contracts export contracts` and commit the result"


def test_there_is_one_committed_schema_per_event_type() -> None:
    committed = sorted(path.stem for path in SCHEMA_DIR.glob("*.json"))
    assert committed == event_types(), REEXPORT


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_committed_schema_is_valid_json_schema_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema["$schema"] == DRAFT_2020_12
    Draft202012Validator.check_schema(schema)


def test_committed_schemas_are_current() -> None:
    stale = [
        event_type
        for event_type, schema in event_schemas().items()
        if (SCHEMA_DIR / f"{event_type}.json").read_text() != schema_file_text(schema)
    ]
    assert not stale, f"schemas out of date: {stale}; {REEXPORT}"


def test_committed_asyncapi_document_is_current() -> None:
    committed = yaml.load(
        ASYNCAPI_FILE.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    )
    assert committed == json.loads(json.dumps(asyncapi_document())), REEXPORT


def test_asyncapi_document_lists_every_event_on_its_topic() -> None:
    document = asyncapi_document()
    names = {message["name"] for message in document["components"]["messages"].values()}
    assert names == set(event_types())
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert "convohub.conversation.v1" in addresses
    assert "convohub.dlq.v1" in addresses


def test_official_parser_accepts_the_committed_asyncapi_document(
    asyncapi_validator: list[str],
) -> None:
    result = subprocess.run(
        [*asyncapi_validator, str(ASYNCAPI_FILE)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["version"] == "3.0.0"
    assert summary["messages"] == len(event_types())


def test_official_parser_rejects_a_broken_document(
    asyncapi_validator: list[str], tmp_path: Path
) -> None:
    document = asyncapi_document()
    first = next(iter(document["channels"].values()))
    first["messages"] = {"Ghost": {"$ref": "#/components/messages/DoesNotExist"}}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    result = subprocess.run(
        [*asyncapi_validator, str(broken)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stdout
    assert json.loads(result.stdout)["errors"]
