"""`convohub contracts`: list, export and check the event contracts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from convohub.contracts.asyncapi import asyncapi_document
from convohub.contracts.catalogue import event_types_on, payload_class
from convohub.contracts.compatibility import BreakingChange, compare_catalogues
from convohub.contracts.schemas import event_schemas, schema_file_text
from convohub.contracts.topics import TOPICS

app = typer.Typer(help="The event contracts: list, export, check.", no_args_is_help=True)

SCHEMAS_FOLDER = "schemas"
ASYNCAPI_FILE = "asyncapi.yaml"


def asyncapi_file_text(document: dict[str, Any]) -> str:
    """The committed YAML form of the AsyncAPI document."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when the wheel has it
    return yaml.dump(document, Dumper=dumper, sort_keys=False, allow_unicode=True, width=100)


def read_committed_schemas(folder: Path) -> dict[str, dict[str, Any]]:
    """The schemas exported earlier into `folder/schemas`, keyed by event type."""
    schema_folder = folder / SCHEMAS_FOLDER
    if not schema_folder.is_dir():
        return {}
    return {
        path.stem: json.loads(path.read_text()) for path in sorted(schema_folder.glob("*.json"))
    }


def breaking_changes_against(folder: Path) -> list[BreakingChange]:
    """What the current contracts would break for consumers of the schemas in `folder`."""
    return compare_catalogues(read_committed_schemas(folder), event_schemas())


@app.command("list")
def list_events() -> None:
    """List every topic and the event types it carries."""
    for topic in TOPICS:
        typer.echo(f"{topic.name}  (key: {topic.key}, partitions: {topic.partitions})")
        for event_type in event_types_on(topic):
            summary = (payload_class(event_type).__doc__ or "").strip().splitlines()[0]
            typer.echo(f"    {event_type:50} {summary}")


@app.command()
def check(
    folder: Annotated[Path, typer.Argument(help="Folder holding schemas/ from an earlier export.")],
) -> None:
    """Fail when the current contracts break consumers of the schemas in FOLDER."""
    changes = breaking_changes_against(folder)
    for change in changes:
        typer.echo(f"BREAKING {change}", err=True)
    if changes:
        raise typer.Exit(code=1)
    typer.echo(f"compatible with {folder / SCHEMAS_FOLDER}")


@app.command()
def export(
    folder: Annotated[Path, typer.Argument(help="Where to write schemas/ and asyncapi.yaml.")],
    allow_breaking: Annotated[
        bool,
        typer.Option(help="Overwrite even when the change breaks existing consumers."),
    ] = False,
) -> None:
    """Write one JSON Schema per event type and the AsyncAPI 3.0 document into FOLDER.

    Refuses to overwrite schemas that the current contracts would break: a breaking
    change belongs in a new event version, not in an edited v1.
    """
    changes = breaking_changes_against(folder)
    if changes and not allow_breaking:
        for change in changes:
            typer.echo(f"BREAKING {change}", err=True)
        typer.echo("refusing to export: make a new version of the event instead", err=True)
        raise typer.Exit(code=1)
    schema_folder = folder / SCHEMAS_FOLDER
    schema_folder.mkdir(parents=True, exist_ok=True)
    schemas = event_schemas()
    for stale in schema_folder.glob("*.json"):
        if stale.stem not in schemas:
            stale.unlink()
    for event_type, schema in schemas.items():
        (schema_folder / f"{event_type}.json").write_text(schema_file_text(schema))
    (folder / ASYNCAPI_FILE).write_text(asyncapi_file_text(asyncapi_document()))
    typer.echo(f"wrote {len(schemas)} schemas to {schema_folder} and {folder / ASYNCAPI_FILE}")
