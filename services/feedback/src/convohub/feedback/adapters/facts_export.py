"""Export the conversation facts topic as JSON lines, one row per conversation (the latest
record of each conversation wins: a later record supersedes an earlier one).

Works in both modes through the runtime's bus port (`bus.partitions`, `bus.read`), so the
same export reads the embedded log under `./.convohub/` or Kafka. See docs/bi.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from convohub.contracts import from_kafka_record
from convohub.contracts.topics import CONVERSATION_FACTS
from convohub.runtime.bus.port import EventBus


async def latest_facts(bus: EventBus) -> list[dict[str, Any]]:
    """Every conversation's latest fact record, flattened for a table (JSON-mode dicts)."""
    latest: dict[str, tuple[Any, dict[str, Any]]] = {}
    topic = CONVERSATION_FACTS.name
    for partition in range(await bus.partitions(topic)):
        offset = 0
        while True:
            records = await bus.read(topic, partition, offset)
            if not records:
                break
            for record in records:
                event = from_kafka_record(record.value, record.headers)
                row = {
                    "event_id": event.id,
                    "tenant_id": event.tenantid,
                    **event.data.model_dump(mode="json"),
                }
                row["sla_first_response_met"] = _sla(row, "first_response", "met")
                row["sla_resolution_met"] = _sla(row, "resolution", "met")
                row["sla_breaches"] = sum(1 for o in row["sla_outcomes"] if o["breached"])
                previous = latest.get(event.data.conversation_id)
                if previous is None or previous[0] <= event.time:
                    latest[event.data.conversation_id] = (event.time, row)
            offset = records[-1].offset + 1
    return [row for _, row in sorted(latest.values(), key=lambda item: item[1]["closed_at"])]


def _sla(row: dict[str, Any], metric: str, field: str) -> bool | None:
    for outcome in row["sla_outcomes"]:
        if outcome["metric"] == metric:
            return bool(outcome[field])
    return None


async def export_facts(bus: EventBus, path: Path) -> int:
    """Write the latest facts to `path` as JSON lines; returns the number of rows."""
    rows = await latest_facts(bus)
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)
