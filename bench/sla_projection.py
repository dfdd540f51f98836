"""SLA clock projection throughput on the embedded log, against a raw baseline projection.

Usage: uv run python bench/sla_projection.py [--conversations 300] [--messages 4]

Publishes `--conversations` conversations (started, classified, assigned, then
`--messages` rounds of a customer message and an agent reply, then resolved) under the
example config's SLA policies to an embedded log in a temporary folder, then measures:

1. baseline: a projection that inserts one row per event (the runtime's floor: decode,
   validate, bookkeeping, one SQLite transaction per batch);
2. sla: the real `sla.clocks` projection (fold each conversation's clocks, clock events to
   the outbox, timer rows replaced, queue service-level inputs).

Both run the same `ProjectionRunner` over the same records; the figure that matters is the
ratio sla / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from projection_support import BASELINE_METADATA, InsertOneRowPerEvent, event, run

from convohub.contracts.topics import CONVERSATION, ROUTING
from convohub.runtime.bus.embedded import EmbeddedBus
from convohub.runtime.config import load_config
from convohub.sla.bootstrap import create_service

EXAMPLE = Path(__file__).resolve().parents[1] / "src/convohub/cli/data/convohub.example.yaml"
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def workload(tenant: str, conversations: int, messages: int) -> list[Any]:
    events = []
    channels = ["web_chat", "email", "sms", "whatsapp"]
    for c in range(conversations):
        cid = f"conv-{c}"
        channel = channels[c % len(channels)]
        common = {"conversation_id": cid, "channel": channel}
        events.append(event("conversation.started", tenant, **common, started_at=at(c)))
        events.append(
            event(
                "routing.classified",
                tenant,
                conversation_id=cid,
                skill_group="after-sales",
                priority=f"P{1 + c % 4}",
                vip=False,
                classified_at=at(c + 1),
            )
        )
        events.append(event("routing.assigned", tenant, conversation_id=cid, assigned_at=at(c + 2)))
        for m in range(messages):
            t = c + 10 + 60 * m
            events.append(
                event(
                    "conversation.message_received",
                    tenant,
                    **common,
                    message_id=f"{cid}-in-{m}",
                    provider_message_id=f"p-{cid}-{m}",
                    received_at=at(t),
                )
            )
            events.append(
                event(
                    "conversation.message_sent",
                    tenant,
                    **common,
                    message_id=f"{cid}-out-{m}",
                    sent_at=at(t + 20),
                )
            )
        events.append(
            event("conversation.resolved", tenant, conversation_id=cid, resolved_at=at(c + 3600))
        )
    return events


async def main(conversations: int, messages: int) -> None:
    config = load_config(EXAMPLE, {})
    tenant = config.tenants[0].id
    service: Any = create_service(config)
    clocks = next(p for p in service.projections() if p.name == "sla.clocks")
    with tempfile.TemporaryDirectory() as folder:
        bus = EmbeddedBus(Path(folder) / "log.sqlite3")
        await bus.start()
        events = workload(tenant, conversations, messages)
        await bus.publish_events(events)
        baseline = await run(
            bus,
            Path(folder),
            InsertOneRowPerEvent([CONVERSATION.name, ROUTING.name]),
            BASELINE_METADATA,
            len(events),
        )
        measured = await run(bus, Path(folder), clocks, service.metadata, len(events))
        await bus.stop()
    n = len(events)
    print(f"events: {n} ({conversations} conversations x {messages} exchanges + 4 others)")
    print(f"baseline (one row per event): {n / baseline:,.0f} events/s")
    print(f"sla.clocks:                   {n / measured:,.0f} events/s")
    print(f"ratio sla / baseline:         {baseline / measured:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--messages", type=int, default=4)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.conversations, arguments.messages))
