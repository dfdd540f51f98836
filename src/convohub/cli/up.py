"""`convohub up`: run the hub in one process on the embedded default.

Until the services land, the hub serves what exists: the operator endpoints and the event
catalogue (every event type, its JSON Schema and the AsyncAPI document) for integrators
and BI. A config file given with `--config` (or `CONVOHUB_CONFIG`) is validated at start,
and a wrong one stops the hub with every problem named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from convohub.cli.hub import create_app
from convohub.runtime.config import ConfigError
from convohub.runtime.logs import configure_logging
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.settings import RuntimeSettings
from convohub.runtime.telemetry import setup_telemetry


def up(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port for every API and page.")] = 8080,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the embedded log and databases live.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="The convohub.yaml to load (or CONVOHUB_CONFIG).")
    ] = None,
) -> None:
    """Run the whole hub in one process (embedded mode, no servers needed)."""
    overrides = {"http_host": host, "http_port": port, "service_name": "convohub-hub"}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if config is not None:
        overrides["config"] = config
    try:
        settings = RuntimeSettings(**overrides)
        hub_config = settings.load_hub_config()
    except (ConfigError, ValidationError) as error:
        typer.echo(f"convohub up: {error}", err=True)
        raise typer.Exit(code=2) from None

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(settings)
    telemetry = setup_telemetry(settings)
    tenants = len(hub_config.tenants) if hub_config else 0
    typer.echo(
        f"ConvoHub on http://{host}:{port}  (data in {settings.data_dir.resolve()}, "
        f"{tenants} tenant(s) configured); Ctrl-C stops"
    )
    try:
        uvicorn.run(
            create_app(RuntimeMetrics()),
            host=host,
            port=port,
            log_config=None,  # uvicorn's logs go through our JSON pipeline
            timeout_graceful_shutdown=5,
        )
    finally:
        telemetry.shutdown()
