"""The channel adapter conformance kit: the tests every channel adapter must pass.

It is a pytest plugin (registered as `convohub_channels` under `pytest11`, so installing
convohub-ingest makes it available) and a base class. A third-party adapter package
subclasses it in its own tests and says how to build and sign one provider request:

    from convohub.ingest.conformance import ChannelAdapterConformance, KitRequest

    class TestLineConformance(ChannelAdapterConformance):
        adapter_name = "line"                   # the convohub.channels entry point
        channel_type = Channel.SOCIAL
        secrets = {"channel_secret": "kit-secret"}

        def message(self, message_id: str) -> KitRequest:   # unsigned, provider id = message_id
            ...

        def sign(self, request: KitRequest, url: str, secrets: Mapping[str, str]) -> KitRequest:
            ...

Every test starts the real ingest service in process (embedded log, SQLite in a temporary
folder) with the adapter as installed (found through its entry point, not imported by the
kit) and posts to `POST /v1/webhooks/{adapter_name}/{channel_id}`. The kit proves:

- the adapter is installed under its name and serves the configured channel;
- a correctly signed request gets 2xx, and only then are its events on the log;
- a tampered body, a missing signature and a signature made with another secret get 401 or
  403 as `application/problem+json`, and put nothing on the log;
- a signed but malformed body gets a 4xx, never a 5xx, and puts nothing on the log;
- the same provider message delivered twice, then four times at once, yields exactly one
  `message_received` event and no event id twice;
- every event validates against the contracts (the envelope and payload models, and the
  committed JSON Schema when `jsonschema` is installed), carries the channel's tenant, and
  names the channel.

The tests are synchronous (each runs its own event loop), so the adapter package needs no
asyncio plugin for pytest.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["ChannelAdapterConformance", "KitRequest", "pytest_configure"]

TENANT = "kit"
CHANNEL_ID = "kit-channel"
BASE_URL = "http://testserver"


def pytest_configure(config: Any) -> None:
    """Register the marker the kit's tests carry (`-m channel_conformance` selects them)."""
    config.addinivalue_line(
        "markers", "channel_conformance: a test of the channel adapter conformance kit"
    )


@dataclass(frozen=True)
class KitRequest:
    """One provider request: its body and headers (the signature among them, once signed)."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Ingest:
    client: Any
    bus: Any

    async def events(self) -> list[Any]:
        """Every event on the log so far (all topics), decoded and validated."""
        from convohub.contracts import TOPICS, from_kafka_record

        found = []
        for topic in TOPICS:
            for partition in range(await self.bus.partitions(topic.name)):
                offset = 0
                while records := await self.bus.read(topic.name, partition, offset):
                    for record in records:
                        if record.value is not None:
                            found.append(from_kafka_record(record.value, record.headers))
                    offset = records[-1].offset + 1
        return found


class ChannelAdapterConformance:
    """Subclass as `Test...` and set `adapter_name`, `channel_type`, `secrets`; implement
    `message` and `sign` (and `tamper` when the default does not change a signed part)."""

    adapter_name: ClassVar[str] = ""
    channel_type: ClassVar[Any] = None  # a convohub.contracts Channel; SOCIAL when unset
    secrets: ClassVar[Mapping[str, str]] = {}
    settings: ClassVar[Mapping[str, Any]] = {}
    """Extra `settings:` of the channel in the kit's convohub.yaml."""

    # --- what the adapter package provides ------------------------------------------------

    def message(self, message_id: str) -> KitRequest:
        """An unsigned request carrying one customer text message whose provider message id
        is `message_id`, in the provider's documented format."""
        raise NotImplementedError("return the provider's request for one customer message")

    def sign(self, request: KitRequest, url: str, secrets: Mapping[str, str]) -> KitRequest:
        """`request` signed as the provider signs it for `url`, with `secrets`."""
        raise NotImplementedError("sign the request as the provider does")

    def tamper(self, request: KitRequest, message_id: str) -> KitRequest:
        """A signed request changed after signing. The default changes the message id in
        the body (or appends a byte when the body does not contain it)."""
        original = message_id.encode()
        if original in request.body:
            forged = original[:-1] + (b"Y" if original.endswith(b"X") else b"X")
            return replace(request, body=request.body.replace(original, forged))
        return replace(request, body=request.body + b" ")

    def malformed(self) -> KitRequest:
        """An unsigned request the provider would never send (the kit signs it)."""
        sample = self.message("kit-malformed")
        return replace(sample, body=b"\x00 this is not a provider payload \xff")

    # --- the kit's plumbing -----------------------------------------------------------------

    def _url(self) -> str:
        return f"{BASE_URL}/v1/webhooks/{self.adapter_name}/{CHANNEL_ID}"

    def _path(self) -> str:
        return f"/v1/webhooks/{self.adapter_name}/{CHANNEL_ID}"

    def _channel_type(self) -> Any:
        from convohub.contracts.events.common import Channel

        return Channel(self.channel_type or Channel.SOCIAL)

    def _config(self) -> Any:
        from convohub.runtime.config import HubConfig

        return HubConfig.model_validate(
            {
                "tenants": [
                    {
                        "id": TENANT,
                        "name": "Conformance kit",
                        "channels": [
                            {
                                "id": CHANNEL_ID,
                                "type": self._channel_type().value,
                                "provider": self.adapter_name,
                                "settings": {
                                    "rate_per_second": 10_000,
                                    "rate_burst": 10_000,
                                    **self.settings,
                                },
                                "secrets": dict(self.secrets),
                            }
                        ],
                    }
                ]
            }
        )

    @asynccontextmanager
    async def _ingest(self) -> AsyncIterator[_Ingest]:
        import httpx

        from convohub.contracts import TOPICS
        from convohub.ingest.bootstrap import create_service
        from convohub.runtime.app import create_service_app
        from convohub.runtime.bus.embedded import EmbeddedBus
        from convohub.runtime.service import ServiceHost
        from convohub.runtime.store import ProjectionStore, create_engine, migrate_runtime

        config = self._config()
        with tempfile.TemporaryDirectory(prefix="convohub-kit-") as folder:
            bus = EmbeddedBus(Path(folder) / "log.sqlite3")
            await bus.start()
            for topic in TOPICS:
                await bus.create_topic(topic.name, topic.partitions)
            stores: list[Any] = []

            async def open_store(name: str) -> Any:
                store = ProjectionStore(create_engine(f"sqlite+aiosqlite:///{folder}/{name}.db"))
                await migrate_runtime(store.engine)
                stores.append(store)
                return store

            host = ServiceHost(
                [create_service(config)], config=config, bus=bus, open_store=open_store
            )
            app = create_service_app(host, manage_bus=False)
            await host.start()
            try:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                    yield _Ingest(client=client, bus=bus)
            finally:
                await host.stop()
                for store in stores:
                    await store.engine.dispose()
                await bus.stop()

    def _run(self, scenario: Any) -> None:
        async def body() -> None:
            async with self._ingest() as ingest:
                await scenario(ingest)

        asyncio.run(body())

    def _signed(self, request: KitRequest, secrets: Mapping[str, str] | None = None) -> KitRequest:
        return self.sign(request, self._url(), dict(self.secrets if secrets is None else secrets))

    async def _post(self, ingest: _Ingest, request: KitRequest) -> Any:
        return await ingest.client.post(
            self._path(), content=request.body, headers=dict(request.headers)
        )

    def _assert_refused(self, response: Any, statuses: set[int], what: str) -> None:
        assert response.status_code in statuses, (
            f"{what}: expected {sorted(statuses)}, got {response.status_code}: {response.text}"
        )
        content_type = response.headers.get("content-type", "")
        assert content_type.startswith("application/problem+json"), (
            f"{what}: the refusal is not application/problem+json ({content_type})"
        )
        code = response.json().get("code") or response.json().get("type", "")
        assert not str(code).endswith("adapter_failed"), (
            f"{what}: the adapter raised an unexpected exception (ingest logged it); raise "
            "SignatureMissing, SignatureInvalid, PayloadError or RequestRejected instead"
        )

    # --- the tests ----------------------------------------------------------------------------

    def test_adapter_is_installed_under_its_name(self) -> None:
        from convohub.ingest.sdk import ENTRY_POINT_GROUP, ChannelAdapter, load_adapters

        assert self.adapter_name, "set adapter_name to the adapter's entry point name"
        registry = load_adapters()
        assert self.adapter_name not in registry.errors, registry.errors[self.adapter_name]
        adapter = registry.adapters.get(self.adapter_name)
        assert adapter is not None, (
            f"no {ENTRY_POINT_GROUP!r} entry point named {self.adapter_name!r} is installed "
            f"(installed: {sorted(registry.adapters)})"
        )
        assert isinstance(adapter, ChannelAdapter)
        assert registry.for_channel(self._channel_type(), self.adapter_name) is adapter, (
            f"adapter {self.adapter_name!r} does not serve a {self._channel_type().value} "
            f"channel whose provider is {self.adapter_name!r}"
        )

    def test_signed_message_is_accepted_and_on_the_log(self) -> None:
        async def scenario(ingest: _Ingest) -> None:
            message_id = f"kit-{uuid.uuid4().hex[:12]}"
            response = await self._post(ingest, self._signed(self.message(message_id)))
            assert 200 <= response.status_code < 300, (
                f"a correctly signed request got {response.status_code}: {response.text}"
            )
            received = _received(await ingest.events(), message_id)
            assert len(received) == 1, (
                f"expected one message_received with provider_message_id {message_id!r} once "
                f"the webhook answered, found {len(received)}: does the adapter parse the "
                "provider's message id?"
            )

        self._run(scenario)

    def test_tampered_unsigned_and_wrongly_signed_requests_are_refused(self) -> None:
        async def scenario(ingest: _Ingest) -> None:
            message_id = f"kit-{uuid.uuid4().hex[:12]}"
            unsigned = self.message(message_id)
            wrong_secrets = {name: value + "-wrong" for name, value in self.secrets.items()}
            cases = {
                "a body changed after signing": self.tamper(self._signed(unsigned), message_id),
                "a request without a signature": unsigned,
                "a request signed with another secret": self._signed(unsigned, wrong_secrets),
            }
            for what, request in cases.items():
                self._assert_refused(await self._post(ingest, request), {401, 403}, what)
            assert await ingest.events() == [], "a refused request put events on the log"

        self._run(scenario)

    def test_malformed_signed_body_gets_4xx_and_no_event(self) -> None:
        async def scenario(ingest: _Ingest) -> None:
            response = await self._post(ingest, self._signed(self.malformed()))
            self._assert_refused(response, set(range(400, 500)), "a malformed signed body")
            assert await ingest.events() == [], "a malformed request put events on the log"

        self._run(scenario)

    def test_the_same_provider_message_yields_one_event(self) -> None:
        async def scenario(ingest: _Ingest) -> None:
            sequential = f"kit-{uuid.uuid4().hex[:12]}"
            request = self._signed(self.message(sequential))
            first, again = [await self._post(ingest, request) for _ in range(2)]
            assert 200 <= first.status_code < 300, first.text
            assert 200 <= again.status_code < 300, f"a provider retry got {again.status_code}"
            concurrent = f"kit-{uuid.uuid4().hex[:12]}"
            request = self._signed(self.message(concurrent))
            answers = await asyncio.gather(*(self._post(ingest, request) for _ in range(4)))
            assert all(200 <= answer.status_code < 300 for answer in answers), [
                answer.status_code for answer in answers
            ]
            events = await ingest.events()
            for message_id in (sequential, concurrent):
                count = len(_received(events, message_id))
                assert count == 1, f"provider message {message_id!r} became {count} events"
            ids = [event.id for event in events]
            assert len(ids) == len(set(ids)), "an event id is on the log twice"

        self._run(scenario)

    def test_every_event_validates_against_the_contracts(self) -> None:
        async def scenario(ingest: _Ingest) -> None:
            for _ in range(2):
                message_id = f"kit-{uuid.uuid4().hex[:12]}"
                response = await self._post(ingest, self._signed(self.message(message_id)))
                assert 200 <= response.status_code < 300, response.text
            events = await ingest.events()  # decoding validates envelope and payload
            assert events, "no events on the log"
            validate = _json_schema_validator()
            for event in events:
                assert event.tenantid == TENANT, f"{event.type} carries tenant {event.tenantid}"
                channel_id = getattr(event.data, "channel_id", CHANNEL_ID)
                assert channel_id == CHANNEL_ID, f"{event.type} names channel {channel_id!r}"
                if validate is not None:
                    validate(event)

        self._run(scenario)

    def test_an_unknown_channel_is_404(self) -> None:
        async def scenario(ingest: _Ingest) -> None:
            request = self._signed(self.message("kit-unknown"))
            response = await ingest.client.post(
                f"/v1/webhooks/{self.adapter_name}/no-such-channel",
                content=request.body,
                headers=dict(request.headers),
            )
            self._assert_refused(response, {404}, "a request for an unknown channel")

        self._run(scenario)


def _received(events: list[Any], provider_message_id: str) -> list[Any]:
    return [
        event
        for event in events
        if event.type == "convohub.conversation.message_received.v1"
        and event.data.provider_message_id == provider_message_id
    ]


def _json_schema_validator() -> Any:
    """Validates an event against its committed JSON Schema (None without `jsonschema`)."""
    try:
        import jsonschema
    except ImportError:
        return None
    from convohub.contracts import encode_event
    from convohub.contracts.schemas import event_schema

    def validate(event: Any) -> None:
        jsonschema.validate(json.loads(encode_event(event)), event_schema(event.type))

    return validate
