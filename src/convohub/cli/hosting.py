"""What `convohub up` and `convohub serve NAME` share: settings and config loaded with every
problem named (exit 2), logging and telemetry set up, the services built from their
entry points, and one uvicorn server for their app."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
import uvicorn
from fastapi import APIRouter
from pydantic import ValidationError

from convohub.runtime.app import create_service_app
from convohub.runtime.config import ConfigError, HubConfig
from convohub.runtime.hosting import open_bus, open_store
from convohub.runtime.logs import configure_logging
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.service import ServiceHost, load_service_factory
from convohub.runtime.settings import RuntimeSettings, SettingsError
from convohub.runtime.store import ProjectionStore
from convohub.runtime.telemetry import setup_telemetry


def load_settings(command: str, overrides: dict[str, Any]) -> tuple[RuntimeSettings, HubConfig]:
    """Settings and config, or exit 2 naming every problem."""
    try:
        settings = RuntimeSettings(**overrides)
        settings.check_mode_requirements()
        config = settings.load_hub_config() or HubConfig()
    except (ConfigError, ValidationError, SettingsError) as error:
        typer.echo(f"convohub {command}: {error}", err=True)
        raise typer.Exit(code=2) from None
    return settings, config


def build_host(
    command: str, settings: RuntimeSettings, config: HubConfig, names: Sequence[str]
) -> ServiceHost:
    """The services named, built from their entry points (a wrong config section exits 2)."""
    try:
        services = [load_service_factory(name)(config) for name in names]
    except ConfigError as error:
        typer.echo(f"convohub {command}: {error}", err=True)
        raise typer.Exit(code=2) from None

    async def open_service_store(name: str) -> ProjectionStore:
        return open_store(settings, name)

    return ServiceHost(
        services,
        config=config,
        bus=open_bus(settings),
        open_store=open_service_store,
        metrics=RuntimeMetrics(),
        outbox_poll_interval=settings.idle_poll_seconds,
        max_batch=settings.max_batch,
        metrics_interval=settings.metrics_interval_seconds,
    )


def serve(
    settings: RuntimeSettings,
    host: ServiceHost,
    *,
    banner: str,
    extra_routers: Sequence[APIRouter] = (),
    access_log: bool = True,
) -> None:
    """Serve `host` on the settings' HTTP address until Ctrl-C (or SIGTERM); `access_log`
    is the default when the settings do not say."""
    configure_logging(settings)
    telemetry = setup_telemetry(settings)
    typer.echo(banner)
    app = create_service_app(host, extra_routers=extra_routers, freeze_heap=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,  # uvicorn's logs go through our JSON pipeline
            access_log=access_log if settings.access_log is None else settings.access_log,
            timeout_graceful_shutdown=5,
        )
    )
    app.state.server = server  # long-lived streams (the console's) end once it is stopping
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        telemetry.shutdown()
    if not server.started:  # as uvicorn.run: the port was taken, or the start failed
        sys.exit(3)


def overrides_for(
    service_name: str,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    config: Path | None,
) -> dict[str, Any]:
    overrides: dict[str, Any] = {"service_name": service_name}
    for key, value in (("http_host", host), ("http_port", port), ("data_dir", data_dir)):
        if value is not None:
            overrides[key] = value
    if config is not None:
        overrides["config"] = config
    return overrides
