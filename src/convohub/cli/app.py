"""`convohub`: the one command line of ConvoHub."""

from __future__ import annotations

import typer

from convohub.cli import contracts, up

app = typer.Typer(
    name="convohub",
    help="ConvoHub, the event-sourced omnichannel conversation hub.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(contracts.app, name="contracts")
app.command(name="up")(up.up)


def main() -> None:
    """Entry point of the `convohub` script."""
    app()
