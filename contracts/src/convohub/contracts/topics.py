"""The topic registry: every Kafka topic ConvoHub writes, its key, partitions and retention.

Which event types a topic carries is declared on each event (see `payload.event`) and
listed by `convohub.contracts.catalogue.event_types_on`.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class Topic:
    """One topic of the log.

    `key` names the payload field whose value becomes the record key (the CloudEvents
    `partitionkey`), so ordering holds per conversation, agent or customer.
    `retention_ms` of None keeps records forever: topics that projections are rebuilt
    from are the system of record and must not expire.
    """

    name: str
    key: str
    description: str
    producers: tuple[str, ...]
    partitions: int = 12
    retention_ms: int | None = None
    compacted: bool = False

    def kafka_config(self) -> dict[str, str]:
        """The topic-level Kafka configuration this registry entry asks for."""
        config = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(self.retention_ms if self.retention_ms is not None else -1),
        }
        return config


CONVERSATION = Topic(
    name="convohub.conversation.v1",
    key="conversation_id",
    description=(
        "Everything that happens in a conversation: messages in and out, delivery states, "
        "channel switches, tags, notes, resolution, and voice calls."
    ),
    producers=("ingest",),
)
AGENT = Topic(
    name="convohub.agent.v1",
    key="agent_id",
    description="Agents: registration, skills, tier, capacity and presence.",
    producers=("ingest", "router"),
    partitions=6,
)
ROUTING = Topic(
    name="convohub.routing.v1",
    key="conversation_id",
    description="Routing decisions: classification, queueing, offers, assignment, transfer.",
    producers=("router",),
)
SLA = Topic(
    name="convohub.sla.v1",
    key="conversation_id",
    description="SLA clocks, warnings, breaches, escalations and queue service levels.",
    producers=("sla",),
)
CUSTOMER = Topic(
    name="convohub.customer.v1",
    key="customer_id",
    description="Customers: identities, profile changes, merges, segments and erasure.",
    producers=("crm",),
)
CUSTOMER_PROFILE = Topic(
    name="convohub.customer-profile.v1",
    key="customer_id",
    description=(
        "The latest profile of every customer, one snapshot record per customer id (compacted): "
        "read it from the start to know every customer without replaying their history. An "
        "erased customer's last record is a tombstone (a null value; before it, a minimal "
        "snapshot with status `erased`): compaction then deletes the key."
    ),
    producers=("crm",),
    compacted=True,
)
FEEDBACK = Topic(
    name="convohub.feedback.v1",
    key="conversation_id",
    description="Surveys, answers, sentiment analysis and closed-loop follow-ups.",
    producers=("feedback",),
)
CONVERSATION_FACTS = Topic(
    name="convohub.conversation-facts.v1",
    key="conversation_id",
    description="One fact record per closed conversation, the row BI teams load.",
    producers=("feedback",),
)
DEAD_LETTER = Topic(
    name="convohub.dlq.v1",
    key="partition_key",
    description="Events a handler could not process after bounded retries, with the error.",
    producers=("ingest", "router", "sla", "crm", "feedback"),
    partitions=3,
    retention_ms=30 * DAY_MS,
)

TOPICS: tuple[Topic, ...] = (
    CONVERSATION,
    AGENT,
    ROUTING,
    SLA,
    CUSTOMER,
    CUSTOMER_PROFILE,
    FEEDBACK,
    CONVERSATION_FACTS,
    DEAD_LETTER,
)


def topic_named(name: str) -> Topic:
    """The registry entry for a topic name; KeyError names the unknown topic."""
    for topic in TOPICS:
        if topic.name == name:
            return topic
    raise KeyError(f"unknown topic {name!r}")
