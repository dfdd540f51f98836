"""How a service plugs into a process: the `Service` a package exports, and the `ServiceHost`
that runs one service (`convohub serve NAME`) or all of them (`convohub up`).

A service package exposes a factory in the `convohub.services` entry-point group::

    [project.entry-points."convohub.services"]
    router = "convohub.router.bootstrap:create_service"

`create_service(config)` validates the service's sections of `convohub.yaml` (raising
`ConfigError` naming the key paths) and returns a `Service`. The host then, for each
service: opens its projection store, creates the runtime's bookkeeping tables and the
service's own tables (`metadata`), sets `service.context`, runs one `ProjectionRunner` per
projection, one `OutboxRelay` for the store, and the service's background loops (timers,
outbound delivery, expiry sweeps). `stop()` undoes it in reverse order: loops cancelled,
runners finish their batch and commit, the relay drains what is pending.

Handlers never learn which mode they run in: the host is given a started bus and a way to
open stores, which `hosting.open_bus` / `hosting.open_store` build from the settings (or a
test builds from its backend).
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Protocol

import structlog
from fastapi import APIRouter
from opentelemetry.trace import Tracer
from sqlalchemy import MetaData, text

from convohub.contracts.topics import DEAD_LETTER
from convohub.runtime.bus.port import EventBus
from convohub.runtime.config import HubConfig
from convohub.runtime.consumer import ProjectionRunner
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.ops import ReadinessCheck
from convohub.runtime.projection import Projection
from convohub.runtime.store import OutboxRelay, ProjectionStore, migrate_runtime
from convohub.runtime.telemetry import Telemetry, recording_tracer

__all__ = [
    "ENTRY_POINT_GROUP",
    "Clock",
    "ManualClock",
    "Service",
    "ServiceContext",
    "ServiceHost",
    "ServiceNotStartedError",
    "SystemClock",
    "available_services",
    "create_tables",
    "load_service_factory",
]

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP = "convohub.services"
RELAY_STOP_GRACE_SECONDS = 10.0
"""How long a stopping host waits for an outbox relay to finish its round."""


class Clock(Protocol):
    """Where a service reads the time; tests pass a `ManualClock`."""

    def now(self) -> datetime:
        """The current moment, timezone-aware (UTC)."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class ManualClock:
    """A clock that moves only when told to (`advance`, `set`)."""

    current: datetime = field(default_factory=lambda: datetime(2026, 1, 5, 9, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        from datetime import timedelta

        self.current += timedelta(**delta)
        return self.current

    def set(self, moment: datetime) -> None:
        self.current = moment


@dataclass(frozen=True)
class ServiceContext:
    """What a started service may use: set on `Service.context` before anything runs."""

    name: str
    config: HubConfig
    bus: EventBus
    """Started; publish directly only where the caller must wait for the broker's ack
    (ingest's webhooks). Everything caused by a consumed event goes through `uow.emit`."""
    store: ProjectionStore
    """This service's database, with the runtime's tables and `Service.metadata` created."""
    metrics: RuntimeMetrics
    clock: Clock
    tracer: Tracer | None = None
    """Where spans go when someone sees them (an exporter is set up), else None: start a
    span only when it is not None (`telemetry.producer_span` does that)."""


class ServiceNotStartedError(RuntimeError):
    """A request reached a service before its host started it (answer 503)."""


class Service(ABC):  # noqa: B024 - every hook has a sensible default
    """One ConvoHub service as the host sees it. Override what the service has."""

    name: str = ""
    """Short name: `ingest`, `router`, `sla`, `crm`, `feedback`. Names the store and logs."""
    metadata: MetaData = MetaData()
    """Every table the service owns (its projections' and its own); created at start.
    Table names start with the service name (`router_agents`), so services can share one
    PostgreSQL database."""

    _context: ServiceContext | None = None

    @property
    def context(self) -> ServiceContext:
        if self._context is None:
            raise ServiceNotStartedError(f"the {self.name} service has not started yet")
        return self._context

    @context.setter
    def context(self, context: ServiceContext) -> None:
        self._context = context

    def routes(self) -> APIRouter | None:
        """The service's HTTP API (paths under `/v1/`), built before start; handlers reach
        the running service through `self.context`."""
        return None

    def projections(self) -> Sequence[Projection]:
        """The projections to run, one consumer group each."""
        return ()

    def background(self) -> Sequence[Callable[[], Awaitable[None]]]:
        """Long-running loops (timers, delivery, sweeps), started after the projections and
        cancelled at stop. A loop that raises is logged and restarted after a second."""
        return ()

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        """Extra `/readyz` checks beyond the host's database and bus checks."""
        return {}

    async def refresh_metrics(self, metrics: RuntimeMetrics) -> None:  # noqa: B027 - optional hook
        """Bring this service's gauges up to date (queue lengths, open clocks); the host
        calls it every `metrics_interval` seconds and before nothing else. Register the
        metrics with `metrics.gauge(...)` / `metrics.counter(...)`."""

    async def on_start(self) -> None:  # noqa: B027 - optional hook
        """Called once `context` is set and the tables exist, before projections run."""

    async def on_stop(self) -> None:  # noqa: B027 - optional hook
        """Called after the loops and projections stopped."""


StoreOpener = Callable[[str], Awaitable[ProjectionStore]]
"""Opens (and owns) the projection store of the named service."""


class ServiceHost:
    """Runs services against one bus; start/stop are idempotent and ordered."""

    def __init__(
        self,
        services: Sequence[Service],
        *,
        config: HubConfig,
        bus: EventBus,
        open_store: StoreOpener,
        metrics: RuntimeMetrics | None = None,
        clock: Clock | None = None,
        max_batch: int = 500,
        restart_delay: float = 1.0,
        outbox_poll_interval: float = 0.05,
        telemetry: Telemetry | None = None,
        metrics_interval: float = 15.0,
    ) -> None:
        names = [service.name for service in services]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError(f"services need distinct, non-empty names: {names}")
        self.services = list(services)
        self.config = config
        self.bus = bus
        self.open_store = open_store
        self.metrics = metrics or RuntimeMetrics()
        self.clock = clock or SystemClock()
        self.max_batch = max_batch
        self.restart_delay = restart_delay
        self.outbox_poll_interval = outbox_poll_interval
        self.telemetry = telemetry
        """Spans go to this telemetry's providers; None: to the process-wide ones."""
        self.metrics_interval = metrics_interval
        self.stores: dict[str, ProjectionStore] = {}
        self._runners: list[ProjectionRunner] = []
        self._relays: list[OutboxRelay] = []
        self._relay_services: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    @property
    def tracer(self) -> Tracer | None:
        """The tracer of per-request and per-event spans, None when none is exported."""
        return recording_tracer(self.telemetry)

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service {name!r} in this host")

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for service in self.services:
            store = await self.open_store(service.name)
            self.stores[service.name] = store
            await create_tables(service, store)
            service.context = ServiceContext(
                name=service.name,
                config=self.config,
                bus=self.bus,
                store=store,
                metrics=self.metrics,
                clock=self.clock,
                tracer=self.tracer,
            )
            await service.on_start()
            relay = OutboxRelay(
                store,
                self.bus,
                poll_interval=self.outbox_poll_interval,
                on_published=self.metrics.record_published,
            )
            self._relays.append(relay)
            self._relay_services.append(service.name)
            self._spawn(f"{service.name}.outbox", relay.run)
            for projection in service.projections():
                runner = ProjectionRunner(
                    self.bus,
                    store,
                    projection,
                    max_batch=self.max_batch,
                    metrics=self.metrics,
                    tracer=self.tracer,
                )
                await runner.start()
                self._runners.append(runner)
            for index, loop in enumerate(service.background()):
                self._spawn(f"{service.name}.background[{index}]", loop)
        self._spawn("host.metrics", self._refresh_metrics_forever)
        log.info("services started", services=[service.name for service in self.services])

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        background, relays = self._split_tasks()
        await _cancel(background)
        for runner in reversed(self._runners):
            await runner.stop()
        self._runners.clear()
        for service in self.services:
            await service.on_stop()
        # A relay finishes its round rather than being cancelled inside it (see
        # `OutboxRelay.stop_after_round`); one stuck past the grace period is cancelled.
        for relay in self._relays:
            relay.stop_after_round()
        if relays:
            _, stuck = await asyncio.wait(relays, timeout=RELAY_STOP_GRACE_SECONDS)
            await _cancel(list(stuck))
        for relay in self._relays:  # what the last batches emitted still goes out
            try:
                await relay.publish_pending()
            except Exception:
                log.exception("outbox not drained at stop; it is published at the next start")
        self._relays.clear()
        self._relay_services.clear()
        self._tasks.clear()
        for store in self.stores.values():  # close the pools; the engines stay usable
            await store.engine.dispose()

    async def refresh_metrics(self) -> None:
        """Bring the gauges up to date: consumer lag, outbox backlog, dead-letter queue size
        and every service's own (`Service.refresh_metrics`). Each part is best effort: one
        that fails is logged and the others still refresh."""
        parts: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            (f"lag {runner.group}", runner.refresh_lag) for runner in self._runners
        ]
        for name, relay in zip(self._relay_services, self._relays, strict=True):
            parts.append((f"outbox {name}", self._outbox_gauge(name, relay)))
        parts.append(("dead-letter queue", self._dead_letter_gauge))
        for service in self.services:
            parts.append((f"service {service.name}", self._service_gauges(service)))
        for what, refresh in parts:
            try:
                await refresh()
            except Exception:
                log.warning("could not refresh a metric", metric=what, exc_info=True)

    def _outbox_gauge(self, name: str, relay: OutboxRelay) -> Callable[[], Awaitable[None]]:
        async def refresh() -> None:
            self.metrics.outbox_pending.labels(database=name).set(await relay.pending_count())

        return refresh

    def _service_gauges(self, service: Service) -> Callable[[], Awaitable[None]]:
        async def refresh() -> None:
            await service.refresh_metrics(self.metrics)

        return refresh

    async def _dead_letter_gauge(self) -> None:
        ends = await self.bus.end_offsets([DEAD_LETTER.name])
        self.metrics.dead_letter_queue_records.set(sum(ends.values()))

    async def _refresh_metrics_forever(self) -> None:
        # Sleep first: a host that lives for less than an interval (a test, a CLI command)
        # never pays for the queries; consumers set their lag after each batch anyway.
        while True:
            await asyncio.sleep(self.metrics_interval)
            await self.refresh_metrics()

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        checks: dict[str, ReadinessCheck] = {}
        for service in self.services:
            checks[f"{service.name}.database"] = self._database_check(service.name)
            for name, check in service.readiness_checks().items():
                checks[f"{service.name}.{name}"] = check
        return checks

    def _database_check(self, name: str) -> ReadinessCheck:
        async def check() -> bool:
            store = self.stores.get(name)
            if store is None:
                return False
            async with store.reader.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return True

        return check

    def _spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(name, loop), name=name))

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background loop failed; restarting", loop=name)
                await asyncio.sleep(self.restart_delay)

    def _split_tasks(self) -> tuple[list[asyncio.Task[None]], list[asyncio.Task[None]]]:
        relays = [task for task in self._tasks if task.get_name().endswith(".outbox")]
        return [task for task in self._tasks if task not in relays], relays


async def create_tables(service: Service, store: ProjectionStore) -> None:
    """The runtime's bookkeeping tables (Alembic) and the service's own tables, if missing."""
    await migrate_runtime(store.engine)
    async with store.begin() as connection:
        await connection.run_sync(service.metadata.create_all)


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def available_services() -> dict[str, str]:
    """Installed services by name, with the `module:factory` each entry point names."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_service_factory(name: str) -> Callable[[HubConfig], Service]:
    """The `create_service(config)` factory of an installed service; KeyError if unknown."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    known = ", ".join(sorted(available_services())) or "none"
    raise KeyError(f"no service named {name!r} is installed (installed: {known})")
