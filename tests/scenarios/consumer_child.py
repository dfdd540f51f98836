"""A consumer process for the SIGKILL scenario: runs `MessageLedger` and its outbox relay
until it is killed. Run from the repository root: python -m tests.scenarios.consumer_child"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from convohub.runtime.bus.embedded import EmbeddedBus
from convohub.runtime.bus.kafka import KafkaBus
from convohub.runtime.bus.namespaced import NamespacedBus
from convohub.runtime.consumer import ProjectionRunner, RetryPolicy
from convohub.runtime.store import OutboxRelay, ProjectionStore, create_engine
from tests.scenarios.projections import MessageLedger


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--embedded-log")
    parser.add_argument("--kafka")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()

    # Short membership timeouts: each kill leaves a dead member whose partitions move
    # only when it times out, and this test kills ten of them.
    if args.embedded_log:
        inner = EmbeddedBus(Path(args.embedded_log), member_timeout=2.0, heartbeat_interval=0.5)
    else:
        inner = KafkaBus(args.kafka, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    bus = NamespacedBus(inner, args.prefix)
    await bus.start()
    store = ProjectionStore(create_engine(args.database))
    projection = MessageLedger()
    relay = OutboxRelay(store, bus)
    store.on_commit(relay.wake)
    runner = ProjectionRunner(
        bus, store, projection, max_batch=args.batch, retry=RetryPolicy(attempts=2)
    )
    relay_task = asyncio.create_task(relay.run())
    await runner.start()
    print("consuming", flush=True)
    await relay_task  # runs until the process is killed


if __name__ == "__main__":
    asyncio.run(main())
