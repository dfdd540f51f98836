"""Ingest webhooks end to end into Kafka, against the bus's raw publish rate.

Usage: uv run python bench/ingest_webhooks.py [--webhooks 2000] [--concurrency 64]
           [--latency-seconds 5] [--processes N]

One run, one Kafka broker (acks=all, idempotent producer) and one PostgreSQL:

1. raw bus publish: `KafkaBus.publish_events` of one `message_received` envelope per call,
   `--concurrency` calls in flight, until every record was acknowledged (before ingest
   starts: its projections read these events at start-up, and the run waits until they
   are idle again before the next phase);
2. signed webhooks: Twilio SMS webhooks (X-Twilio-Signature computed as Twilio does), each
   a different message from one of 500 customers, posted to the ingest app in process
   (ASGI, no socket) with the same concurrency: signature check, form parse, dedupe claim
   in PostgreSQL, conversation placement, publish and broker ack, claim done. CPU a
   webhook is counted until ingest's projections have applied its events too;
3. latency: webhooks at a fixed rate of half the measured webhook rate for
   `--latency-seconds`, p50/p99 of the HTTP answer (which comes after the broker's ack).

With `--processes N` the webhooks go instead to N ingest processes, each what `convohub
serve ingest` runs (the same settings, logging, uvicorn server, app, projections and
background workers; only its topics carry the run's namespace), on real sockets, from a
light HTTP/1.1 client in this process (requests built and signed before the clock starts,
keep-alive connections spread over the processes as a load balancer would). It prints the
same figures and the CPU each part spent per webhook (the ingest processes, the client, the
Kafka broker and PostgreSQL), so a reader can work out how many processes and cores a rate
needs. The default, in process, measures ingest without the sockets and the HTTP server.

Printed as ratios of the raw publish rate, so runs on different machines compare.
Kafka and PostgreSQL come from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, else `infra up`
(see bench/bus_throughput.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
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
from convohub.runtime.service import ServiceHost, create_tables  # noqa: E402
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


async def at_fixed_rate(rate: float, total: int, one: object) -> list[float]:
    """Start `one(n)` at `rate` a second, `total` times; each one's latency in ms, counted
    from when it was due (so time spent queued behind a slow system counts)."""
    latencies: list[float] = []

    async def timed(n: int, due: float) -> None:
        await one(n)  # type: ignore[operator]
        latencies.append((time.perf_counter() - due) * 1000)

    tasks = []
    origin = time.perf_counter()
    for n in range(total):
        due = origin + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed(n, due)))
    await asyncio.gather(*tasks)
    return latencies


class Settled:
    """Waits until processes are idle again (their projections caught up with the webhooks
    just sent: below `idle_share` of a core over half a second) and knows what they spend
    idle (their polls), so that the wait itself is not billed to the webhooks."""

    def __init__(self, cpu: Callable[[], float], idle_share: float = 0.06) -> None:
        self.cpu = cpu
        self.idle_share = idle_share
        self.idle_rate = 0.0  # CPU seconds a second when idle, from the last wait

    async def wait(self) -> float:
        """CPU seconds used for work since the start, once idle (idle polls while waiting
        left out at the rate measured before)."""
        started, idle_rate = time.perf_counter(), self.idle_rate
        last = self.cpu()
        for _ in range(60):
            await asyncio.sleep(0.5)
            now = self.cpu()
            if now - last < self.idle_share * 0.5:
                self.idle_rate = (now - last) / 0.5
                return now - idle_rate * (time.perf_counter() - started)
            last = now
        return last


async def raw_publish_rate(bus: object, count: int, concurrency: int) -> float:
    """The bus's acknowledged one-event publishes a second (the baseline)."""
    for n in range(50):  # connections, topic metadata
        await bus.publish_events([envelope(n)])  # type: ignore[attr-defined]
    failures: list[str] = []

    async def publish(n: int) -> None:
        try:
            await bus.publish_events([envelope(n)])  # type: ignore[attr-defined]
        except Exception as error:  # a loaded broker times some out; count them
            failures.append(type(error).__name__)

    seconds = await in_parallel(count, concurrency, publish)
    rate = (count - len(failures)) / seconds
    print(
        f"raw bus publish:   {rate:10.0f} events/s  (acks=all, 1 event a call, "
        f"{concurrency} in flight; {len(failures)} not acknowledged)"
    )
    return rate


def print_rate(rate: float, raw_rate: float, failed: int) -> None:
    print(
        f"signed webhooks:   {rate:10.0f} webhooks/s = {rate / raw_rate:.2f} "
        f"x raw publish  ({failed} not 200; aim >= {AIM_RATE}/s)"
    )


def print_latency(rate: float, latencies: list[float]) -> None:
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"latency at {rate:.0f}/s (half the webhook rate, {len(latencies)} webhooks): "
        f"p50 {quantiles[49]:.1f} ms, p99 {quantiles[98]:.1f} ms (aim p99 <= {AIM_P99_MS:.0f} ms)"
    )


async def in_process(arguments: argparse.Namespace, backend: KafkaPostgresBackend) -> None:
    count, concurrency = arguments.webhooks, arguments.concurrency
    bus = await backend.bus()
    # The baseline first: ingest's projections read its events at start, not while timed.
    raw_rate = await raw_publish_rate(bus, count, concurrency)
    host = ServiceHost([create_service(CONFIG)], config=CONFIG, bus=bus, open_store=backend.store)
    app = create_service_app(host, manage_bus=False)
    await host.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        warm = uuid.uuid4().hex[:8]
        for n in range(50):  # connections, topic metadata, caches
            await client.post(PATH, **webhook(warm, n))  # type: ignore[arg-type]
        idle = Settled(time.process_time)
        await idle.wait()

        run = uuid.uuid4().hex[:8]
        statuses: list[int] = []

        async def post(n: int) -> None:
            response = await client.post(PATH, **webhook(run, n))  # type: ignore[arg-type]
            statuses.append(response.status_code)

        cpu_before = time.process_time()
        hook_seconds = await in_parallel(count, concurrency, post)
        cpu_per_hook = (await idle.wait() - cpu_before) / count * 1000
        hook_rate = count / hook_seconds
        print_rate(hook_rate, raw_rate, len([s for s in statuses if s != 200]))
        print(
            f"  process CPU {cpu_per_hook:.2f} ms a webhook (client, ingest and its "
            "projections in this one process, until they caught up)"
        )

        rate = hook_rate / 2
        paced = uuid.uuid4().hex[:8]

        async def paced_post(n: int) -> None:
            await client.post(PATH, **webhook(paced, n))  # type: ignore[arg-type]

        latencies = await at_fixed_rate(rate, int(rate * arguments.latency_seconds), paced_post)
        print_latency(rate, latencies)
    await host.stop()


# --- N ingest processes on real sockets ---------------------------------------------------


def request_bytes(run: str, n: int) -> bytes:
    """One signed webhook as HTTP/1.1 bytes (Host: bench, so the signed URL matches)."""
    hook = webhook(run, n)
    body: bytes = hook["content"]  # type: ignore[assignment]
    headers: dict[str, str] = hook["headers"]  # type: ignore[assignment]
    head = [f"POST {PATH} HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Connection:
    """A keep-alive HTTP/1.1 connection that sends prebuilt requests, one at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, request: bytes) -> int:
        """The response's status (0 when the connection failed twice)."""
        for _ in range(2):
            if self._streams is None:
                self._streams = await asyncio.open_connection("127.0.0.1", self.port)
            reader, writer = self._streams
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                return int(head[9:12])
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()  # the server closed an idle connection: open another
                self._streams = None
        return 0

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (0 for one that is gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def server_pids() -> dict[str, list[int]]:
    """The Kafka broker's and PostgreSQL's processes on this machine, by what they are."""
    found: dict[str, list[int]] = {"Kafka broker": [], "PostgreSQL": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "kafka.Kafka" in command:
            found["Kafka broker"].append(int(entry.name))
        elif command.startswith(("postgres", "/usr/lib/postgresql")):
            found["PostgreSQL"].append(int(entry.name))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def wait_until_ready(port: int, child: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if child.returncode is not None:
            raise SystemExit(f"an ingest process exited ({child.returncode}):\n{tail(log)}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            status = (await reader.read(64))[9:12]
            writer.close()
            if status == b"200":
                return
        except OSError:
            pass
        await asyncio.sleep(0.5)
    raise SystemExit(f"an ingest process did not become ready:\n{tail(log)}")


async def in_processes(arguments: argparse.Namespace, backend: KafkaPostgresBackend) -> None:
    count, concurrency, processes = arguments.webhooks, arguments.concurrency, arguments.processes
    store = await backend.store("ingest")  # migrated; the service's tables made once, here
    await create_tables(create_service(CONFIG), store)
    database_url = await backend.store_url("ingest")
    bus = await backend.bus()
    # The baseline first: ingest's projections read its events at start, not while timed.
    raw_rate = await raw_publish_rate(bus, count, concurrency)
    ports = [free_port() for _ in range(processes)]
    logs = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    children: list[asyncio.subprocess.Process] = []
    try:
        for index, port in enumerate(ports):
            with (logs / f"ingest-{index}.log").open("wb") as log:
                children.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        __file__,
                        "--serve-port",
                        str(port),
                        "--prefix",
                        backend.prefix,
                        "--kafka",
                        backend.bootstrap_servers,
                        "--database-url",
                        database_url,
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                )
        for index, (port, child) in enumerate(zip(ports, children, strict=True)):
            await wait_until_ready(port, child, logs / f"ingest-{index}.log")
        print(f"{processes} ingest processes ready (logs in {logs} until the run ends)")

        def connections(how_many: int) -> list[Connection]:
            return [Connection(ports[n % processes]) for n in range(how_many)]

        warm_connections = connections(processes * 4)
        warm = uuid.uuid4().hex[:8]
        await asyncio.gather(
            *(
                warm_connections[n % len(warm_connections)].send(request_bytes(warm, n))
                for n in range(50 * processes)
            )
        )
        child_pids = [child.pid for child in children]
        idle = Settled(lambda: cpu_seconds(child_pids))
        await idle.wait()

        run = uuid.uuid4().hex[:8]
        requests = [request_bytes(run, n) for n in range(count)]
        pool = connections(concurrency)
        free: asyncio.Queue[Connection] = asyncio.Queue()
        for connection in pool:
            free.put_nowait(connection)
        statuses: list[int] = []

        async def post(requests: list[bytes], n: int) -> None:
            connection = await free.get()
            try:
                statuses.append(await connection.send(requests[n]))
            finally:
                free.put_nowait(connection)

        before = {pid: cpu_seconds([pid]) for pids in server_pids().values() for pid in pids}
        before_children = [cpu_seconds([pid]) for pid in child_pids]
        client_before = time.process_time()
        seconds = await in_parallel(count, concurrency, lambda n: post(requests, n))
        client_cpu = time.process_time() - client_before
        during = [
            cpu_seconds([pid]) - start
            for pid, start in zip(child_pids, before_children, strict=True)
        ]
        ingest_cpu = await idle.wait() - sum(before_children)  # projections caught up
        spent = {  # PostgreSQL forks a process per new connection: those count whole
            name: sum(cpu_seconds([pid]) - before.get(pid, 0.0) for pid in pids)
            for name, pids in server_pids().items()
        }
        hook_rate = count / seconds
        print_rate(hook_rate, raw_rate, len([s for s in statuses if s != 200]))
        ingest_ms = ingest_cpu / count * 1000
        print(
            f"  CPU a webhook: ingest {ingest_ms:.2f} ms over {processes} processes "
            f"({', '.join(f'{cpu / seconds * 100:.0f}%' for cpu in during)} of a core "
            f"each while the webhooks came), client {client_cpu / count * 1000:.2f} ms, "
            + ", ".join(f"{name} {cpu / count * 1000:.2f} ms" for name, cpu in spent.items())
        )
        print("  (ingest, the broker and PostgreSQL until ingest's projections caught up)")
        print(
            f"  at {ingest_ms:.2f} ms a webhook one core of ingest takes {1000 / ingest_ms:.0f}"
            f" webhooks/s; {AIM_RATE}/s needs {AIM_RATE * ingest_ms / 1000:.1f} cores of ingest"
            " (the broker, the database and the clients apart)"
        )

        rate = hook_rate / 2
        total = int(rate * arguments.latency_seconds)
        paced = [request_bytes(uuid.uuid4().hex[:8], n) for n in range(total)]
        latencies = await at_fixed_rate(rate, total, lambda n: post(paced, n))
        print_latency(rate, latencies)
        for connection in [*pool, *warm_connections]:
            connection.close()
        shutil.rmtree(logs)  # kept only when something went wrong
    finally:
        for child in children:
            if child.returncode is None:
                child.terminate()
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), 20)
            except TimeoutError:
                child.kill()
                await child.wait()


def serve_ingest(arguments: argparse.Namespace) -> None:
    """One ingest process as `convohub serve ingest` runs it, on the run's topics."""
    from convohub.cli.hosting import serve
    from convohub.runtime.bus.kafka import KafkaBus
    from convohub.runtime.bus.namespaced import NamespacedBus
    from convohub.runtime.hosting import open_store
    from convohub.runtime.metrics import RuntimeMetrics
    from convohub.runtime.settings import RuntimeSettings

    settings = RuntimeSettings(
        mode="distributed",
        kafka_bootstrap_servers=arguments.kafka,
        database_url=arguments.database_url,
        http_host="127.0.0.1",
        http_port=arguments.serve_port,
        service_name="convohub-ingest",
    )

    async def open_service_store(name: str) -> object:
        return open_store(settings, name)

    bus = KafkaBus(arguments.kafka, client_id=settings.service_name)
    host = ServiceHost(
        [create_service(CONFIG)],
        config=CONFIG,
        bus=NamespacedBus(bus, arguments.prefix),
        open_store=open_service_store,  # type: ignore[arg-type]
        metrics=RuntimeMetrics(),
        outbox_poll_interval=settings.idle_poll_seconds,
        max_batch=settings.max_batch,
        metrics_interval=settings.metrics_interval_seconds,
    )
    serve(settings, host, banner=f"bench ingest on port {arguments.serve_port}")


async def main(arguments: argparse.Namespace) -> None:
    infra = infrastructure()
    backend = KafkaPostgresBackend(infra.kafka, infra.database_url)
    try:
        if arguments.processes:
            await in_processes(arguments, backend)
        else:
            await in_process(arguments, backend)
    finally:
        await backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--webhooks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="N ingest processes on real sockets (default: ingest in this process)",
    )
    # How the benchmark starts each of those processes (not for direct use).
    parser.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--kafka", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve_port:
        serve_ingest(parsed)
    else:
        asyncio.run(main(parsed))
