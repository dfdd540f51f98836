"""The generated deployment files are current, and the generators say what they should."""

from __future__ import annotations

import re

import pytest
import yaml
from fastapi import FastAPI
from typer.testing import CliRunner

from convohub.cli import deploy
from convohub.contracts.topics import TOPICS
from convohub.runtime.config import HubConfig
from convohub.runtime.service import load_service_factory

from .conftest import REPO, workspace_services


def test_every_generated_file_is_committed_as_generated() -> None:
    result = CliRunner().invoke(deploy.app, ["generate", "--check", "--root", str(REPO)])
    assert result.exit_code == 0, (
        f"{result.output}run `uv run convohub deploy generate` and commit the files"
    )


def test_committed_kafka_topics_match_the_registry() -> None:
    committed = list(yaml.safe_load_all((REPO / deploy.TOPICS_FILE).read_text()))
    assert [doc["spec"]["topicName"] for doc in committed] == [t.name for t in TOPICS]
    for doc, topic in zip(committed, TOPICS, strict=True):
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert doc["kind"] == "KafkaTopic"
        assert doc["metadata"]["name"] == topic.name
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == deploy.STRIMZI_CLUSTER
        assert doc["spec"]["partitions"] == topic.partitions
        config = doc["spec"]["config"]
        expected_retention = str(topic.retention_ms) if topic.retention_ms else "-1"
        assert config["retention.ms"] == expected_retention
        assert config["cleanup.policy"] == ("compact" if topic.compacted else "delete")


def test_kafka_topics_command_prints_the_registry() -> None:
    result = CliRunner().invoke(deploy.app, ["kafka-topics", "--replicas", "1"])
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.output))
    assert {doc["spec"]["topicName"] for doc in documents} == {t.name for t in TOPICS}
    assert {doc["spec"]["replicas"] for doc in documents} == {1}
    # one replica cannot satisfy two in-sync replicas: the command lowers it
    assert {doc["spec"]["config"]["min.insync.replicas"] for doc in documents} == {"1"}


def test_kafka_topic_names_are_valid_kubernetes_names() -> None:
    dns_subdomain = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    for topic in TOPICS:
        assert dns_subdomain.match(topic.name), topic.name
        assert len(topic.name) <= 253, topic.name


def test_the_deploy_module_knows_every_workspace_service() -> None:
    assert set(deploy.SERVICES) == set(workspace_services())


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/v1/webhooks/twilio/sms-main", "ingest"),
        ("/v1/webchat/web-main/messages", "ingest"),
        ("/v1/conversations", "ingest"),
        ("/v1/conversations/c-1/messages", "ingest"),
        ("/v1/conversations/c-1/routing", "router"),
        ("/v1/conversations/c-1/transfer", "router"),
        ("/v1/conversations/c-1/sla", "sla"),
        ("/v1/agents/a-1/presence", "router"),
        ("/v1/sla/at-risk", "sla"),
        ("/v1/customers/cu-1/timeline", "crm"),
        ("/v1/surveys/s-1", "feedback"),
        ("/v1/staffing", "feedback"),
        ("/v2/anything", None),
        ("/healthz", None),
    ],
)
def test_longest_pattern_decides_the_service(path: str, service: str | None) -> None:
    assert deploy.route_for(path) == service


def declared_paths() -> dict[str, set[str]]:
    """Every path of every service's API (from its OpenAPI document), and who declares it."""
    owners: dict[str, set[str]] = {}
    for name in deploy.SERVICES:
        service = load_service_factory(name)(HubConfig())
        router = service.routes()
        if router is None:
            continue
        app = FastAPI()
        app.include_router(router)
        for path in app.openapi()["paths"]:
            owners.setdefault(path, set()).add(name)
    return owners


def test_every_api_path_of_every_service_reaches_that_service() -> None:
    owners = declared_paths()
    assert owners, "no service declares any path"
    wrong = []
    for path, services in sorted(owners.items()):
        reached = deploy.route_for(path)
        if len(services) > 1 or reached not in services:  # one owner per path
            wrong.append(f"{path}: declared by {sorted(services)}, routed to {reached}")
    assert not wrong, "Ingress routing disagrees with the services' APIs:\n" + "\n".join(wrong)


def test_scaled_objects_cover_every_consumer_group_of_every_service() -> None:
    groups, problems = deploy.consumer_groups()
    assert not problems, problems
    committed = {
        doc["metadata"]["name"]: doc
        for doc in yaml.safe_load_all((REPO / deploy.SCALED_OBJECTS_FILE).read_text())
        if doc
    }
    registry = {topic.name for topic in TOPICS}
    for service, projections in groups.items():
        if not projections:
            continue
        scaled = committed[deploy.deployment_name(service)]
        lag = {
            (t["metadata"]["consumerGroup"], t["metadata"]["topic"])
            for t in scaled["spec"]["triggers"]
            if t["type"] == "kafka"
        }
        assert lag == {(group, topic) for group, topics in projections for topic in topics}
        for group, topic in lag:
            assert group.startswith(f"{service}."), group
            assert topic in registry, topic
        assert scaled["spec"]["maxReplicaCount"] <= min(
            t.partitions for t in TOPICS if (t.name in {topic for _, topic in lag})
        )
