"""`convohub`: the one command line of ConvoHub."""

from __future__ import annotations

import typer

from convohub.cli import contracts, operations, up

app = typer.Typer(
    name="convohub",
    help="ConvoHub, the event-sourced omnichannel conversation hub.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(contracts.app, name="contracts")
app.add_typer(operations.topics_app, name="topics")
app.add_typer(operations.dlq_app, name="dlq")
app.command(name="up")(up.up)
app.command(name="replay")(operations.replay)


def main() -> None:
    """Entry point of the `convohub` script."""
    app()
