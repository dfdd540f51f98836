"""`apply_topics` / `diff_topics` against a real Apache Kafka.

The tests pass their own uniquely named `Topic`s, never the real registry, so runs on a
shared broker do not collide; every topic is deleted afterwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from convohub.contracts import Topic
from convohub.contracts.topics import DAY_MS
from convohub.runtime import topics_admin
from convohub.runtime.topics_admin import apply_topics, diff_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(kafka_bootstrap_servers: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers)
    yield client
    client.close()


@pytest.fixture
def new_topic(
    admin: KafkaAdminClient, unique_name: Callable[..., str]
) -> Iterator[Callable[..., Topic]]:
    """A registry entry under a fresh name; whatever gets created is deleted afterwards."""
    names: list[str] = []

    def make(**fields: object) -> Topic:
        topic = Topic(name=unique_name("admin"), key="id", description="test", producers=("t",))
        names.append(topic.name)
        return dataclasses.replace(topic, **fields)  # type: ignore[arg-type]

    yield make
    admin.delete_topics(names, raise_errors=False)


def cluster_partitions(admin: KafkaAdminClient, name: str) -> int:
    (described,) = admin.describe_topics([name])
    assert described["error_code"] == 0, f"{name} does not exist"
    return len(described["partitions"])


def cluster_config(admin: KafkaAdminClient, name: str) -> dict[str, str]:
    keys = ["cleanup.policy", "retention.ms"]
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, keys)], config_filter="all"
    )
    return {key: entry["value"] for key, entry in described["topic"][name].items()}


def test_apply_creates_missing_topics_with_partitions_retention_and_compaction(
    kafka_bootstrap_servers: str, admin: KafkaAdminClient, new_topic: Callable[..., Topic]
) -> None:
    events = new_topic(partitions=5)
    letters = new_topic(partitions=2, retention_ms=30 * DAY_MS)
    profiles = new_topic(partitions=1, compacted=True)

    report = apply_topics(kafka_bootstrap_servers, [events, letters, profiles])

    assert report.created == [events.name, letters.name, profiles.name]
    assert not report.drifted
    assert cluster_partitions(admin, events.name) == 5
    assert cluster_partitions(admin, letters.name) == 2
    assert cluster_config(admin, events.name) == {"cleanup.policy": "delete", "retention.ms": "-1"}
    assert cluster_config(admin, letters.name)["retention.ms"] == str(30 * DAY_MS)
    assert cluster_config(admin, profiles.name)["cleanup.policy"] == "compact"
    assert f"{events.name}: created" in str(report)


def test_a_second_apply_has_nothing_to_do(
    kafka_bootstrap_servers: str, new_topic: Callable[..., Topic]
) -> None:
    topics = [new_topic(partitions=3), new_topic(compacted=True, partitions=1)]
    assert not apply_topics(kafka_bootstrap_servers, topics).nothing_to_do

    again = apply_topics(kafka_bootstrap_servers, topics)

    assert again.nothing_to_do
    assert again.created == again.altered == again.drifted == []
    assert again.lines() == [f"{t.name}: ok" for t in topics] + ["nothing to do"]


def test_a_changed_retention_is_altered_and_a_dry_run_changes_nothing(
    kafka_bootstrap_servers: str, admin: KafkaAdminClient, new_topic: Callable[..., Topic]
) -> None:
    topic = new_topic(partitions=2, retention_ms=7 * DAY_MS)
    apply_topics(kafka_bootstrap_servers, [topic])
    shorter = dataclasses.replace(topic, retention_ms=DAY_MS)

    planned = diff_topics(kafka_bootstrap_servers, [shorter])
    assert planned.dry_run
    assert planned[topic.name].configs_altered == {"retention.ms": (str(7 * DAY_MS), str(DAY_MS))}
    assert cluster_config(admin, topic.name)["retention.ms"] == str(7 * DAY_MS)

    applied = apply_topics(kafka_bootstrap_servers, [shorter])

    assert applied.altered == [topic.name]
    assert applied[topic.name].configs_altered == planned[topic.name].configs_altered
    assert cluster_config(admin, topic.name)["retention.ms"] == str(DAY_MS)
    assert apply_topics(kafka_bootstrap_servers, [shorter]).nothing_to_do


def test_more_partitions_in_the_registry_raise_the_count(
    kafka_bootstrap_servers: str, admin: KafkaAdminClient, new_topic: Callable[..., Topic]
) -> None:
    topic = new_topic(partitions=2)
    apply_topics(kafka_bootstrap_servers, [topic])

    report = apply_topics(kafka_bootstrap_servers, [dataclasses.replace(topic, partitions=6)])

    assert report[topic.name].partitions_raised == (2, 6)
    assert report.altered == [topic.name]
    assert cluster_partitions(admin, topic.name) == 6


def test_fewer_partitions_in_the_registry_are_reported_as_drift_not_applied(
    kafka_bootstrap_servers: str, admin: KafkaAdminClient, new_topic: Callable[..., Topic]
) -> None:
    topic = new_topic(partitions=4)
    apply_topics(kafka_bootstrap_servers, [topic])

    report = apply_topics(kafka_bootstrap_servers, [dataclasses.replace(topic, partitions=2)])

    assert report.drifted == [topic.name]
    assert report.nothing_to_do
    assert "has 4 partitions, the registry asks for 2" in report[topic.name].drift[0]
    assert cluster_partitions(admin, topic.name) == 4
    assert any("DRIFT" in line for line in report.lines())


async def test_apply_can_be_called_from_async_code(
    kafka_bootstrap_servers: str, admin: KafkaAdminClient, new_topic: Callable[..., Topic]
) -> None:
    topic = new_topic(partitions=2)

    report = apply_topics(kafka_bootstrap_servers, [topic])

    assert report.created == [topic.name]
    assert cluster_partitions(admin, topic.name) == 2


def test_a_topic_created_meanwhile_is_reconciled_not_an_error(
    kafka_bootstrap_servers: str,
    admin: KafkaAdminClient,
    new_topic: Callable[..., Topic],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = new_topic(partitions=3, retention_ms=DAY_MS)
    plan = topics_admin._plan

    def plan_then_race(*args: object, **kwargs: object) -> list[topics_admin.TopicChange]:
        planned = plan(*args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(topics_admin, "_plan", plan)
        # A producer's auto-creation wins the race, with the broker's defaults.
        admin.create_topics({topic.name: {"num_partitions": 1, "replication_factor": 1}})
        return planned

    monkeypatch.setattr(topics_admin, "_plan", plan_then_race)

    report = apply_topics(kafka_bootstrap_servers, [topic])

    assert report[topic.name].partitions_raised == (1, 3)
    assert report[topic.name].configs_altered["retention.ms"][1] == str(DAY_MS)
    assert cluster_partitions(admin, topic.name) == 3
    assert cluster_config(admin, topic.name)["retention.ms"] == str(DAY_MS)
