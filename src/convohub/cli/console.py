"""The ops console: one page at `/console` that `convohub up` serves next to the services.

The page is plain HTML, CSS and JavaScript under `data/console/` (no build step). It signs
in with an API key of `convohub.yaml` and calls the services' own APIs with it, so it sees
exactly what the key may see. Two endpoints exist for it alone:

- `GET /v1/console/session`: who the key is (tenant, role, agent), for the page to choose
  its panels;
- `GET /v1/console/stream`: Server-Sent Events that say when the hub changed (the log's
  end offsets advanced), so the page refetches its panels instead of polling them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse

from convohub.contracts.topics import TOPICS
from convohub.runtime.bus.port import EventBus
from convohub.runtime.http import AnyRole, Problem

__all__ = ["console_router"]

log = structlog.get_logger(__name__)

ASSETS = Path(__file__).with_name("data") / "console"
_ASSET_TYPES = {"console.js": "text/javascript", "console.css": "text/css"}


def console_router(
    *, check_every: float = 0.5, settle_after: float = 1.0, tick_every: float = 10.0
) -> APIRouter:
    """The page, its assets, and the session and stream endpoints.

    The stream checks the log every `check_every` seconds and sends `change` when it moved;
    one more `change` follows `settle_after` seconds after the last move (the projections
    apply what was published a moment later), and a `tick` every `tick_every` seconds keeps
    time-based figures (waits, SLA time left) current on a quiet hub.
    """
    router = APIRouter(tags=["console"])

    @router.get("/console", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(ASSETS / "index.html", media_type="text/html")

    @router.get("/console/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        media_type = _ASSET_TYPES.get(name)
        if media_type is None:
            raise Problem(404, "not_found", f"the console has no file {name!r}")
        return FileResponse(ASSETS / name, media_type=media_type)

    @router.get("/v1/console/session")
    async def session(principal: AnyRole) -> dict[str, Any]:
        """Who the presented key is: its tenant, role and the agent it acts as."""
        return {
            "tenant_id": principal.tenant_id,
            "tenant_name": principal.tenant.name,
            "role": principal.role.value,
            "agent_id": principal.agent_id,
            "channels": principal.api_key.channels,
        }

    @router.get("/v1/console/stream", response_class=StreamingResponse)
    async def stream(request: Request, principal: AnyRole) -> StreamingResponse:
        """`text/event-stream`: `hello`, then `change` whenever the hub's log moved and
        `tick` on a quiet hub; each event's data is `{"version": N, "at": time}`."""
        bus: EventBus = request.app.state.host.bus
        events = _changes(request, bus, check_every, settle_after, tick_every)
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router


async def _log_version(bus: EventBus) -> int:
    """The sum of every topic's end offsets: it grows by one per event published."""
    offsets = await bus.end_offsets([topic.name for topic in TOPICS])
    return sum(offsets.values())


def _event(name: str, version: int) -> str:
    data = json.dumps({"version": version, "at": datetime.now(UTC).isoformat()})
    return f"event: {name}\ndata: {data}\n\n"


async def _changes(
    request: Request, bus: EventBus, check_every: float, settle_after: float, tick_every: float
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    version = await _log_version(bus)
    yield "retry: 2000\n" + _event("hello", version)
    last_sent = last_moved = loop.time()
    settled = True
    server = getattr(request.app.state, "server", None)  # the uvicorn server, under `up`
    while not await request.is_disconnected():
        await asyncio.sleep(check_every)
        if server is not None and server.should_exit:
            return  # the hub is stopping: end the stream so Ctrl-C does not wait on it
        try:
            current = await _log_version(bus)
        except Exception:  # the bus is stopping or briefly unreachable: say so next round
            log.warning("console stream could not read the log's offsets", exc_info=True)
            continue
        now = loop.time()
        if current != version:
            version, last_moved, settled = current, now, False
            yield _event("change", version)
            last_sent = now
        elif not settled and now - last_moved >= settle_after:
            settled = True
            yield _event("change", version)
            last_sent = now
        elif now - last_sent >= tick_every:
            yield _event("tick", version)
            last_sent = now
