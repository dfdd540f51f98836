"""Export `convohub.conversation-facts.v1` to JSON lines for BI (see docs/bi.md).

    uv run python services/feedback/scripts/export_facts.py facts.jsonl

Reads the log of the mode the CONVOHUB_* settings name (embedded by default, the log under
./.convohub/; CONVOHUB_MODE=distributed with CONVOHUB_KAFKA_BOOTSTRAP_SERVERS for Kafka).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from convohub.feedback.adapters.facts_export import export_facts
from convohub.runtime.hosting import open_bus
from convohub.runtime.settings import RuntimeSettings


async def main(path: Path) -> None:
    bus = open_bus(RuntimeSettings())
    await bus.start()
    try:
        count = await export_facts(bus, path)
    finally:
        await bus.stop()
    print(f"wrote {count} conversation fact rows to {path}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "facts.jsonl")))
