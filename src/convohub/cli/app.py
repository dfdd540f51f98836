"""`convohub`: the one command line of ConvoHub."""

from __future__ import annotations

import typer

from convohub.cli import contracts, deploy, operations, route_sim, simulate, up

app = typer.Typer(
    name="convohub",
    help="ConvoHub, the event-sourced omnichannel conversation hub.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(contracts.app, name="contracts")
app.add_typer(operations.topics_app, name="topics")
app.add_typer(operations.dlq_app, name="dlq")
app.add_typer(deploy.app, name="deploy")
app.command(name="up")(up.up)
app.command(name="serve")(up.serve_one)
app.command(name="migrate")(up.migrate)
app.command(name="replay")(operations.replay)
app.command(name="route-sim")(route_sim.route_sim)
app.command(name="simulate")(simulate.simulate_command)


def main() -> None:
    """Entry point of the `convohub` script."""
    app()
