"""Operating the log and the projections: `convohub topics`, `dlq` and `replay`.

Every command takes its mode, data folder, Kafka and database from the runtime settings
(`CONVOHUB_MODE`, `CONVOHUB_DATA_DIR`, `KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`, ...), so
it works on the embedded hub and on a distributed one alike.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from convohub.runtime.bus.port import EventBus
from convohub.runtime.deadletters import find_dead_letter, list_dead_letters, redrive
from convohub.runtime.hosting import open_bus, open_store
from convohub.runtime.projection import Projection
from convohub.runtime.replay import replay as replay_projection
from convohub.runtime.settings import RuntimeSettings
from convohub.runtime.store import migrate_runtime

PROJECTIONS_ENTRY_POINTS = "convohub.projections"
"""Entry-point group where each service registers its projections by name."""

topics_app = typer.Typer(help="Kafka topics of the registry.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter topic: list, show, redrive.", no_args_is_help=True)

T = TypeVar("T")


def console() -> Console:
    """A console for this command (made per call: it reads the terminal's width then)."""
    return Console()


def run(work: Callable[[EventBus], Awaitable[T]]) -> T:
    """Run `work` with the mode's bus started, and stop it afterwards."""

    async def main() -> T:
        bus = open_bus(RuntimeSettings())
        await bus.start()
        try:
            return await work(bus)
        finally:
            await bus.stop()

    return asyncio.run(main())


@topics_app.command("apply")
def topics_apply(
    dry_run: Annotated[bool, typer.Option(help="Only report what would change.")] = False,
) -> None:
    """Create or update the registry's topics on Kafka (idempotent) and report drift."""
    from convohub.runtime.topics_admin import apply_topics, diff_topics

    settings = RuntimeSettings()
    if settings.mode != "distributed":
        console().print("embedded mode: the embedded log creates the registry's topics itself")
        return
    settings.check_mode_requirements()
    action = diff_topics if dry_run else apply_topics
    report = action(settings.kafka_bootstrap_servers)
    for line in report.lines():
        console().print(line, highlight=False)


@dlq_app.command("list")
def dlq_list(
    handler: Annotated[str | None, typer.Option(help="Only this consumer group's.")] = None,
) -> None:
    """List the dead letters, oldest first."""
    letters = run(lambda bus: list_dead_letters(bus, handler=handler))
    if not letters:
        console().print("no dead letters")
        return
    table = Table("id", "handler", "original", "event type", "error", "attempts", "at")
    for letter in letters:
        row = letter.summary()
        table.add_row(
            row["id"],
            row["handler"],
            f"{row['topic']}[{row['partition']}]@{row['offset']}",
            row["event_type"] or "-",
            row["error"],
            str(row["attempts"]),
            row["dead_lettered_at"],
        )
    console().print(table)


@dlq_app.command("show")
def dlq_show(dead_letter_id: Annotated[str, typer.Argument(help="The dead letter's id.")]) -> None:
    """Print one dead letter in full (as JSON: it holds the original record and error)."""
    try:
        letter = run(lambda bus: find_dead_letter(bus, dead_letter_id))
    except KeyError as error:
        console().print(str(error.args[0]), style="red")
        raise typer.Exit(code=1) from None
    typer.echo(letter.event.model_dump_json(indent=2))


@dlq_app.command("redrive")
def dlq_redrive(
    dead_letter_id: Annotated[str, typer.Argument(help="The dead letter's id.")],
) -> None:
    """Publish a dead letter's original record again, for the handler that failed it."""
    try:
        record = run(lambda bus: redrive(bus, dead_letter_id))
    except KeyError as error:
        console().print(str(error.args[0]), style="red")
        raise typer.Exit(code=1) from None
    handler = dict(record.headers).get("convohub_redrive_group", b"").decode()
    console().print(f"redriven to {record.topic} for {handler}")


def resolve_projection(name: str) -> Projection:
    """A projection by its registered name, or by `module:attribute` (a class or factory)."""
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        target: Any = getattr(importlib.import_module(module_name), attribute)
    else:
        found = entry_points(group=PROJECTIONS_ENTRY_POINTS, name=name)
        if not found:
            known = sorted(ep.name for ep in entry_points(group=PROJECTIONS_ENTRY_POINTS))
            raise typer.BadParameter(f"no projection named {name!r} (known: {known or 'none'})")
        target = next(iter(found)).load()
    projection = target() if callable(target) else target
    if not isinstance(projection, Projection):
        raise typer.BadParameter(f"{name} is not a Projection")
    return projection


def replay(
    service: Annotated[
        str, typer.Argument(help="A registered projection name, or module:attribute.")
    ],
) -> None:
    """Drop a projection and rebuild it from the start of the log, with progress.

    Stop the projection's live consumers first; they resume after the rebuilt position.
    """
    projection = resolve_projection(service)
    settings = RuntimeSettings()

    async def work(bus: EventBus) -> int:
        store = open_store(settings, projection.name)
        try:
            await migrate_runtime(store.engine)
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console(),
            ) as progress:
                task = progress.add_task(f"replaying {projection.name}", total=None)
                result = await replay_projection(
                    bus,
                    store,
                    projection,
                    progress=lambda done, total: progress.update(task, completed=done, total=total),
                )
            return result.records
        finally:
            await store.engine.dispose()

    records = run(work)
    console().print(f"rebuilt {projection.name} from {records} records")
    typer.echo(json.dumps({"projection": projection.name, "records": records}))
