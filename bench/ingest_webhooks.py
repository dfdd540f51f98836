"""Ingest webhooks end to end into Kafka, against the bus's raw publish rate.

Usage: uv run python bench/ingest_webhooks.py [--webhooks 2000] [--concurrency 64]
           [--latency-seconds 5]

One run, one Kafka broker (acks=all, idempotent producer) and one PostgreSQL:

1. raw bus publish: `KafkaBus.publish_events` of one `message_received` envelope per call,
   `--concurrency` calls in flight, until every record was acknowledged;
2. signed webhooks: Twilio SMS webhooks (X-Twilio-Signature computed as Twilio does), each
   a different message from one of 500 customers, posted to the ingest app in process
   (ASGI, no socket) with the same concurrency: signature check, form parse, dedupe claim
   in PostgreSQL, conversation placement, publish and broker ack, claim done;
3. latency: webhooks at a fixed rate of half the measured webhook rate for
   `--latency-seconds`, p50/p99 of the HTTP answer (which comes after the broker's ack).

Printed as ratios of the raw publish rate, so runs on different machines compare.
Kafka and PostgreSQL come from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, else `infra up`
(see bench/bus_throughput.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx

# httpx's ASGI transport tries `import sniffio` on every request; where it is not installed
# each attempt searches sys.path (about 0.5 ms of the client's CPU a request, which this
# in-process client would otherwise bill to ingest). A None entry fails the import at once.
sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))  # tests.scenarios.backends: namespaced topics, fresh DBs

from bus_throughput import infrastructure  # noqa: E402

from convohub.contracts import new_event  # noqa: E402
from convohub.contracts.events.common import Channel, ChannelIdentity, MessageContent  # noqa: E402
from convohub.contracts.events.conversation import MessageReceived  # noqa: E402
from convohub.ingest.adapters.signatures import twilio_signature  # noqa: E402
from convohub.ingest.bootstrap import create_service  # noqa: E402
from convohub.runtime.app import create_service_app  # noqa: E402
from convohub.runtime.config import parse_config  # noqa: E402
from convohub.runtime.service import ServiceHost  # noqa: E402
from tests.scenarios.backends import KafkaPostgresBackend  # noqa: E402

TOKEN = "bench-auth-token"
PATH = "/v1/webhooks/twilio/sms-bench"
BASE = "http://bench"
CUSTOMERS = 500
AIM_RATE, AIM_P99_MS = 1_000, 50.0
CONFIG = parse_config(
    f"""
tenants:
  - id: bench
    name: Bench
    channels:
      - id: sms-bench
        type: sms
        provider: twilio
        settings: {{rate_per_second: 1000000, rate_burst: 1000000}}
        secrets: {{auth_token: {TOKEN}}}
""",
    {},
)


def envelope(n: int) -> object:
    return new_event(
        MessageReceived(
            conversation_id=f"conv-bench-{n % CUSTOMERS}",
            message_id=f"msg-{uuid.uuid4()}",
            channel=Channel.SMS,
            channel_id="sms-bench",
            provider_message_id=f"SM{uuid.uuid4().hex}",
            customer=ChannelIdentity(
                channel=Channel.SMS, channel_id="sms-bench", address=f"+1415555{n % CUSTOMERS:04d}"
            ),
            content=MessageContent(text="Hello, my order has not arrived yet."),
            received_at=datetime.now(UTC),
        ),
        tenant_id="bench",
        source="bench",
    )


def webhook(run: str, n: int) -> dict[str, object]:
    form = {
        "MessageSid": f"SM{run}{n:012d}",
        "AccountSid": "AC" + "0" * 32,
        "From": f"+1415555{n % CUSTOMERS:04d}",
        "To": "+18005551212",
        "Body": "Hello, my order has not arrived yet.",
        "NumMedia": "0",
    }
    return {
        "content": urlencode(form).encode(),
        "headers": {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(TOKEN, BASE + PATH, form.items()),
        },
    }


async def in_parallel(count: int, concurrency: int, one: object) -> float:
    """Seconds to run `one(n)` for n < count with `concurrency` in flight."""
    queue = iter(range(count))

    async def worker() -> None:
        for n in queue:
            await one(n)  # type: ignore[operator]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def main(arguments: argparse.Namespace) -> None:
    infra = infrastructure()
    backend = KafkaPostgresBackend(infra.kafka, infra.database_url)
    try:
        bus = await backend.bus()
        host = ServiceHost(
            [create_service(CONFIG)], config=CONFIG, bus=bus, open_store=backend.store
        )
        app = create_service_app(host, manage_bus=False)
        await host.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            count, concurrency = arguments.webhooks, arguments.concurrency
            warm = uuid.uuid4().hex[:8]
            for n in range(50):  # connections, topic metadata, JIT-free but cache-warm
                await bus.publish_events([envelope(n)])  # type: ignore[list-item]
                await client.post(PATH, **webhook(warm, n))  # type: ignore[arg-type]

            raw_failures: list[str] = []

            async def publish(n: int) -> None:
                try:
                    await bus.publish_events([envelope(n)])  # type: ignore[list-item]
                except Exception as error:  # a loaded broker times some out; count them
                    raw_failures.append(type(error).__name__)

            raw_seconds = await in_parallel(count, concurrency, publish)
            raw_rate = (count - len(raw_failures)) / raw_seconds
            print(
                f"raw bus publish:   {raw_rate:10.0f} events/s  (acks=all, 1 event a call, "
                f"{concurrency} in flight; {len(raw_failures)} not acknowledged)"
            )

            run = uuid.uuid4().hex[:8]
            statuses: list[int] = []

            async def post(n: int) -> None:
                response = await client.post(PATH, **webhook(run, n))  # type: ignore[arg-type]
                statuses.append(response.status_code)

            cpu_before = time.process_time()
            hook_seconds = await in_parallel(count, concurrency, post)
            cpu_per_hook = (time.process_time() - cpu_before) / count * 1000
            hook_rate = count / hook_seconds
            failed = len([s for s in statuses if s != 200])
            print(
                f"signed webhooks:   {hook_rate:10.0f} webhooks/s = {hook_rate / raw_rate:.2f} "
                f"x raw publish  ({failed} not 200; aim >= {AIM_RATE}/s)"
            )
            print(
                f"  process CPU {cpu_per_hook:.2f} ms a webhook (client, ingest and its "
                "projections in this one process)"
            )

            rate = hook_rate / 2
            latencies: list[float] = []
            total = int(rate * arguments.latency_seconds)
            paced = uuid.uuid4().hex[:8]

            async def timed(n: int) -> None:
                started = time.perf_counter()
                await client.post(PATH, **webhook(paced, n))  # type: ignore[arg-type]
                latencies.append((time.perf_counter() - started) * 1000)

            tasks = []
            origin = time.perf_counter()
            for n in range(total):
                delay = origin + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(timed(n)))
            await asyncio.gather(*tasks)
            quantiles = statistics.quantiles(latencies, n=100)
            p50, p99 = quantiles[49], quantiles[98]
            print(
                f"latency at {rate:.0f}/s (half the webhook rate, {total} webhooks): "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (aim p99 <= {AIM_P99_MS:.0f} ms)"
            )
        await host.stop()
    finally:
        await backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--webhooks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args()))
