"""The hub's HTTP application: what `convohub up` serves on its one port."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from convohub.contracts.asyncapi import asyncapi_document
from convohub.contracts.catalogue import UnknownEventTypeError, event_types, payload_class
from convohub.contracts.personal import personal_data_paths
from convohub.contracts.schemas import event_schema
from convohub.contracts.topics import TOPICS
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.ops import ops_router


def create_app(metrics: RuntimeMetrics | None = None) -> FastAPI:
    """Build the hub's ASGI app (nothing is started at import time)."""
    app = FastAPI(title="ConvoHub", version="0.1.0")
    # /healthz, /readyz, /metrics; the services add their readiness checks as they land.
    app.include_router(ops_router(metrics or RuntimeMetrics(), readiness_checks={}))

    @app.exception_handler(UnknownEventTypeError)
    async def unknown_event_type(_: Request, error: UnknownEventTypeError) -> JSONResponse:
        body = {"error": {"code": "unknown_event_type", "message": str(error)}}
        return JSONResponse(status_code=404, content=body)

    @app.get("/v1/contracts/topics")
    async def topics() -> list[dict[str, Any]]:
        return [
            {
                "name": topic.name,
                "key": topic.key,
                "partitions": topic.partitions,
                "config": topic.kafka_config(),
                "producers": list(topic.producers),
            }
            for topic in TOPICS
        ]

    @app.get("/v1/contracts/events")
    async def events() -> list[dict[str, Any]]:
        return [_event_summary(event_type) for event_type in event_types()]

    @app.get("/v1/contracts/events/{event_type}/schema")
    async def schema(event_type: str) -> dict[str, Any]:
        payload_class(event_type)  # raises UnknownEventTypeError -> 404
        return event_schema(event_type)

    @app.get("/v1/contracts/asyncapi")
    async def asyncapi() -> dict[str, Any]:
        return asyncapi_document()

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        rows = "".join(
            f"<tr><td><a href='/v1/contracts/events/{s['type']}/schema'>{s['type']}</a></td>"
            f"<td>{s['topic']}</td><td>{s['summary']}</td></tr>"
            for s in (_event_summary(t) for t in event_types())
        )
        return (
            "<!doctype html><meta charset=utf-8><title>ConvoHub</title>"
            "<style>body{font:14px system-ui;margin:2em}td{padding:2px 8px}</style>"
            "<h1>ConvoHub</h1><p>The hub is running. Services arrive with their issues; "
            "today it serves the event catalogue. "
            "<a href='/v1/contracts/asyncapi'>AsyncAPI</a> · <a href='/docs'>API docs</a></p>"
            f"<table><tr><th>event type</th><th>topic</th><th>what happened</th></tr>{rows}</table>"
        )

    return app


def _event_summary(event_type: str) -> dict[str, Any]:
    cls = payload_class(event_type)
    return {
        "type": event_type,
        "topic": cls.topic.name,
        "summary": (cls.__doc__ or "").strip().splitlines()[0],
        "personal_data": list(personal_data_paths(event_type)),
    }
