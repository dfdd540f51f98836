"""The ASGI app that serves a `ServiceHost`: every service's routes, the operator endpoints,
problem responses, an HTTP server span and duration histogram per request
(`http_telemetry`), and a lifespan that starts the bus and the host and stops them again."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.telemetry import TelemetryConfig

from convohub.runtime.http import install_problem_handlers
from convohub.runtime.http_telemetry import HttpTelemetryMiddleware
from convohub.runtime.ops import ops_router
from convohub.runtime.service import ServiceHost

__all__ = ["create_service_app"]


def create_service_app(
    host: ServiceHost,
    *,
    title: str = "ConvoHub",
    extra_routers: Sequence[APIRouter] = (),
    manage_bus: bool = True,
    freeze_heap: bool = False,
) -> FastAPI:
    """An app serving `host`'s services. With `manage_bus` the lifespan also starts and
    stops `host.bus` (a test that shares a started bus passes False). With `freeze_heap`
    (a server process, not a test) what exists once the host started is moved out of the
    garbage collector's sight (`gc.freeze`): the modules, configs and pools live as long
    as the process, and full collections that walked them took 90–230 ms each under load
    in the router's benchmark."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_bus:
            await host.bus.start()
        try:
            await host.start()
            if freeze_heap:
                gc.collect()
                gc.freeze()
            try:
                yield
            finally:
                await host.stop()
        finally:
            if manage_bus:
                await host.bus.stop()

    # FastAPI's native OpenTelemetry (on once `setup_telemetry` installs providers) would
    # add a second server span in a trace of its own, per-operation spans and a second
    # request histogram to what HttpTelemetryMiddleware records: about a tenth of the CPU
    # of a `convohub serve ingest` webhook, exported or not.
    native_telemetry_off: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title=title, version="0.1.0", lifespan=lifespan, telemetry=native_telemetry_off)
    app.state.hub_config = host.config
    app.state.host = host
    install_problem_handlers(app)
    # Outside the routes, inside Starlette's error middleware: an exception still ends the
    # span and is measured as the 500 the client gets.
    app.add_middleware(HttpTelemetryMiddleware, metrics=host.metrics, tracer=lambda: host.tracer)
    app.include_router(ops_router(host.metrics, host.readiness_checks()))
    for service in host.services:
        routes = service.routes()
        if routes is not None:
            app.include_router(routes)
    for router in extra_routers:
        app.include_router(router)
    return app
