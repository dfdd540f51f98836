"""The host keeps the gauges of /metrics fresh on its own: every `metrics_interval` it asks
each service's `refresh_metrics` and sets the outbox backlog and the dead-letter queue size,
and a failing part does not stop the others."""

from __future__ import annotations

from pathlib import Path

from convohub.runtime.config import HubConfig
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.service import Service, ServiceHost
from tests.scenarios.backends import EmbeddedBackend
from tests.support.hub import eventually


class Gauged(Service):
    name = "gauged"

    def __init__(self) -> None:
        self.refreshed = 0

    async def refresh_metrics(self, metrics: RuntimeMetrics) -> None:
        self.refreshed += 1
        gauge = metrics.gauge("gauged_things", "Things.", ["kind"])
        metrics.set_gauge(gauge, {("a",): 3.0} if self.refreshed == 1 else {("b",): 1.0})


class Broken(Service):
    name = "broken"

    async def refresh_metrics(self, metrics: RuntimeMetrics) -> None:
        raise RuntimeError("its database is down")


async def test_the_host_refreshes_gauges_periodically_and_drops_vanished_labels(
    tmp_path: Path,
) -> None:
    backend = EmbeddedBackend(tmp_path)
    gauged = Gauged()
    metrics = RuntimeMetrics()
    host = ServiceHost(
        [Broken(), gauged],
        config=HubConfig(),
        bus=await backend.bus(),
        open_store=backend.store,
        metrics=metrics,
        metrics_interval=0.05,
    )
    await host.start()
    try:

        async def refreshed_twice() -> bool:
            return gauged.refreshed >= 2

        await eventually(refreshed_twice, "two refreshes", within=10)
        value = metrics.registry.get_sample_value
        assert value("convohub_gauged_things", {"kind": "a"}) == 0, "a vanished label drops to 0"
        assert value("convohub_gauged_things", {"kind": "b"}) == 1
        assert value("convohub_outbox_pending", {"database": "gauged"}) == 0
        assert value("convohub_dead_letter_queue_records") == 0
    finally:
        await host.stop()
        await backend.close()
