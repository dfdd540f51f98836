"""The event catalogue the hub serves next to the services: every event type, its JSON
Schema and the AsyncAPI document, for integrators and BI, plus the index page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from convohub.contracts.asyncapi import asyncapi_document
from convohub.contracts.catalogue import UnknownEventTypeError, event_types, payload_class
from convohub.contracts.personal import personal_data_paths
from convohub.contracts.schemas import event_schema
from convohub.contracts.topics import TOPICS
from convohub.runtime.http import Problem


def catalogue_router() -> APIRouter:
    """`/v1/contracts/...` and the index page `/`."""
    app = APIRouter(tags=["contracts"])

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
        try:
            payload_class(event_type)
        except UnknownEventTypeError as error:
            raise Problem(404, "unknown_event_type", str(error)) from None
        return event_schema(event_type)

    @app.get("/v1/contracts/asyncapi")
    async def asyncapi() -> dict[str, Any]:
        return asyncapi_document()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        rows = "".join(
            f"<tr><td><a href='/v1/contracts/events/{s['type']}/schema'>{s['type']}</a></td>"
            f"<td>{s['topic']}</td><td>{s['summary']}</td></tr>"
            for s in (_event_summary(t) for t in event_types())
        )
        return (
            "<!doctype html><meta charset=utf-8><title>ConvoHub</title>"
            "<style>body{font:14px system-ui;margin:2em}td{padding:2px 8px}</style>"
            "<h1>ConvoHub</h1><p>The hub is running: every service's API, "
            "the event catalogue below and the ops console. "
            "<a href='/console'>Ops console</a> · "
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
