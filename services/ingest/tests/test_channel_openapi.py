"""Schemathesis over the channel side's part of `/openapi.json`: generated requests (on
real and unknown channels, with and without a key) never get a server error, and every
answer the document describes matches its schema."""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis.errors import NonInteractiveExampleWarning
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from convohub.ingest.bootstrap import create_service
from tests.support.hub import backend_for, running_hub

from .channel_support import API_KEY, ORIGIN, hub_config

CHANNEL_PATHS = r"^/v1/(webhooks|webchat|channels)/"
REAL_CHANNELS = ["sms-main", "wa-main", "email-support", "voice-main", "web-main", "api-main"]
EXAMPLES_PER_OPERATION = 15


async def test_generated_requests_get_no_server_error(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    config = hub_config()
    chooser = random.Random(4)
    async with (
        backend_for("embedded", request, tmp_path) as backend,
        running_hub(backend, [create_service(config)], config) as hub,
    ):
        document = (await hub.client.get("/openapi.json")).json()
        schema = schemathesis.openapi.from_dict(document).include(path_regex=CHANNEL_PATHS)
        failures: list[str] = []
        operations = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            strategy = operation.as_strategy()
            for _ in range(EXAMPLES_PER_OPERATION):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
                    case: Any = strategy.example()
                if "channel_id" in (case.path_parameters or {}) and chooser.random() < 0.7:
                    case.path_parameters["channel_id"] = chooser.choice(REAL_CHANNELS)
                headers = {"Authorization": f"Bearer {API_KEY}", "Origin": ORIGIN}
                kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
                kwargs.pop("cookies", None)
                response = await hub.client.request(**kwargs)
                try:
                    case.validate_response(
                        response, checks=[not_a_server_error, response_schema_conformance]
                    )
                except AssertionError as error:  # schemathesis failures are AssertionErrors
                    failures.append(f"{case.method} {case.formatted_path}: {error}"[:500])
    assert operations >= 8
    assert not failures, "\n".join(failures[:5])
