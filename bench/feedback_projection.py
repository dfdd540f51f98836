"""Feedback projection throughput on the embedded log, against a raw baseline projection.

Usage: uv run python bench/feedback_projection.py [--conversations 200] [--messages 10]

Publishes `--conversations` conversations of `--messages` customer messages each (plus the
start and the resolution) to an embedded log in a temporary folder, then measures:

1. baseline: a projection that inserts one row per event (the runtime's floor: decode,
   validate, bookkeeping, one SQLite transaction per batch);
2. feedback: the real `feedback.conversations` projection (fold each conversation's state,
   sentiment of every message, `feedback.analysed` to the outbox, survey scheduling).

Both run the same `ProjectionRunner` over the same records; the figure that matters is the
ratio feedback / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from projection_support import BASELINE_METADATA, InsertOneRowPerEvent, event, run

from convohub.contracts.topics import CONVERSATION
from convohub.feedback.bootstrap import create_service
from convohub.runtime.bus.embedded import EmbeddedBus
from convohub.runtime.config import parse_config

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TEXTS = ["我的快递还没收到，太慢了", "the agent was very helpful, thanks", "where is my refund?"]


def workload(conversations: int, messages: int) -> list[Any]:
    events = []
    for c in range(conversations):
        cid = f"conv-{c}"
        events.append(event("conversation.started", conversation_id=cid, started_at=T0.isoformat()))
        for m in range(messages):
            events.append(
                event(
                    "conversation.message_received",
                    conversation_id=cid,
                    message_id=f"{cid}-{m}",
                    provider_message_id=f"p-{cid}-{m}",
                    content={"text": TEXTS[m % len(TEXTS)]},
                    received_at=(T0 + timedelta(seconds=m)).isoformat(),
                )
            )
        resolved_at = (T0 + timedelta(minutes=30)).isoformat()
        events.append(event("conversation.resolved", conversation_id=cid, resolved_at=resolved_at))
    return events


async def main(conversations: int, messages: int) -> None:
    config = parse_config("tenants: [{id: acme, name: Acme}]", {})
    service: Any = create_service(config)
    (feedback,) = service.projections()
    with tempfile.TemporaryDirectory() as folder:
        bus = EmbeddedBus(Path(folder) / "log.sqlite3")
        await bus.start()
        events = workload(conversations, messages)
        await bus.publish_events(events)
        baseline = await run(
            bus,
            Path(folder),
            InsertOneRowPerEvent([CONVERSATION.name]),
            BASELINE_METADATA,
            len(events),
        )
        measured = await run(bus, Path(folder), feedback, feedback.metadata, len(events))
        await bus.stop()
    n = len(events)
    print(f"events: {n} ({conversations} conversations x {messages} messages + start, resolve)")
    print(f"baseline (one row per event): {n / baseline:,.0f} events/s")
    print(f"feedback.conversations:       {n / measured:,.0f} events/s")
    print(f"ratio feedback / baseline:    {baseline / measured:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.conversations, arguments.messages))
