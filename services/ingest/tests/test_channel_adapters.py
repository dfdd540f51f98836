"""The channel adapter SDK's wiring inside ingest: which adapter serves which configured
channel, start-up checks of the configuration, the routes in /openapi.json, and the
coalescing of concurrent publishes and done marks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from convohub.ingest.adapters.channels import MailgunAdapter, RawEmailAdapter
from convohub.ingest.bootstrap import create_service, validate_channel_adapters
from convohub.ingest.handlers.inbound import Coalescer
from convohub.ingest.sdk import (
    AdapterChannel,
    AdapterRegistry,
    Channel,
    ChannelAdapter,
    Inbound,
    WebhookRequest,
    load_adapters,
)
from convohub.runtime.config import ConfigError, parse_config
from tests.support.hub import backend_for, running_hub


class FaxAdapter(ChannelAdapter):
    name = "fax"
    channel_types = (Channel.SOCIAL,)
    required_secrets = ("fax_secret",)

    def verify(self, request: WebhookRequest, channel: AdapterChannel) -> None:
        return None

    def parse(self, request: WebhookRequest, channel: AdapterChannel) -> Sequence[Inbound]:
        return []


class SloppyAdapter(FaxAdapter):
    """Crashes on what it does not expect, as a careless adapter would."""

    name = "sloppy"
    required_secrets = ()

    def verify(self, request: WebhookRequest, channel: AdapterChannel) -> None:
        if request.header("x-crash") == "verify":
            raise ValueError("bad base64")

    def parse(self, request: WebhookRequest, channel: AdapterChannel) -> Sequence[Inbound]:
        return [request.json()["missing"]]


def config(channels: str) -> Any:
    return parse_config(f"tenants:\n  - id: acme\n    name: Acme\n    channels:\n{channels}", {})


def test_installed_adapters_include_the_built_in_ones_found_by_entry_point() -> None:
    registry = load_adapters()
    assert isinstance(registry.adapters["email"], RawEmailAdapter)
    assert isinstance(registry.adapters["mailgun"], MailgunAdapter)
    # A built-in e-mail adapter serves an e-mail channel whatever its provider says...
    assert registry.for_channel(Channel.EMAIL, "smtp") is registry.adapters["email"]
    assert registry.for_channel(Channel.EMAIL, "mailgun") is registry.adapters["mailgun"]
    # ...but a third-party adapter only the channels that name it.
    fax = AdapterRegistry({"fax": FaxAdapter()})
    assert fax.for_channel(Channel.SOCIAL, "fax") is fax.adapters["fax"]
    assert fax.for_channel(Channel.SOCIAL, "messenger") is None
    assert fax.for_channel(Channel.SMS, "fax") is None


def test_start_up_names_a_missing_secret_and_an_adapter_that_did_not_load() -> None:
    channels = (
        "      - {id: fax-main, type: social, provider: fax}\n"
        "      - {id: broken-main, type: social, provider: broken}\n"
        "      - {id: dm-main, type: social, provider: messenger}\n"
    )
    registry = AdapterRegistry({"fax": FaxAdapter()}, {"broken": "ImportError: no module"})
    with pytest.raises(ConfigError) as raised:
        validate_channel_adapters(config(channels), registry)
    where = [problem.path for problem in raised.value.problems]
    # A social channel nothing serves (messenger) is only logged: its webhook answers 404.
    assert where == ["tenants[0].channels[0].secrets.fax_secret", "tenants[0].channels[1].provider"]
    fine = "      - {id: fax-main, type: social, provider: fax, secrets: {fax_secret: s}}\n"
    validate_channel_adapters(config(fine), registry)


async def test_adapter_routes_are_in_openapi_and_serve_only_their_channels(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    hub_config = config(
        "      - {id: fax-main, type: social, provider: fax, secrets: {fax_secret: s}}\n"
        "      - {id: dm-main, type: social, provider: messenger, secrets: {app_secret: s}}\n"
        "      - {id: sloppy-main, type: social, provider: sloppy}\n"
    )
    registry = AdapterRegistry(
        {**load_adapters().adapters, "fax": FaxAdapter(), "sloppy": SloppyAdapter()}
    )
    async with (
        backend_for("embedded", request, tmp_path) as backend,
        running_hub(backend, [create_service(hub_config, registry)], hub_config) as hub,
    ):
        paths = (await hub.client.get("/openapi.json")).json()["paths"]
        for name in ("fax", "email", "mailgun"):
            assert f"/v1/webhooks/{name}/{{channel_id}}" in paths
        accepted = await hub.client.post("/v1/webhooks/fax/fax-main", content=b"ping")
        assert accepted.status_code == 200
        assert accepted.json() == {"status": "accepted", "items": 0}
        # The messenger channel is not the fax adapter's, whatever the URL says.
        refused = await hub.client.post("/v1/webhooks/fax/dm-main", content=b"ping")
        assert refused.status_code == 404
        assert refused.headers["content-type"].startswith("application/problem+json")
        # An adapter that crashes on a caller's input refuses it (logged), never a 500.
        crashed = await hub.client.post("/v1/webhooks/sloppy/sloppy-main", content=b"{}")
        assert (crashed.status_code, crashed.json()["code"]) == (422, "adapter_failed")
        crashed = await hub.client.post(
            "/v1/webhooks/sloppy/sloppy-main", content=b"{}", headers={"X-Crash": "verify"}
        )
        assert (crashed.status_code, crashed.json()["code"]) == (403, "adapter_failed")


async def test_coalescer_flushes_concurrent_items_together_and_fails_only_their_flush() -> None:
    flushed: list[list[int]] = []
    release = asyncio.Event()

    async def flush(items: list[int]) -> None:
        flushed.append(items)
        if items == [0]:
            await release.wait()  # the first flush is in flight while the others queue
        if 13 in items:
            raise ConnectionError("broker down")

    coalescer: Coalescer[int] = Coalescer(flush)
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0)
    queued = [asyncio.create_task(coalescer.submit(n)) for n in range(1, 6)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *queued)
    assert flushed == [[0], [1, 2, 3, 4, 5]]

    with pytest.raises(ConnectionError):
        await coalescer.submit(13)
    await coalescer.submit(14)  # the next flush is a new one
    assert flushed[-2:] == [[13], [14]]

    coalescer.post(20)  # fire and forget (the done marks): flushed by the time it drained
    coalescer.post(21)
    await coalescer.drained()
    assert flushed[-1] == [20, 21]
