"""An agent's reply on a channel served by a channel adapter goes out through the adapter's
`send` (the SDK's outbound half), and its outcome is recorded like a built-in provider's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from convohub.ingest.domain.settings import ChannelSettings
from convohub.ingest.handlers.delivery import desk_background
from convohub.ingest.sdk import (
    AdapterChannel,
    AdapterRegistry,
    Channel,
    ChannelAdapter,
    DeliveryOutcome,
    OutboundMessage,
)
from convohub.runtime.config import parse_config
from services.ingest.tests.test_desk_service import (
    DELIVERED,
    FAILED,
    DeskService,
    assigned,
    of_type,
    received,
    started,
    until,
)
from tests.support.hub import backend_for, eventually, running_hub

AGENT = "agent42-key-0123456789"
CONFIG = parse_config(
    f"""
tenants:
  - id: acme
    name: Acme
    api_keys:
      - {{key: {AGENT}, role: agent, agent_id: agent-42}}
    channels:
      - id: chirp-main
        type: social
        provider: chirp
        settings: {{api_base_url: "https://chirp.invalid"}}
        secrets: {{token: chirp-token}}
""",
    {},
)
CUSTOMER = {"channel": "social", "channel_id": "chirp-main", "address": "chirp-user-7"}


class ChirpAdapter(ChannelAdapter):
    """A made-up provider whose `send` records what it was asked to send; it fails the
    first attempt when told to, as a provider outage would."""

    name = "chirp"
    channel_types = (Channel.SOCIAL,)

    def __init__(self, *, fail_first: bool = False) -> None:
        self.sent: list[tuple[AdapterChannel, OutboundMessage]] = []
        self.fail_first = fail_first

    async def send(
        self, client: httpx.AsyncClient, channel: AdapterChannel, message: OutboundMessage
    ) -> DeliveryOutcome:
        self.sent.append((channel, message))
        if self.fail_first and len(self.sent) == 1:
            raise RuntimeError("chirp is down")
        return DeliveryOutcome.sent(f"chirp-{len(self.sent)}")


class AdapterDesk(DeskService):
    def __init__(self, adapter: ChannelAdapter) -> None:
        self.adapters = AdapterRegistry({adapter.name: adapter})

    def background(self) -> Sequence[Callable[[], Awaitable[None]]]:
        settings = {("acme", "chirp-main"): ChannelSettings()}
        return desk_background(self, adapters=self.adapters, channel_settings=settings)


@pytest.fixture
async def embedded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_for("embedded", request, tmp_path) as backend:
        yield backend


async def reply(hub: Any, text: str) -> str:
    await hub.publish(
        started("c-1", channel="social", channel_id="chirp-main", customer=CUSTOMER),
        received("c-1", "hello?", channel="social", channel_id="chirp-main", customer=CUSTOMER),
        assigned("c-1", "agent-42"),
    )
    await until(hub, "c-1", lambda c: c["assigned_agent_id"] == "agent-42", "assigned")
    response = await hub.client.post(
        "/v1/conversations/c-1/messages",
        json={"text": text},
        headers={"Idempotency-Key": "reply-1", **hub.auth(AGENT)},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["message_id"])


async def test_a_reply_goes_out_through_the_adapters_send(embedded: Any) -> None:
    adapter = ChirpAdapter()
    async with running_hub(embedded, [AdapterDesk(adapter)], CONFIG) as hub:
        message_id = await reply(hub, "Your parcel left the depot today")
        delivered = await hub.wait_for_events(
            "convohub.conversation.v1", of_type(DELIVERED, message_id)
        )
    assert delivered[0].data.provider_message_id == "chirp-1"
    ((channel, message),) = adapter.sent
    assert (channel.channel_id, channel.options["api_base_url"]) == (
        "chirp-main",
        "https://chirp.invalid",
    )
    assert channel.secrets == {"token": "chirp-token"}
    assert (message.message_id, message.conversation_id) == (message_id, "c-1")
    assert (message.recipient_address, message.text) == (
        "chirp-user-7",
        "Your parcel left the depot today",
    )


async def test_an_adapter_that_raises_is_retried_not_fatal(embedded: Any) -> None:
    adapter = ChirpAdapter(fail_first=True)
    config = CONFIG.model_copy(deep=True)
    config.tenants[0].channels[0].settings["delivery_backoff_seconds"] = 0.05
    async with running_hub(embedded, [AdapterDesk(adapter)], config) as hub:
        message_id = await reply(hub, "Sorry for the wait")
        await hub.wait_for_events("convohub.conversation.v1", of_type(DELIVERED, message_id))
        failed = [e for e in await hub.events("convohub.conversation.v1") if of_type(FAILED)(e)]

    async def two_attempts() -> bool:
        return len(adapter.sent) == 2

    await eventually(two_attempts, "a second attempt")
    assert [(f.data.error_code, f.data.retryable) for f in failed] == [("adapter_failed", True)]
