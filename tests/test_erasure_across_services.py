"""Erasure across the whole hub, on the embedded log and on Kafka with PostgreSQL: a
customer writes in over SMS and e-mail through ingest's real webhooks, an agent answers
the e-mail through the desk (so the outbound queue holds the address and the reply), an
admin erases them through crm, and every service applies the `erased` event. Afterwards
the phone number, e-mail address and message texts are in no service's database and in
no log line. A second test rebuilds every projection of every service from the log and
checks that nothing comes back (the erasure ledgers of crm and ingest survive the rebuild).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, table, text

from convohub.contracts.topics import CONVERSATION, CUSTOMER, TOPICS
from convohub.ingest.adapters.signatures import twilio_signature
from convohub.runtime.config import load_config
from convohub.runtime.metrics import RuntimeMetrics
from convohub.runtime.replay import replay
from convohub.runtime.service import (
    ServiceContext,
    SystemClock,
    available_services,
    load_service_factory,
)
from convohub.runtime.store import ProjectionStore
from tests.scenarios.backends import Backend
from tests.support.hub import BACKENDS, RunningHub, backend_for, eventually, running_hub

EXAMPLE = Path(__file__).resolve().parents[1] / "convohub.example.yaml"
ADMIN = "dev-acme-admin-key-0001"
SUPERVISOR = "dev-acme-supervisor-key-0001"
PHONE = "+14155550123"
EMAIL = "jane.doe@example.com"
SMS_TEXT = "my parcel 7Q4 never arrived, call me"
MAIL_TEXT = "The blender I bought in May is broken"
REPLY_TEXT = "Sorry about the blender, Jane: a new one ships today"
SECRETS = (
    "4155550123",
    EMAIL,
    "jane.doe",
    SMS_TEXT,
    MAIL_TEXT,
    "never arrived",
    "blender",
    "ships today",
)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with backend_for(request.param, request, tmp_path) as backend:
        yield backend


def services(config: Any) -> list[Any]:
    return [load_service_factory(name)(config) for name in sorted(available_services())]


async def sms(hub: RunningHub) -> None:
    params = [
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("AccountSid", "ACdevaccount"),
        ("From", PHONE),
        ("To", "+15005550006"),
        ("Body", SMS_TEXT),
        ("NumMedia", "0"),
    ]
    path = "/v1/webhooks/twilio/sms-main"
    signature = twilio_signature("dev-sms-auth-token", "http://127.0.0.1:8080" + path, params)
    response = await hub.client.post(
        path, data=dict(params), headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 200, response.text


async def mail(hub: RunningHub) -> None:
    message = EmailMessage()
    message["From"] = f"Jane Doe <{EMAIL}>"
    message["To"] = "support@acme.example"
    message["Subject"] = "Broken blender"
    message["Message-ID"] = "<first-mail@example.com>"
    message.set_content(MAIL_TEXT)
    body = message.as_bytes()
    digest = hmac.new(b"dev-email-signing-secret", body, hashlib.sha256).hexdigest()
    response = await hub.client.post(
        "/v1/webhooks/email/email-support",
        content=body,
        headers={"Content-Type": "message/rfc822", "X-ConvoHub-Signature-256": f"sha256={digest}"},
    )
    assert response.status_code in (200, 202), response.text


async def reply_to_the_mail(hub: RunningHub) -> None:
    """An agent answers the e-mail conversation (the outbound queue then holds the
    customer's address and the reply; the SMTP send fails here and is retried)."""

    async def conversation() -> str | None:
        response = await hub.client.get(
            "/v1/conversations", params={"channel": "email"}, headers=hub.auth(SUPERVISOR)
        )
        items = response.json()["items"] if response.status_code == 200 else []
        return items[0]["conversation_id"] if items else None

    conversation_id = await eventually(conversation, "the desk to show the e-mail conversation")
    response = await hub.client.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"text": REPLY_TEXT},
        headers=hub.auth(SUPERVISOR),
    )
    assert response.status_code == 202, response.text
    await hub.wait_for_events(
        CONVERSATION.name, lambda e: e.type == "convohub.conversation.message_sent.v1"
    )


async def customer_of(hub: RunningHub, identifier: str) -> str:
    async def found() -> str | None:
        response = await hub.client.get(
            "/v1/customers/lookup", params={"identifier": identifier}, headers=hub.auth(ADMIN)
        )
        return response.json()["customer_id"] if response.status_code == 200 else None

    return await eventually(found, f"crm to know {identifier}")


async def caught_up(hub: RunningHub) -> bool:
    """Every consumer group of every service has applied everything on its topics."""
    names = [topic.name for topic in TOPICS]
    ends = await hub.bus.end_offsets(names)
    for service in hub.host.services:
        store: ProjectionStore = hub.host.stores[service.name]
        for projection in service.projections():
            positions = await store.positions(projection.name)
            for (topic, partition), end in ends.items():
                if (
                    topic in projection.topics
                    and end
                    and positions.get((topic, partition), 0) < end
                ):
                    return False
    return True


async def leaks(backend: Backend, config: Any) -> list[str]:
    """Every (service, table, secret) where a secret is still stored: every row of every
    table of every service's database (SQLite files or PostgreSQL databases). The log
    itself is immutable; erasure is about the projections."""
    found = []
    for service in services(config):
        store = await backend.store(service.name)
        async with store.engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            for name in names:
                for row in await connection.execute(select(text("*")).select_from(table(name))):
                    values = " ".join(
                        value.decode(errors="ignore") if isinstance(value, bytes) else str(value)
                        for value in row
                    )
                    found += [f"{service.name}:{name}: {s}" for s in SECRETS if s in values]
    return sorted(set(found))


async def write_in_and_erase(backend: Backend, config: Any) -> None:
    """The customer writes over SMS and e-mail; an admin erases them; every service applies it."""
    async with running_hub(backend, services(config), config) as hub:
        await sms(hub)
        await mail(hub)
        await reply_to_the_mail(hub)
        customers = {await customer_of(hub, PHONE), await customer_of(hub, EMAIL)}
        await eventually(lambda: caught_up(hub), "every service to apply the messages")
        before = " ".join(await leaks(backend, config))
        for table in ("crm_timeline", "ingest_outbound_threads", "ingest_outbound_deliveries"):
            assert table in before, f"the test must see the data in {table} before the erasure"

        for customer_id in customers:
            response = await hub.client.post(
                f"/v1/customers/{customer_id}/erase", headers=hub.auth(ADMIN)
            )
            assert response.status_code == 202, response.text
        await hub.wait_for_events(
            CUSTOMER.name, lambda e: e.type == "convohub.customer.erased.v1", count=len(customers)
        )
        await eventually(lambda: caught_up(hub), "every service to apply the erasure")


def assert_forgotten_and_never_logged(found: list[str], output: Any) -> None:
    assert found == [], "the live projections still hold personal data"
    for secret in SECRETS:
        assert secret not in output.out + output.err, f"a log line carries {secret!r}"


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_after_erasure_no_service_keeps_the_person_nor_logs_it(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(EXAMPLE, dict(os.environ))
    await write_in_and_erase(backend, config)
    assert_forgotten_and_never_logged(await leaks(backend, config), capsys.readouterr())


async def test_after_erasure_a_full_replay_of_every_service_brings_nothing_back(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both modes (on Kafka and PostgreSQL this is also the live check of the test above)."""
    config = load_config(EXAMPLE, dict(os.environ))
    await write_in_and_erase(backend, config)
    assert_forgotten_and_never_logged(await leaks(backend, config), capsys.readouterr())
    # The full replay an operator runs with `convohub replay NAME`, for every projection
    # of every service: its tables dropped, recreated and rebuilt from the start of the log.
    bus = await backend.bus()
    for service in services(config):
        store = await backend.store(service.name)
        service.context = ServiceContext(
            service.name, config, bus, store, RuntimeMetrics(), SystemClock()
        )
        for projection in service.projections():
            result = await replay(bus, store, projection)
            assert result.records > 0, projection.name
    assert await leaks(backend, config) == [], "a rebuilt projection brought personal data back"
