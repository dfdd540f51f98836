"""Schemathesis over CRM's part of `/openapi.json`: generated requests, on real and unknown
customer ids, never get a server error."""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis.errors import NonInteractiveExampleWarning
from schemathesis.checks import not_a_server_error

from convohub.crm.bootstrap import create_service
from tests.support.hub import backend_for, running_hub

from .test_service import ADMIN, CONFIG, PHONE, identity, lookup, received, started

EXAMPLES_PER_OPERATION = 10


async def test_generated_requests_get_no_server_error(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    chooser = random.Random(7)
    async with (
        backend_for("embedded", request, tmp_path) as backend,
        running_hub(backend, [create_service(CONFIG)], CONFIG) as hub,
    ):
        await hub.publish(
            started("conv-1", identity("sms", "sms", PHONE, "Zhang San"), 0),
            received("conv-1", identity("sms", "sms", PHONE), "hello", 1),
        )
        real_id = (await lookup(hub, PHONE))["customer_id"]
        document = (await hub.client.get("/openapi.json")).json()
        schema = schemathesis.openapi.from_dict(document).include(path_regex="^/v1/customers")
        failures: list[str] = []
        operations = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path.endswith("/erase"):
                continue  # erasing the one customer would leave nothing real to hit
            operations += 1
            strategy = operation.as_strategy()
            for _ in range(EXAMPLES_PER_OPERATION):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
                    case: Any = strategy.example()
                if "customer_id" in (case.path_parameters or {}) and chooser.random() < 0.6:
                    case.path_parameters["customer_id"] = real_id
                headers = {"Authorization": f"Bearer {ADMIN}"}
                kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
                kwargs.pop("cookies", None)
                response = await hub.client.request(**kwargs)
                try:
                    case.validate_response(response, checks=[not_a_server_error])
                except AssertionError as error:
                    failures.append(f"{case.method} {case.formatted_path}: {error}"[:500])
    assert operations >= 7
    assert not failures, "\n".join(failures[:5])
