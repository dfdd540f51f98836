"""An SLA service process for the hard-kill test: serves the sla service on the given log
and database until it is killed. Run from the repository root:
python -m services.sla.tests.sla_child --embedded-log LOG --prefix P --database URL --config F"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from convohub.runtime.bus.embedded import EmbeddedBus
from convohub.runtime.bus.kafka import KafkaBus
from convohub.runtime.bus.namespaced import NamespacedBus
from convohub.runtime.config import load_config
from convohub.runtime.service import ServiceHost
from convohub.runtime.store import ProjectionStore, create_engine, migrate_runtime
from convohub.sla.bootstrap import create_service


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--embedded-log")
    parser.add_argument("--kafka")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    if args.embedded_log:
        inner = EmbeddedBus(Path(args.embedded_log), member_timeout=2.0, heartbeat_interval=0.5)
    else:
        inner = KafkaBus(args.kafka, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    bus = NamespacedBus(inner, args.prefix)
    await bus.start()
    config = load_config(Path(args.config), {})

    async def open_store(_: str) -> ProjectionStore:
        store = ProjectionStore(create_engine(args.database))
        await migrate_runtime(store.engine)
        return store

    service = create_service(config, timer_batch_size=1, timer_poll_interval=0.05)
    host = ServiceHost([service], config=config, bus=bus, open_store=open_store)
    await host.start()
    print("running", flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main())
