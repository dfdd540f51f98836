"""`convohub up` and `convohub serve NAME`.

`up` runs every installed service in one process on the embedded default (the log and one
SQLite file per service under `./.convohub/`), on one HTTP port that also serves the event
catalogue and the ops console (`/console`). Without `--config` or `CONVOHUB_CONFIG` it loads
`./.convohub/convohub.yaml`, which its first run writes from the documented example (with
fresh keys, printed).

`serve NAME` runs one service alone, the way a pod runs it (usually with
`CONVOHUB_MODE=distributed`, Kafka and PostgreSQL). Both validate `convohub.yaml` (given
with `--config` or `CONVOHUB_CONFIG`) at start: a wrong file stops them with every problem
named and exit status 2.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from convohub.cli.console import console_router
from convohub.cli.hosting import build_host, load_settings, overrides_for, serve
from convohub.cli.hub import catalogue_router
from convohub.cli.sample import describe_keys, ensure_sample_config
from convohub.runtime.hosting import open_store
from convohub.runtime.service import available_services, create_tables

HostOption = Annotated[str | None, typer.Option(help="Interface to listen on.")]
DataDirOption = Annotated[
    Path | None, typer.Option(help="Where the embedded log and databases live.")
]
ConfigOption = Annotated[
    Path | None, typer.Option(help="The convohub.yaml to load (or CONVOHUB_CONFIG).")
]


def up(
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port for every API and page.")] = 8080,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run the whole hub in one process (embedded mode, no servers needed)."""
    overrides = overrides_for("convohub-hub", host, port, data_dir, config)
    settings, hub_config = load_settings("up", overrides)
    if settings.config is None:  # neither --config nor CONVOHUB_CONFIG: the local sample
        sample = ensure_sample_config(settings.data_dir)
        settings, hub_config = load_settings("up", {**overrides, "config": sample.path})
        if sample.created:
            typer.echo(f"First run: wrote a sample config to {sample.path}. Its API keys:")
            typer.echo("\n".join(describe_keys(hub_config)))
        else:
            typer.echo(f"Config: {sample.path}")
    names = sorted(available_services())
    service_host = build_host("up", settings, hub_config, names)
    banner = (
        f"ConvoHub on http://{settings.http_host}:{settings.http_port}  "
        f"(services: {', '.join(names) or 'none'}; data in {settings.data_dir.resolve()}; "
        f"{len(hub_config.tenants)} tenant(s) configured); Ctrl-C stops"
    )
    serve(
        settings,
        service_host,
        banner=banner,
        extra_routers=[catalogue_router(), console_router()],
        access_log=False,
    )


def serve_one(
    name: Annotated[str, typer.Argument(help="ingest, router, sla, crm or feedback.")],
    host: HostOption = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8000).")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run one service alone (as a pod does; set CONVOHUB_MODE=distributed for Kafka)."""
    known = available_services()
    if name not in known:
        typer.echo(
            f"convohub serve: no service {name!r}; installed: {', '.join(sorted(known))}",
            err=True,
        )
        raise typer.Exit(code=2)
    overrides = overrides_for(f"convohub-{name}", host, port, data_dir, config)
    settings, hub_config = load_settings("serve", overrides)
    service_host = build_host("serve", settings, hub_config, [name])
    banner = (
        f"ConvoHub {name} on http://{settings.http_host}:{settings.http_port} "
        f"({settings.mode} mode); Ctrl-C stops"
    )
    serve(settings, service_host, banner=banner)


def migrate(
    services: Annotated[
        list[str] | None, typer.Argument(help="Services to migrate (default: all installed).")
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create the runtime's and the services' tables (a deployment's one-shot setup job)."""
    known = available_services()
    names = services or sorted(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        typer.echo(f"convohub migrate: no service {', '.join(unknown)}", err=True)
        raise typer.Exit(code=2)
    settings, hub_config = load_settings(
        "migrate", overrides_for("convohub-migrate", None, None, data_dir, config)
    )
    service_host = build_host("migrate", settings, hub_config, names)

    async def run() -> None:
        for service in service_host.services:
            store = open_store(settings, service.name)
            try:
                await create_tables(service, store)
            finally:
                await store.engine.dispose()
            typer.echo(f"{service.name}: tables ready")

    asyncio.run(run())
