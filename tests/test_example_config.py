"""The documented `convohub.example.yaml` is one every installed service accepts, and a
mistake inside a service's section stops the hub naming the key path."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from convohub.runtime.config import ConfigError, load_config, parse_config
from convohub.runtime.service import available_services, load_service_factory

from .conftest import REPO_DIR, free_port

EXAMPLE = REPO_DIR / "convohub.example.yaml"
SERVICES = ("crm", "feedback", "ingest", "router", "sla")


def test_every_service_is_installed() -> None:
    assert set(available_services()) == set(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_accepts_the_example(name: str) -> None:
    config = load_config(EXAMPLE, dict(os.environ))
    service = load_service_factory(name)(config)
    assert service.name == name


@pytest.mark.parametrize(
    ("section", "wrong", "path"),
    [
        ("routing", "{strategy: fastest}", "tenants[0].routing.strategy"),
        ("sla", "{policies: [{id: p, first_response: soon}]}", "tenants[0].sla.policies[0]"),
        ("crm", "{attributes: {city: colour}}", "tenants[0].crm.attributes.city"),
        ("feedback", "{kinds: [stars]}", "tenants[0].feedback.kinds[0]"),
    ],
)
def test_a_wrong_service_section_names_its_key_path(section: str, wrong: str, path: str) -> None:
    config = parse_config(f"tenants:\n  - id: acme\n    name: Acme\n    {section}: {wrong}\n", {})
    owner = {"routing": "router", "sla": "sla", "crm": "crm", "feedback": "feedback"}[section]
    with pytest.raises(ConfigError) as caught:
        load_service_factory(owner)(config)
    assert any(problem.path.startswith(path) for problem in caught.value.problems), (
        caught.value.problems
    )


def test_the_hub_refuses_to_start_on_a_wrong_service_section(tmp_path: Path) -> None:
    config = tmp_path / "convohub.yaml"
    config.write_text("tenants:\n  - id: acme\n    name: Acme\n    routing: {strategy: fastest}\n")
    command = [REPO_DIR / "convohub", "up", "--config", config, "--data-dir", tmp_path / "data"]
    result = subprocess.run(
        [*command, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "tenants[0].routing.strategy" in result.stderr


def test_no_two_services_serve_the_same_method_and_path() -> None:
    config = load_config(EXAMPLE, dict(os.environ))
    owners: dict[tuple[str, str], list[str]] = {}
    for name in SERVICES:
        routes = load_service_factory(name)(config).routes()
        assert routes is not None, name
        for route in routes.routes:
            for method in getattr(route, "methods", None) or ():
                owners.setdefault((method, route.path), []).append(name)
    shared = {route: names for route, names in owners.items() if len(names) > 1}
    assert shared == {}, "one owner per endpoint, or `up` and the Ingress disagree"
