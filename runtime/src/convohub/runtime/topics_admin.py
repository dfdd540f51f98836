"""Provision the topic registry on a Kafka cluster: create, grow, reconfigure, report drift.

`apply_topics(bootstrap_servers)` makes the cluster match the registry
(`convohub.contracts.topics.TOPICS`) as far as Kafka allows, and is idempotent: a second run
has nothing to do. Per topic it

- creates a missing topic with the registry's partitions and `kafka_config()`;
- raises the partition count where the registry asks for more;
- sets every registry config whose value differs (incremental alter configs, so settings
  the registry does not name stay as they are);
- reports as drift what it must not change: fewer partitions in the registry than on the
  cluster (Kafka cannot remove partitions, and keys would move) and a replication factor
  other than the one asked for.

`diff_topics` computes the same report without changing anything (`--dry-run`). Both use
kafka-python's `KafkaAdminClient` and block; call them from a thread in async code that
must stay responsive (`asyncio.to_thread`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import kafka.errors as kafka_errors
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from convohub.contracts import TOPICS, Topic

# Kafka answers list-valued configs such as cleanup.policy as "compact,delete".
_LIST_CONFIGS = frozenset({"cleanup.policy"})


@dataclass(frozen=True)
class TopicChange:
    """What `apply_topics` did (or, in a dry run, would do) to one registry topic."""

    name: str
    created: bool = False
    partitions_raised: tuple[int, int] | None = None
    """(partitions on the cluster, partitions after) when the count was raised."""
    configs_altered: Mapping[str, tuple[str | None, str]] = field(default_factory=dict)
    """config name -> (value on the cluster, value set) for every differing config."""
    drift: tuple[str, ...] = ()
    """Differences apply leaves alone, each as one sentence."""

    @property
    def changed(self) -> bool:
        return self.created or self.partitions_raised is not None or bool(self.configs_altered)

    def lines(self, *, dry_run: bool = False) -> list[str]:
        """Human-readable lines, one per change or drift; `ok` alone when in sync."""
        create, raise_, set_ = (
            ("would create", "would raise", "would set")
            if dry_run
            else ("created", "raised", "set")
        )
        lines: list[str] = []
        if self.created:
            lines.append(f"{self.name}: {create}")
        if self.partitions_raised is not None:
            before, after = self.partitions_raised
            lines.append(f"{self.name}: {raise_} partitions {before} -> {after}")
        for name, (before, after) in sorted(self.configs_altered.items()):
            lines.append(f"{self.name}: {set_} {name} {before} -> {after}")
        lines.extend(f"{self.name}: DRIFT {sentence}" for sentence in self.drift)
        return lines or [f"{self.name}: ok"]


@dataclass(frozen=True)
class TopicsReport:
    """The outcome of one `apply_topics` or `diff_topics` run, one entry per registry topic."""

    topics: tuple[TopicChange, ...]
    dry_run: bool = False

    def __iter__(self) -> Iterator[TopicChange]:
        return iter(self.topics)

    def __getitem__(self, name: str) -> TopicChange:
        for change in self.topics:
            if change.name == name:
                return change
        raise KeyError(name)

    @property
    def created(self) -> list[str]:
        return [change.name for change in self.topics if change.created]

    @property
    def altered(self) -> list[str]:
        """Existing topics whose partitions or configs were (or would be) changed."""
        return [
            change.name
            for change in self.topics
            if not change.created and (change.partitions_raised or change.configs_altered)
        ]

    @property
    def drifted(self) -> list[str]:
        return [change.name for change in self.topics if change.drift]

    @property
    def nothing_to_do(self) -> bool:
        return not any(change.changed for change in self.topics)

    def lines(self) -> list[str]:
        """One line per change or drift per topic, then a summary line."""
        lines = [line for change in self.topics for line in change.lines(dry_run=self.dry_run)]
        created, altered = len(self.created), len(self.altered)
        if self.nothing_to_do:
            summary = "nothing to do"
        elif self.dry_run:
            summary = f"would create {created} and alter {altered} topic(s)"
        else:
            summary = f"created {created} and altered {altered} topic(s)"
        if self.drifted:
            summary += f"; drift on {len(self.drifted)} topic(s)"
        return [*lines, summary]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def diff_topics(
    bootstrap_servers: str,
    topics: Iterable[Topic] = TOPICS,
    *,
    replication_factor: int = 1,
    client_id: str = "convohub-topics",
) -> TopicsReport:
    """What `apply_topics` would do, without changing the cluster."""
    with _admin(bootstrap_servers, client_id) as admin:
        return TopicsReport(tuple(_plan(admin, list(topics), replication_factor)), dry_run=True)


def apply_topics(
    bootstrap_servers: str,
    topics: Iterable[Topic] = TOPICS,
    *,
    replication_factor: int = 1,
    client_id: str = "convohub-topics",
) -> TopicsReport:
    """Create, grow and reconfigure the registry's topics; report what changed and drift.

    Raises when the cluster refuses a change (the report of the changes before it is lost:
    run `diff_topics` to see where the cluster stands).
    """
    registry = list(topics)
    by_name = {topic.name: topic for topic in registry}
    with _admin(bootstrap_servers, client_id) as admin:
        plan = _plan(admin, registry, replication_factor)
        raced = _create(admin, [c.name for c in plan if c.created], by_name, replication_factor)
        if raced:
            # Created meanwhile by someone else (a producer, with auto-creation): reconcile.
            replanned = {
                change.name: change
                for change in _plan(admin, [by_name[n] for n in raced], replication_factor)
            }
            plan = [replanned.get(change.name, change) for change in plan]
        to_grow = {
            change.name: change.partitions_raised[1]
            for change in plan
            if change.partitions_raised is not None
        }
        if to_grow:
            admin.create_partitions(to_grow)
        to_alter = [
            ConfigResource(
                ConfigResourceType.TOPIC,
                change.name,
                {name: after for name, (_, after) in change.configs_altered.items()},
            )
            for change in plan
            if change.configs_altered and not change.created
        ]
        if to_alter:
            outcome = admin.alter_configs(to_alter, incremental=True)
            failures = {
                name: result for name, result in outcome.get("topic", {}).items() if result != "OK"
            }
            if failures:
                raise RuntimeError(f"Kafka refused topic config changes: {failures}")
        return TopicsReport(tuple(plan), dry_run=False)


def _create(
    admin: KafkaAdminClient,
    names: Sequence[str],
    registry: Mapping[str, Topic],
    replication_factor: int,
) -> list[str]:
    """Create topics and wait until each has a leader; the names that already existed."""
    if not names:
        return []
    response = admin.create_topics(
        {
            name: {
                "num_partitions": registry[name].partitions,
                "replication_factor": replication_factor,
                "configs": registry[name].kafka_config(),
            }
            for name in names
        },
        raise_errors=False,
    )
    already_there: list[str] = []
    refused: dict[str, str] = {}
    for result in response["topics"]:
        error = kafka_errors.for_code(result["error_code"])
        if error is kafka_errors.TopicAlreadyExistsError:
            already_there.append(result["name"])
        elif error is not kafka_errors.NoError:
            refused[result["name"]] = result.get("error_message") or error.__name__
    if refused:
        raise RuntimeError(f"Kafka refused to create topics: {refused}")
    admin.wait_for_topics([name for name in names if name not in already_there])
    return already_there


@contextmanager
def _admin(bootstrap_servers: str, client_id: str) -> Iterator[KafkaAdminClient]:
    """A `KafkaAdminClient` for the length of a `with` block."""
    client = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id=client_id)
    try:
        yield client
    finally:
        client.close()


def _plan(
    admin: KafkaAdminClient, registry: Sequence[Topic], replication_factor: int
) -> list[TopicChange]:
    names = [topic.name for topic in registry]
    if len(set(names)) != len(names):
        raise ValueError("the topic list names a topic twice")
    if not registry:
        return []
    described = {entry["name"]: entry for entry in admin.describe_topics(names)}
    existing = [name for name in names if described[name]["error_code"] == 0]
    current_configs = _current_configs(admin, existing, registry)
    plan: list[TopicChange] = []
    for topic in registry:
        entry = described[topic.name]
        if entry["error_code"] != 0:
            plan.append(TopicChange(topic.name, created=True))
            continue
        partitions = entry["partitions"]
        drift: list[str] = []
        raised: tuple[int, int] | None = None
        if topic.partitions > len(partitions):
            raised = (len(partitions), topic.partitions)
        elif topic.partitions < len(partitions):
            drift.append(
                f"has {len(partitions)} partitions, the registry asks for {topic.partitions}"
                " (Kafka cannot remove partitions)"
            )
        replicas = {len(p["replica_nodes"]) for p in partitions}
        if replicas and replicas != {replication_factor}:
            drift.append(
                f"replication factor {'/'.join(map(str, sorted(replicas)))},"
                f" asked for {replication_factor} (reassign partitions to change it)"
            )
        altered = {
            name: (current_configs[topic.name].get(name), wanted)
            for name, wanted in topic.kafka_config().items()
            if not _same_config(name, current_configs[topic.name].get(name), wanted)
        }
        plan.append(
            TopicChange(
                topic.name, partitions_raised=raised, configs_altered=altered, drift=tuple(drift)
            )
        )
    return plan


def _current_configs(
    admin: KafkaAdminClient, existing: Sequence[str], registry: Sequence[Topic]
) -> dict[str, dict[str, str | None]]:
    """The cluster's effective value of every config the registry sets, per existing topic."""
    if not existing:
        return {}
    wanted = {topic.name: list(topic.kafka_config()) for topic in registry}
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, wanted[name]) for name in existing],
        config_filter="all",
    )
    topics = described.get("topic", {})
    return {
        name: {key: entry.get("value") for key, entry in topics.get(name, {}).items()}
        for name in existing
    }


def _same_config(name: str, current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    if name in _LIST_CONFIGS:
        return _as_set(current) == _as_set(wanted)
    return current == wanted


def _as_set(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())
