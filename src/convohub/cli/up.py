"""`convohub up`: run the hub in one process on the embedded default.

Until the services land, the hub serves what exists: health and the event catalogue
(every event type, its JSON Schema and the AsyncAPI document) for integrators and BI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from convohub.cli.hub import create_app


def up(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port for every API and page.")] = 8080,
    data_dir: Annotated[
        Path, typer.Option(help="Where the embedded log and databases live.")
    ] = Path(".convohub"),
) -> None:
    """Run the whole hub in one process (embedded mode, no servers needed)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    typer.echo(f"ConvoHub on http://{host}:{port}  (data in {data_dir.resolve()}); Ctrl-C stops")
    uvicorn.run(create_app(), host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
