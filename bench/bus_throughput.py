"""Event bus throughput: publish and consume-and-project, against Kafka's own producer tool.

Usage: uv run python bench/bus_throughput.py [--events 50000] [--projection-events 20000]
           [--record-size 512] [--batch 500] [--chunk 5000] [--raw-property KEY=VALUE ...]

What one run measures, on one machine, against the same Kafka broker:

1. raw baseline: Kafka's `ProducerPerformance` (the jars the broker runs from), `acks=all`,
   idempotent, at `--record-size` bytes per value, after as many warm-up records (the
   JVM's JIT needs them; the steady-state rate is the reference). It runs a second time
   with the benchmark's own event values (`--payload-file`) for a like-for-like figure.
2. bus publish: `KafkaBus.publish` and `EmbeddedBus.publish` of N `message_received`
   envelopes, in chunks of `--chunk`, timed until every record was acknowledged.
3. consume and project: the real `ProjectionRunner` (decode and validate, stored
   positions, processed event ids, one transaction per batch of at most `--batch`) runs a
   projection that inserts one row per event: Kafka into a fresh PostgreSQL database
   (created and dropped here) and the embedded log into SQLite. The rate runs from the
   start of the first batch to the end of the batch that applied the last event; the batch
   latency is the runner's `handle_batch` (decode, validate, one transaction and commit).

Every figure is printed as a ratio against the raw tool's steady-state rate of the same
run, so results from different machines compare: what matters is how much of the broker's
capacity the bus and the runner leave on the table, not the absolute numbers.

Events are real ConvoHub envelopes keyed by conversation id (spread over many
conversations). The smallest `message_received` envelope is bigger than 512 bytes, so at
the default size the bus's values are larger than the raw tool's: the ratio against the
512-byte baseline is then the conservative one.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from convohub.contracts import KafkaRecord, Topic, to_kafka_record
from convohub.contracts.envelope import new_event
from convohub.contracts.events.conversation import MessageReceived
from convohub.runtime.bus.embedded import EmbeddedBus
from convohub.runtime.bus.kafka import KafkaBus
from convohub.runtime.bus.port import EventBus, LogRecord
from convohub.runtime.consumer import ProjectionRunner
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.store import ProjectionStore, UnitOfWork, create_engine, migrate_runtime
from convohub.runtime.topics_admin import apply_topics

REPO_DIR = Path(__file__).resolve().parents[1]
INFRA_SCRIPT = REPO_DIR / "scripts" / "infra" / "infra"
RAW_TOOL = "org.apache.kafka.tools.ProducerPerformance"
PARTITIONS = 12  # the registry's default for the conversation topic
CONVERSATIONS = 5_000  # keys: enough that every partition gets a fair share
PROJECTION_TIMEOUT_S = 600
PUBLISH_AIM = 0.30  # of the raw tool's rate
PROJECTION_AIM = 10_000  # events/s into PostgreSQL

_T = TypeVar("_T")

_EXPORT_LINE = re.compile(r"^export ([A-Z_][A-Z0-9_]*)=(.*)$")
_RAW_SUMMARY = re.compile(r"^(\d+) (steady state )?records sent, ([\d.]+) records/sec")
_FILLER = "Hello, my order #A1029 has not arrived yet and the tracking page says nothing. "


# -- infrastructure ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Infra:
    kafka: str
    database_url: str
    jars: Path


def infrastructure() -> Infra:
    """Kafka, PostgreSQL and Kafka's jars from the environment, else from `infra up`."""
    names = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "CONVOHUB_INFRA_JARS")
    found = {name: os.environ[name] for name in names if os.environ.get(name)}
    if len(found) < len(names):
        print(f"starting (or finding) the local infrastructure: {INFRA_SCRIPT} up", flush=True)
        result = subprocess.run(
            [str(INFRA_SCRIPT), "up"], capture_output=True, text=True, timeout=900, check=False
        )
        if result.returncode != 0:
            raise SystemExit(f"{INFRA_SCRIPT} up failed:\n{result.stderr[-3000:]}")
        for line in result.stdout.splitlines():
            match = _EXPORT_LINE.match(line.strip())
            if match and match[1] in names:
                found.setdefault(match[1], match[2].strip().strip("'\""))
    missing = [name for name in names if name not in found]
    if missing:
        raise SystemExit(f"no {missing} in the environment nor from {INFRA_SCRIPT} up")
    return Infra(found["KAFKA_BOOTSTRAP_SERVERS"], found["DATABASE_URL"], Path(found[names[2]]))


def create_topics(infra: Infra, names: Sequence[str]) -> None:
    """Fresh topics with the conversation topic's partition count (kept one hour)."""
    topics = [
        Topic(
            name=name,
            key="conversation_id",
            description="bus_throughput benchmark",
            producers=("bench",),
            partitions=PARTITIONS,
            retention_ms=3_600_000,
        )
        for name in names
    ]
    apply_topics(infra.kafka, topics)


def delete_topics(infra: Infra, names: Sequence[str]) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=infra.kafka, client_id="convohub-bench")
    try:
        admin.delete_topics(list(names))
    except Exception as error:  # best effort: they expire after an hour anyway
        print(f"  (could not delete the benchmark topics: {error!r})")
    finally:
        admin.close()


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Events:
    """Encoded envelopes, ready to be bound to any topic."""

    keys: list[bytes]
    values: list[bytes]
    headers: list[tuple[tuple[str, bytes], ...]]

    @property
    def mean_size(self) -> float:
        return sum(map(len, self.values)) / len(self.values)

    def records(self, topic: str, count: int | None = None) -> list[KafkaRecord]:
        n = len(self.values) if count is None else count
        return [
            KafkaRecord(topic=topic, key=k, value=v, headers=h)
            for k, v, h in zip(self.keys[:n], self.values[:n], self.headers[:n], strict=True)
        ]


def message_received(number: int, text_value: str, at: datetime) -> MessageReceived:
    conversation = f"conv-{number % CONVERSATIONS:06d}"
    return MessageReceived.model_validate(
        {
            "conversation_id": conversation,
            "message_id": f"msg-{number:09d}",
            "channel": "whatsapp",
            "channel_id": "wa-main",
            "provider_message_id": f"wamid.{number:024d}",
            "customer": {
                "channel": "whatsapp",
                "channel_id": "wa-main",
                "address": f"86138{number % CONVERSATIONS:08d}",
            },
            "content": {"text": text_value},
            "received_at": at,
        }
    )


def build_events(count: int, size: int) -> Events:
    """`count` distinct message_received envelopes whose values are `size` bytes (or the
    smallest such envelope with a short text, when `size` is below it)."""
    at = datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC)  # a fixed time: every value one length

    def encode(number: int, text_value: str) -> KafkaRecord:
        event = new_event(
            message_received(number, text_value, at), tenant_id="acme", source="/convohub/ingest"
        )
        return to_kafka_record(event)

    skeleton = len(encode(0, "").value)
    if size > skeleton:
        filler = (_FILLER * (size // len(_FILLER) + 1))[: size - skeleton]
    else:
        filler = _FILLER.strip()
    keys, values, headers = [], [], []
    for number in range(count):
        record = encode(number, filler)
        keys.append(record.key)
        values.append(record.value)
        headers.append(record.headers)
    return Events(keys, values, headers)


# -- phase 1: the raw baseline -------------------------------------------------------------------


@dataclass(frozen=True)
class RawResult:
    rate: float  # records/s, steady state (after the warm-up records)
    summary: str  # the tool's own summary line


def producer_performance(
    infra: Infra,
    topic: str,
    count: int,
    warmup: int,
    payload: list[str],
    properties: Sequence[str] = (),
) -> RawResult:
    """Run Kafka's ProducerPerformance; `payload` is `--record-size N` or `--payload-file F`,
    `properties` extra producer settings (`batch.size=262144`)."""
    command = [
        "java",
        "-cp",
        f"{infra.jars}/*",  # java expands the *, not the shell
        RAW_TOOL,
        "--topic",
        topic,
        "--num-records",
        str(count + warmup),
        *payload,
        "--throughput",
        "-1",
        "--command-property",
        f"bootstrap.servers={infra.kafka}",
        "acks=all",
        "enable.idempotence=true",
        *properties,
    ]
    if warmup:
        command[command.index("--throughput") : command.index("--throughput")] = [
            "--warmup-records",
            str(warmup),
        ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{RAW_TOOL} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    # The whole-run summary line, then (with warm-up) the steady-state one.
    summaries = [line.strip() for line in result.stdout.splitlines()]
    summaries = [line for line in summaries if _RAW_SUMMARY.match(line)]
    if not summaries:
        raise SystemExit(f"no summary line in {RAW_TOOL}'s output:\n{result.stdout[-2000:]}")
    return RawResult(rate=float(_RAW_SUMMARY.match(summaries[-1])[3]), summary=summaries[-1])


# -- phase 2: bus publish --------------------------------------------------------------------------


async def publish_rate(bus: EventBus, records: list[KafkaRecord], chunk: int) -> float:
    """Events/s of `bus.publish` over `records` in chunks, every ack awaited (after one
    untimed warm-up chunk: connections, metadata, the first batch of each partition)."""
    await bus.publish(records[:chunk])
    started = time.perf_counter()
    for start in range(0, len(records), chunk):
        await bus.publish(records[start : start + chunk])
    return len(records) / (time.perf_counter() - started)


# -- phase 3: consume and project ------------------------------------------------------------------


class MessagesProjection(Projection):
    """One row per message_received, inserted with one executemany per batch."""

    def __init__(self, name: str, topic: str) -> None:
        self.name = name
        self.topics = (topic,)
        self.metadata = MetaData()
        self.table = Table(
            "bench_messages",
            self.metadata,
            Column("event_id", String, primary_key=True),
            Column("conversation_id", String, nullable=False),
            Column("message_id", String, nullable=False),
            Column("text_length", Integer, nullable=False),
        )

    async def apply(self, events: Sequence[ConsumedEvent], uow: UnitOfWork) -> None:
        await uow.connection.execute(
            insert(self.table),
            [
                {
                    "event_id": c.event.id,
                    "conversation_id": c.event.data.conversation_id,
                    "message_id": c.event.data.message_id,
                    "text_length": len(c.event.data.content.text or ""),
                }
                for c in events
            ],
        )


@dataclass
class Batch:
    started: float
    ended: float
    size: int


class TimedRunner(ProjectionRunner):
    """The real runner, with each `handle_batch` timed; `done` is set after `expected`."""

    def __init__(
        self,
        bus: EventBus,
        store: ProjectionStore,
        projection: Projection,
        *,
        max_batch: int,
        expected: int,
    ) -> None:
        super().__init__(bus, store, projection, max_batch=max_batch)
        self.expected = expected
        self.applied = 0
        self.batches: list[Batch] = []
        self.done = asyncio.Event()

    async def handle_batch(self, records: Sequence[LogRecord]) -> None:
        started = time.perf_counter()
        await super().handle_batch(records)
        self.batches.append(Batch(started, time.perf_counter(), len(records)))
        self.applied += len(records)
        if self.applied >= self.expected:
            self.done.set()


@dataclass
class ProjectionResult:
    rate: float
    p50_ms: float
    p99_ms: float
    batches: list[Batch] = field(repr=False)
    rows: int

    def batch_sizes(self) -> str:
        sizes = sorted(b.size for b in self.batches)
        median = percentile(sizes, 50)
        return f"{len(sizes)} batches, size min {sizes[0]} / median {median} / max {sizes[-1]}"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


async def project(
    bus: EventBus, engine: AsyncEngine, topic: str, expected: int, batch: int
) -> ProjectionResult:
    """Run the projection over a topic holding `expected` events until all are applied."""
    projection = MessagesProjection(f"bench-{uuid.uuid4().hex[:8]}", topic)
    await migrate_runtime(engine)
    async with engine.begin() as connection:
        await connection.run_sync(projection.metadata.create_all)
    runner = TimedRunner(
        bus, ProjectionStore(engine), projection, max_batch=batch, expected=expected
    )
    await runner.start()
    try:
        async with asyncio.timeout(PROJECTION_TIMEOUT_S):
            await runner.done.wait()
    except TimeoutError:
        raise SystemExit(
            f"projection applied {runner.applied} of {expected} events in {PROJECTION_TIMEOUT_S} s"
        ) from None
    finally:
        await runner.stop()
    async with engine.connect() as connection:
        count = select(func.count()).select_from(projection.table)
        rows = (await connection.execute(count)).scalar_one()
    first, last = runner.batches[0], runner.batches[-1]
    latencies = [(b.ended - b.started) * 1000 for b in runner.batches]
    return ProjectionResult(
        rate=expected / (last.ended - first.started),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        batches=runner.batches,
        rows=rows,
    )


async def with_fresh_database(database_url: str, work: Callable[[str], Awaitable[_T]]) -> _T:
    """Run `work(url)` on a new PostgreSQL database, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
            return await work(url)
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Figures:
    raw: RawResult | None = None
    raw_envelopes: RawResult | None = None
    publish: dict[str, float] = field(default_factory=dict)
    projection: dict[str, ProjectionResult] = field(default_factory=dict)


def phase(title: str) -> None:
    print(f"- {title}", flush=True)


async def kafka_phases(
    infra: Infra, events: Events, args: argparse.Namespace, topics: dict[str, str], figures: Figures
) -> None:
    bus = KafkaBus(infra.kafka, client_id="convohub-bench")
    await bus.start()
    try:
        phase(f"bus publish, Kafka: {args.events:,} events in chunks of {args.chunk:,}")
        rate = await publish_rate(bus, events.records(topics["publish"], args.events), args.chunk)
        figures.publish["Kafka"] = rate
        print(f"    {rate:,.0f} events/s", flush=True)

        phase(f"consume and project, Kafka -> PostgreSQL: {args.projection_events:,} events")
        fill = events.records(topics["project"], args.projection_events)
        for start in range(0, len(fill), args.chunk):
            await bus.publish(fill[start : start + args.chunk])

        async def run(url: str) -> ProjectionResult:
            engine = create_engine(url)
            try:
                return await project(
                    bus, engine, topics["project"], args.projection_events, args.batch
                )
            finally:
                await engine.dispose()

        result = await with_fresh_database(infra.database_url, run)
        figures.projection["Kafka -> PostgreSQL"] = result
        print(f"    {result.rate:,.0f} events/s; {result.batch_sizes()}", flush=True)
    finally:
        await bus.stop()


async def embedded_phases(events: Events, args: argparse.Namespace, figures: Figures) -> None:
    with tempfile.TemporaryDirectory(prefix="convohub-bench-") as directory:
        data = Path(directory)
        registry = [
            Topic(
                name=name,
                key="conversation_id",
                description="bench",
                producers=("bench",),
                partitions=PARTITIONS,
            )
            for name in ("bench.publish", "bench.project")
        ]
        bus = EmbeddedBus(data / "log.sqlite", topics=registry)
        await bus.start()
        try:
            phase(f"bus publish, embedded (SQLite): {args.events:,} events")
            records = events.records("bench.publish", args.events)
            figures.publish["embedded"] = rate = await publish_rate(bus, records, args.chunk)
            print(f"    {rate:,.0f} events/s", flush=True)

            phase(f"consume and project, embedded -> SQLite: {args.projection_events:,} events")
            fill = events.records("bench.project", args.projection_events)
            for start in range(0, len(fill), args.chunk):
                await bus.publish(fill[start : start + args.chunk])
            engine = create_engine(f"sqlite+aiosqlite:///{data / 'projection.sqlite'}")
            try:
                result = await project(
                    bus, engine, "bench.project", args.projection_events, args.batch
                )
            finally:
                await engine.dispose()
            figures.projection["embedded -> SQLite"] = result
            print(f"    {result.rate:,.0f} events/s; {result.batch_sizes()}", flush=True)
        finally:
            await bus.stop()


def report(figures: Figures, args: argparse.Namespace, event_size: float) -> None:
    assert figures.raw is not None
    assert figures.raw_envelopes is not None
    reference = figures.raw.rate
    print()
    print(
        f"ratios against the raw tool's steady-state rate at {args.record_size} B "
        f"({reference:,.0f} records/s; 1.00 = as fast as Kafka's own producer)"
    )
    header = f"  {'figure':52} {'events/s':>10} {'ratio':>6}  batch p50 / p99"
    print(header)
    print("  " + "-" * (len(header) - 2))

    def row(label: str, rate: float, extra: str = "") -> None:
        print(f"  {label:52} {rate:>10,.0f} {rate / reference:>6.2f}  {extra}".rstrip())

    row(f"raw ProducerPerformance, {args.record_size} B values", reference)
    row(
        f"raw ProducerPerformance, ConvoHub envelopes ({event_size:.0f} B)",
        figures.raw_envelopes.rate,
    )
    for name, rate in figures.publish.items():
        row(f"bus publish, {name} ({event_size:.0f} B)", rate)
    for name, result in figures.projection.items():
        row(
            f"consume and project, {name}",
            result.rate,
            f"{result.p50_ms:6.1f} / {result.p99_ms:6.1f} ms",
        )
    print()
    publish_ratio = figures.publish["Kafka"] / reference
    into_postgres = figures.projection["Kafka -> PostgreSQL"].rate
    print("aims")
    print(
        f"  Kafka publish >= {PUBLISH_AIM:.2f} x raw: {publish_ratio:.2f}"
        f" -> {'met' if publish_ratio >= PUBLISH_AIM else 'NOT met'}"
    )
    print(
        f"  projection into PostgreSQL >= {PROJECTION_AIM:,} events/s: {into_postgres:,.0f}"
        f" -> {'met' if into_postgres >= PROJECTION_AIM else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events to publish")
    parser.add_argument(
        "--projection-events", type=int, default=20_000, help="events to consume and project"
    )
    parser.add_argument("--record-size", type=int, default=512, help="bytes per value")
    parser.add_argument("--batch", type=int, default=500, help="the runner's max_batch")
    parser.add_argument("--chunk", type=int, default=5_000, help="records per publish call")
    parser.add_argument(
        "--raw-warmup", type=int, default=None, help="raw tool warm-up records (default: --events)"
    )
    parser.add_argument(
        "--raw-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra producer setting for the raw tool (repeatable), e.g. batch.size=262144",
    )
    args = parser.parse_args()
    warmup = args.events if args.raw_warmup is None else args.raw_warmup
    started = time.perf_counter()

    infra = infrastructure()
    print(f"Kafka {infra.kafka}; PostgreSQL {make_url(infra.database_url).render_as_string()}")
    print(f"Kafka jars {infra.jars}; {os.cpu_count()} CPUs")

    run = uuid.uuid4().hex[:8]
    topics = {
        role: f"bench-{run}-{role}" for role in ("raw", "raw-envelopes", "publish", "project")
    }
    create_topics(infra, list(topics.values()))

    phase(f"building {max(args.events, args.projection_events):,} message_received envelopes")
    events = build_events(max(args.events, args.projection_events), args.record_size)
    print(f"    {events.mean_size:.0f} bytes per value, keys over {CONVERSATIONS:,} conversations")

    figures = Figures()
    try:
        phase(
            f"raw {RAW_TOOL}: {args.events:,} records of {args.record_size} B (+{warmup:,} warm-up)"
        )
        figures.raw = producer_performance(
            infra,
            topics["raw"],
            args.events,
            warmup,
            ["--record-size", str(args.record_size)],
            args.raw_property,
        )
        print(f"    {figures.raw.summary}", flush=True)
        phase(f"raw {RAW_TOOL}: the same with the bench's envelopes as payloads")
        with tempfile.NamedTemporaryFile("w", suffix=".payloads") as payloads:
            payloads.write("\n".join(v.decode() for v in events.values[:1000]))
            payloads.flush()
            figures.raw_envelopes = producer_performance(
                infra,
                topics["raw-envelopes"],
                args.events,
                warmup,
                ["--payload-file", payloads.name],
                args.raw_property,
            )
        print(f"    {figures.raw_envelopes.summary}", flush=True)

        asyncio.run(kafka_phases(infra, events, args, topics, figures))
        asyncio.run(embedded_phases(events, args, figures))
    finally:
        delete_topics(infra, list(topics.values()))

    for name, result in figures.projection.items():
        if result.rows != args.projection_events:
            raise SystemExit(f"{name}: {result.rows} rows for {args.projection_events} events")
    report(figures, args, events.mean_size)
    print(f"\nwhole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
