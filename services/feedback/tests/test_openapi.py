"""Schemathesis over the feedback part of `/openapi.json`: generated requests, on real and
unknown survey and follow-up ids, never get a server error."""

from __future__ import annotations

import random
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import schemathesis
from hypothesis.errors import NonInteractiveExampleWarning
from schemathesis.checks import not_a_server_error

from convohub.feedback.bootstrap import create_service
from tests.support.hub import backend_for, eventually, running_hub

from .test_closed_loop import CONFIG, SUPERVISOR_KEY, T0, received, resolved, started

EXAMPLES_PER_OPERATION = 15


async def test_generated_requests_get_no_server_error(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    chooser = random.Random(8)
    headers = {"Authorization": f"Bearer {SUPERVISOR_KEY}"}
    async with (
        backend_for("embedded", request, tmp_path) as backend,
        running_hub(backend, [create_service(CONFIG)], CONFIG) as hub,
    ):
        await hub.publish(started("c1"), resolved("c1", T0 + timedelta(minutes=1)))

        async def sent() -> Any:
            response = await hub.client.get(
                "/v1/surveys", params={"conversation_id": "c1"}, headers=headers
            )
            items = [i for i in response.json()["items"] if i["status"] == "sent"]
            return items[0] if items else None

        survey = await eventually(sent, "the survey sent")
        token = parse_qs(urlparse(survey["link"]).query)["token"][0]
        await hub.publish(received("c1", "1 awful", 1, T0 + timedelta(minutes=2)))

        async def follow_up() -> Any:
            response = await hub.client.get("/v1/follow-ups", headers=headers)
            return response.json()["items"]

        (open_follow_up,) = await eventually(follow_up, "a follow-up")
        real = {"survey_id": survey["survey_id"], "follow_up_id": open_follow_up["follow_up_id"]}
        document = (await hub.client.get("/openapi.json")).json()
        schema = schemathesis.openapi.from_dict(document).include(
            path_regex="^/v1/(surveys|follow-ups|metrics|staffing)"
        )
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
                for name, value in real.items():
                    if name in (case.path_parameters or {}) and chooser.random() < 0.6:
                        case.path_parameters[name] = value
                        if name == "survey_id" and chooser.random() < 0.7:
                            case.query = {**(case.query or {}), "token": token}
                kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
                kwargs.pop("cookies", None)
                response = await hub.client.request(**kwargs)
                try:
                    case.validate_response(response, checks=[not_a_server_error])
                except AssertionError as error:
                    failures.append(f"{case.method} {case.formatted_path}: {error}"[:500])
    assert operations >= 7
    assert not failures, "\n".join(failures[:5])
