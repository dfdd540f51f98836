"""docker-compose.yml: valid against the Compose Specification, and the same hub as the
workspace (every service, built from its own image target)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from .conftest import REPO, workspace_services

INFRASTRUCTURE = {"kafka", "postgres", "setup", "gateway"}
OBSERVABILITY = {"otel-collector", "jaeger", "prometheus"}
PROMETHEUS = "deploy/observability/prometheus/prometheus.yml"
ALERTS = "deploy/observability/prometheus/alerts.yml"
DASHBOARD = "deploy/observability/grafana/convohub-dashboard.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_file_validates_against_the_compose_specification(compose: dict) -> None:
    schema = json.loads((REPO / "tests/deploy/schemas/compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_the_schema_rejects_what_compose_rejects() -> None:
    schema = json.loads((REPO / "tests/deploy/schemas/compose-spec.json").read_text())
    broken = {"services": {"ingest": {"image": "x", "depends_on": {"kafka": {"when": "up"}}}}}
    assert not jsonschema.Draft201909Validator(schema).is_valid(broken)


def test_compose_runs_every_workspace_service_and_nothing_unknown(compose: dict) -> None:
    services = set(compose["services"])
    assert services - INFRASTRUCTURE - OBSERVABILITY == set(workspace_services())


@pytest.mark.parametrize("name", sorted(workspace_services()))
def test_each_service_is_built_from_its_own_image_target(compose: dict, name: str) -> None:
    service = compose["services"][name]
    assert service["build"]["target"] == "service"
    assert service["build"]["args"]["SERVICE"] == name
    assert service["command"] == ["convohub", "serve", name]
    environment = service["environment"]
    assert environment["CONVOHUB_MODE"] == "distributed"
    assert environment["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert environment["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert environment["CONVOHUB_SERVICE_NAME"] == f"convohub-{name}"
    # starts only once topics and tables exist
    assert service["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert service["read_only"] is True
    assert "ALL" in service["cap_drop"]


def test_setup_job_applies_topics_and_migrations_after_kafka_and_postgres(compose: dict) -> None:
    setup = compose["services"]["setup"]
    assert setup["build"]["target"] == "cli"
    script = " ".join(setup["command"])
    assert "convohub topics apply" in script
    assert "convohub migrate" in script
    assert setup["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    assert setup["restart"] == "no"


def test_kafka_is_the_official_image_in_kraft_mode(compose: dict) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    environment = kafka["environment"]
    assert environment["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in environment["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert environment["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_observability_profile_is_optional_and_its_configs_exist(compose: dict) -> None:
    for name in OBSERVABILITY:
        assert compose["services"][name]["profiles"] == ["observability"]
    for name in INFRASTRUCTURE | set(workspace_services()):
        assert "profiles" not in compose["services"][name], name
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).is_file(), source
    prometheus = yaml.safe_load(
        (REPO / "deploy/observability/prometheus/prometheus.yml").read_text()
    )
    targets = {
        target.split(":")[0]
        for job in prometheus["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert set(workspace_services()) <= targets
    collector = yaml.safe_load((REPO / "deploy/observability/otel-collector.yaml").read_text())
    assert "otlp/jaeger" in collector["service"]["pipelines"]["traces"]["exporters"]


def test_gateway_proxies_to_compose_services_only(compose: dict) -> None:
    conf = (REPO / "deploy/compose/gateway.conf").read_text()
    upstreams = {
        line.split("http://")[1].split(":")[0]
        for line in conf.splitlines()
        if "set $upstream" in line
    }
    assert upstreams == set(workspace_services())
    assert upstreams <= set(compose["services"])


def test_compose_prometheus_loads_the_alerting_rules(compose: dict) -> None:
    """The rules file Prometheus is told to load is the one mounted from the repo. (That
    every metric the rules and the Grafana dashboard query is one the hub exports is
    checked against a running hub's `/metrics` in tests/test_tracing_metrics.py.)"""
    prometheus = yaml.safe_load(
        (REPO / "deploy/observability/prometheus/prometheus.yml").read_text()
    )
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["prometheus"]["volumes"])
    for rule_file in prometheus["rule_files"]:
        assert mounts[f"./{ALERTS}"] == rule_file
    rules = yaml.safe_load((REPO / ALERTS).read_text())
    assert all(group["rules"] for group in rules["groups"])
    dashboard = json.loads((REPO / DASHBOARD).read_text())
    assert dashboard["panels"]
