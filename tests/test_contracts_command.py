"""`convohub contracts export | check | list` as an integrator uses them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from convohub.cli.app import app
from convohub.contracts import event_types

from .conftest import REPO_DIR

runner = CliRunner()


def test_export_writes_one_schema_per_event_and_the_asyncapi_document(tmp_path: Path) -> None:
    result = runner.invoke(app, ["contracts", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = sorted(path.stem for path in (tmp_path / "schemas").glob("*.json"))
    assert written == event_types()
    document = yaml.safe_load((tmp_path / "asyncapi.yaml").read_text())
    assert document["asyncapi"] == "3.0.0"


def test_export_matches_the_committed_copies(tmp_path: Path) -> None:
    runner.invoke(app, ["contracts", "export", str(tmp_path)])
    for path in (tmp_path / "schemas").glob("*.json"):
        assert path.read_text() == (REPO_DIR / "contracts" / "schemas" / path.name).read_text()
    assert (tmp_path / "asyncapi.yaml").read_text() == (
        REPO_DIR / "contracts" / "asyncapi.yaml"
    ).read_text()


def test_export_refuses_to_overwrite_schemas_it_would_break(tmp_path: Path) -> None:
    runner.invoke(app, ["contracts", "export", str(tmp_path)])
    target = tmp_path / "schemas" / "convohub.conversation.started.v1.json"
    schema = json.loads(target.read_text())
    payload = schema["$defs"]["ConversationStarted"]
    payload["properties"]["legacy_field"] = {"type": "string", "description": "gone now"}
    target.write_text(json.dumps(schema))

    check = runner.invoke(app, ["contracts", "check", str(tmp_path)])
    assert check.exit_code == 1
    assert "convohub.conversation.started.v1: data.legacy_field: field removed" in check.output

    refused = runner.invoke(app, ["contracts", "export", str(tmp_path)])
    assert refused.exit_code == 1
    assert json.loads(target.read_text()) == schema, "a refused export must not write"

    forced = runner.invoke(app, ["contracts", "export", str(tmp_path), "--allow-breaking"])
    assert forced.exit_code == 0
    assert "legacy_field" not in target.read_text()


def test_check_passes_against_the_committed_schemas() -> None:
    result = runner.invoke(app, ["contracts", "check", str(REPO_DIR / "contracts")])
    assert result.exit_code == 0, result.output


def test_list_names_every_topic_and_event() -> None:
    result = runner.invoke(app, ["contracts", "list"])
    assert result.exit_code == 0
    for event_type in event_types():
        assert event_type in result.output
