"""CRM as a user sees it: over HTTP and through the log, on the embedded log and on Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import column, inspect, select, table

from convohub.contracts import from_kafka_record, new_event
from convohub.contracts.catalogue import payload_class
from convohub.contracts.topics import CUSTOMER, CUSTOMER_PROFILE
from convohub.crm.bootstrap import create_service
from convohub.runtime.bus.compacted import latest_by_key, live_values
from convohub.runtime.bus.partitioning import partition_for
from convohub.runtime.config import parse_config
from convohub.runtime.replay import replay
from tests.support.hub import BACKENDS, RunningHub, backend_for, eventually, running_hub

AGENT = "crm-agent-key-0123456789"
SUPERVISOR = "crm-supervisor-key-0123456789"
ADMIN = "crm-admin-key-0123456789"
OTHER = "crm-other-admin-key-0123456789"
CONFIG = parse_config(
    f"""
tenants:
  - id: acme
    name: Acme
    api_keys:
      - {{key: {AGENT}, role: agent, agent_id: agent-1}}
      - {{key: {SUPERVISOR}, role: supervisor, agent_id: sup-1}}
      - {{key: {ADMIN}, role: admin, agent_id: admin-1}}
    crm:
      default_region: US
      attributes: {{orders_last_year: integer, city: string}}
      segments:
        - id: vip
          rules:
            - {{id: vip-gold, tier_in: [gold, platinum]}}
            - {{id: vip-ltv, lifetime_value_above: "10000"}}
  - id: globex
    name: Globex
    api_keys:
      - {{key: {OTHER}, role: admin}}
""",
    {},
)
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PHONE = "+14155550100"
EMAIL = "zhang.san@example.com"
SECRET_TEXT = "my order 4711 never arrived"


def conversation_event(kind: str, tenant: str = "acme", minute: int = 0, **data: Any) -> Any:
    at = (START + timedelta(minutes=minute)).isoformat()
    event_type = f"convohub.conversation.{kind}.v1"
    payload = payload_class(event_type).model_validate(
        {
            "started_at": at,
            "received_at": at,
            "sent_at": at,
            "switched_at": at,
            "resolved_at": at,
            **data,
        }
    )
    return new_event(
        payload, tenant_id=tenant, source="/test", time=START + timedelta(minutes=minute)
    )


def identity(channel: str, channel_id: str, address: str, name: str | None = None) -> dict:
    return {"channel": channel, "channel_id": channel_id, "address": address, "display_name": name}


def started(conv: str, ident: dict, minute: int = 0, tenant: str = "acme") -> Any:
    return conversation_event(
        "started",
        tenant,
        minute,
        conversation_id=conv,
        channel=ident["channel"],
        channel_id=ident["channel_id"],
        customer=ident,
    )


def received(conv: str, ident: dict, text: str, minute: int = 0, tenant: str = "acme") -> Any:
    return conversation_event(
        "message_received",
        tenant,
        minute,
        conversation_id=conv,
        message_id=f"{conv}-m{minute}",
        channel=ident["channel"],
        channel_id=ident["channel_id"],
        provider_message_id=f"p-{conv}-{minute}",
        customer=ident,
        content={"text": text},
    )


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_for(request.param, request, tmp_path) as backend:
        yield backend


@pytest.fixture
async def embedded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_for("embedded", request, tmp_path) as backend:
        yield backend


async def get_ok(hub: RunningHub, path: str, key: str = AGENT, **params: Any) -> Any:
    response = await hub.client.get(path, headers=hub.auth(key), params=params)
    return response.json() if response.status_code == 200 else None


async def lookup(hub: RunningHub, identifier: str, key: str = AGENT) -> Any:
    async def found() -> Any:
        return await get_ok(hub, "/v1/customers/lookup", key, identifier=identifier)

    return await eventually(found, f"customer with {identifier}")


async def wait_for_keyed(
    hub: RunningHub, topic: str, key: str, match: Callable[[Any], bool], count: int = 1
) -> list[Any]:
    """Events with partition key `key` on `topic` that satisfy `match` (reads only the
    key's partition, which keeps the Kafka mode quick)."""
    partition = partition_for(key.encode(), await hub.bus.partitions(topic))

    async def matching() -> list[Any] | None:
        found, offset = [], 0
        while records := await hub.bus.read(topic, partition, offset):
            found += [
                from_kafka_record(record.value, record.headers)
                for record in records
                if record.value is not None  # a tombstone
            ]
            offset = records[-1].offset + 1
        hits = [event for event in found if event.partitionkey == key and match(event)]
        return hits if len(hits) >= count else None

    return await eventually(matching, f"{count} event(s) keyed {key} on {topic}")


def without_versions(views: list[Any]) -> list[Any]:
    return [
        (status, {k: v for k, v in view.items() if k != "version"}, timeline)
        for status, view, timeline in views
    ]


async def scan_database(hub: RunningHub, needles: list[str]) -> list[str]:
    """Every (table.column) of CRM's database holding any of `needles`, text or bytes."""
    engine = hub.host.stores["crm"].engine
    hits = []
    async with engine.connect() as connection:
        tables = await connection.run_sync(
            lambda sync: {
                name: inspect(sync).get_columns(name) for name in inspect(sync).get_table_names()
            }
        )
        for name, columns in tables.items():
            wanted = [c["name"] for c in columns]
            rows = await connection.execute(
                select(*(column(c) for c in wanted)).select_from(table(name))
            )
            for row in rows:
                for column_name, value in zip(wanted, row, strict=True):
                    text = (
                        value.decode(errors="replace") if isinstance(value, bytes) else str(value)
                    )
                    for needle in needles:
                        if needle in text:
                            hits.append(f"{name}.{column_name}")
    return sorted(set(hits))


async def test_one_customer_across_channels_merges_segments_and_erasure(
    backend: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_hub(backend, [create_service(CONFIG)], CONFIG) as hub:
        sms = identity("sms", "sms-main", "+1 (415) 555-0100", "Zhang San")
        whatsapp = identity("whatsapp", "wa-main", "14155550100")
        await hub.publish(
            started("conv-1", sms, 0),
            received("conv-1", sms, SECRET_TEXT, 1),
            started("conv-2", whatsapp, 10),
            received("conv-2", whatsapp, "hello again", 11),
        )
        # The same E.164 number on SMS and WhatsApp is one customer.
        by_phone = await lookup(hub, "(415) 555-0100")
        customer_id = by_phone["customer_id"]
        by_whatsapp = await lookup(hub, "14155550100")
        assert by_whatsapp["customer_id"] == customer_id
        kinds = {(i["kind"], i["value"]) for i in by_phone["identifiers"]}
        assert kinds == {("phone", PHONE), ("whatsapp_id", "14155550100")}
        assert by_phone["display_name"] == "Zhang San"
        identified = await wait_for_keyed(
            hub, CUSTOMER.name, customer_id, lambda e: e.type.endswith(".identified.v1"), count=2
        )
        assert {e.data.identifier.kind for e in identified} == {"phone", "whatsapp_id"}

        # The timeline holds both conversations, in pages.
        async def full_timeline() -> Any:
            page = await get_ok(hub, f"/v1/customers/{customer_id}/timeline", limit=3)
            return page if page and page["next_cursor"] else None

        first = await eventually(full_timeline, "a first timeline page")
        second = await get_ok(
            hub, f"/v1/customers/{customer_id}/timeline", limit=3, cursor=first["next_cursor"]
        )
        entries = first["entries"] + second["entries"]
        assert second["next_cursor"] is None
        assert [e["kind"] for e in entries] == ["conversation_started", "message"] * 2
        assert {e["conversation_id"] for e in entries} == {"conv-1", "conv-2"}
        assert entries[1]["text"] == SECRET_TEXT

        # Attributes make a VIP; the router hears of it.
        patched = await hub.client.patch(
            f"/v1/customers/{customer_id}",
            headers=hub.auth(SUPERVISOR),
            json={"tier": "gold", "attributes": {"orders_last_year": 14}},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["segments"] == ["vip"]
        entered = await wait_for_keyed(
            hub, CUSTOMER.name, customer_id, lambda e: e.type.endswith(".segment_entered.v1")
        )
        assert entered[0].data.segment_id == "vip"
        assert entered[0].data.rule_id == "vip-gold"

        # Near match: same name, similar e-mail: proposed, not merged; a supervisor approves.
        email_a = identity("email", "mail", EMAIL, "Zhang San")
        email_b = identity("email", "mail", "Zhang.Sam@Example.com", "zhang  san")
        await hub.publish(started("conv-3", email_a, 20))
        first_email = await lookup(hub, EMAIL)
        await hub.publish(started("conv-4", email_b, 21))
        second_email = await lookup(hub, "zhang.sam@example.com")
        assert second_email["customer_id"] != first_email["customer_id"]
        proposed = await wait_for_keyed(
            hub,
            CUSTOMER.name,
            second_email["customer_id"],
            lambda e: e.type.endswith(".merge_proposed.v1"),
        )
        assert proposed[0].data.candidate_customer_ids == [first_email["customer_id"]]
        merged = await hub.client.post(
            "/v1/customers/merges",
            headers=hub.auth(SUPERVISOR),
            json={"proposal_id": proposed[0].data.proposal_id},
        )
        assert merged.status_code == 201, merged.text
        merge_id = merged.json()["merge_id"]
        survivor = merged.json()["customer_id"]
        redirected = await get_ok(hub, f"/v1/customers/{merged.json()['merged_customer_id']}")
        assert redirected["customer_id"] == survivor
        undone = await hub.client.post(
            f"/v1/customers/merges/{merge_id}/undo", headers=hub.auth(SUPERVISOR), json={}
        )
        assert undone.status_code == 200, undone.text
        assert (await lookup(hub, EMAIL))["customer_id"] == first_email["customer_id"]
        assert (await lookup(hub, "zhang.sam@example.com"))["customer_id"] == second_email[
            "customer_id"
        ]

        # Erasure: admin only; then no trace of the person in CRM's database.
        needles = [PHONE, "4155550100", SECRET_TEXT, "hello again"]
        assert "crm_identifiers.value" in await scan_database(hub, needles)
        assert "crm_timeline.text" in await scan_database(hub, needles)
        refused = await hub.client.post(
            f"/v1/customers/{customer_id}/erase", headers=hub.auth(SUPERVISOR)
        )
        assert refused.status_code == 403
        erased = await hub.client.post(
            f"/v1/customers/{customer_id}/erase", headers=hub.auth(ADMIN)
        )
        assert erased.status_code == 202, erased.text
        assert erased.json()["requested_by"] == "admin-1"
        audit = await wait_for_keyed(
            hub, CUSTOMER.name, customer_id, lambda e: e.type.endswith(".erasure_requested.v1")
        )
        assert audit[0].data.requested_by == "admin-1"
        await wait_for_keyed(
            hub, CUSTOMER.name, customer_id, lambda e: e.type.endswith(".erased.v1")
        )
        snapshots = await wait_for_keyed(
            hub, CUSTOMER_PROFILE.name, customer_id, lambda e: e.data.status == "erased"
        )
        assert snapshots[-1].data.identifiers == []

        # The compacted topic's latest record for the person's key is a tombstone (a null
        # value), so compaction deletes every snapshot of them; BI readers see it too.
        async def tombstoned() -> bool:
            latest = await latest_by_key(hub.bus, CUSTOMER_PROFILE.name)
            record = latest.get(customer_id.encode())
            return record is not None and record.value is None

        await eventually(tombstoned, "a tombstone for the erased customer's key")
        assert customer_id.encode() not in await live_values(hub.bus, CUSTOMER_PROFILE.name)
        gone = await hub.client.get(f"/v1/customers/{customer_id}", headers=hub.auth(AGENT))
        assert gone.status_code == 404
        assert await scan_database(hub, needles) == []

        # The service keeps working.
        await hub.publish(received("conv-5", sms, "a new start", 30))
        again = await lookup(hub, PHONE)
        assert again["customer_id"] != customer_id

    logs = capsys.readouterr()
    assert "services started" in logs.out  # the log lines are captured here
    for needle in [*needles, EMAIL, "zhang.sam@example.com"]:
        assert needle not in logs.out + logs.err


async def test_bad_input_and_roles(embedded: Any) -> None:
    async with running_hub(embedded, [create_service(CONFIG)], CONFIG) as hub:
        await hub.publish(started("conv-1", identity("sms", "sms", "+14155550100"), 0))
        customer_id = (await lookup(hub, PHONE))["customer_id"]
        path = f"/v1/customers/{customer_id}"
        cases = [
            ({"attributes": {"orders_last_year": "many"}}, "body.attributes.orders_last_year"),
            ({"attributes": {"shoe_size": 42}}, "body.attributes.shoe_size"),
            ({"tier": "diamond"}, "body.tier"),
            ({"lifetime_value": "a lot"}, "body.lifetime_value"),
        ]
        for body, field in cases:
            response = await hub.client.patch(path, headers=hub.auth(SUPERVISOR), json=body)
            assert response.status_code == 422, body
            assert response.headers["content-type"] == "application/problem+json"
            assert field in [error["field"] for error in response.json()["errors"]]
        bad_email = await hub.client.post(
            f"{path}/identifiers",
            headers=hub.auth(SUPERVISOR),
            json={"kind": "email", "value": "not-an-address"},
        )
        assert bad_email.status_code == 422
        assert bad_email.json()["errors"][0]["field"] == "body.value"
        await hub.publish(started("conv-2", identity("email", "mail", EMAIL), 2))
        await lookup(hub, EMAIL)
        unverified = await hub.client.post(
            f"{path}/identifiers",
            headers=hub.auth(SUPERVISOR),
            json={"kind": "email", "value": EMAIL, "verified": False},
        )
        assert unverified.status_code == 409
        agent_patch = await hub.client.patch(path, headers=hub.auth(AGENT), json={"tier": "gold"})
        assert agent_patch.status_code == 403
        view = await get_ok(hub, path)
        assert view["tier"] is None
        assert view["attributes"] == {}
        bad_cursor = await hub.client.get(
            f"{path}/timeline", headers=hub.auth(AGENT), params={"cursor": "nonsense!"}
        )
        assert bad_cursor.status_code == 422
        same = await hub.client.post(
            "/v1/customers/merges",
            headers=hub.auth(SUPERVISOR),
            json={"survivor_id": customer_id, "merged_id": customer_id},
        )
        assert same.status_code == 409


async def test_no_api_returns_another_tenants_customer(embedded: Any) -> None:
    async with running_hub(embedded, [create_service(CONFIG)], CONFIG) as hub:
        await hub.publish(
            started("conv-1", identity("sms", "sms", PHONE, "Zhang San"), 0),
            received("conv-1", identity("sms", "sms", PHONE), SECRET_TEXT, 1),
            started("conv-2", identity("email", "mail", EMAIL), 2),
        )
        mine = (await lookup(hub, PHONE))["customer_id"]
        other_mine = (await lookup(hub, EMAIL))["customer_id"]
        merged = await hub.client.post(
            "/v1/customers/merges",
            headers=hub.auth(SUPERVISOR),
            json={"survivor_id": mine, "merged_id": other_mine},
        )
        assert merged.status_code == 201, merged.text
        merge_id = merged.json()["merge_id"]
        as_other = hub.auth(OTHER)
        attempts = [
            hub.client.get(f"/v1/customers/{mine}", headers=as_other),
            hub.client.get(f"/v1/customers/{other_mine}", headers=as_other),
            hub.client.get(f"/v1/customers/{mine}/timeline", headers=as_other),
            hub.client.get("/v1/customers/lookup", headers=as_other, params={"identifier": PHONE}),
            hub.client.get("/v1/customers/lookup", headers=as_other, params={"identifier": EMAIL}),
            hub.client.patch(f"/v1/customers/{mine}", headers=as_other, json={"tags_add": ["x"]}),
            hub.client.post(
                "/v1/customers/merges",
                headers=as_other,
                json={"survivor_id": mine, "merged_id": other_mine},
            ),
            hub.client.post(f"/v1/customers/merges/{merge_id}/undo", headers=as_other, json={}),
            hub.client.post(f"/v1/customers/{mine}/erase", headers=as_other),
            hub.client.post(
                f"/v1/customers/{mine}/identifiers",
                headers=as_other,
                json={"kind": "external_id", "value": "x-1"},
            ),
            hub.client.get(
                "/v1/customers/lookup",
                headers=as_other,
                params={"identifier": PHONE, "kind": "phone"},
            ),
        ]
        for attempt in attempts:
            response = await attempt
            assert response.status_code == 404, (response.request.url, response.text)
            assert SECRET_TEXT not in response.text
            assert PHONE not in response.text
        proposals = await hub.client.get("/v1/customers/merge-proposals", headers=as_other)
        assert proposals.json() == {"proposals": []}
        # ...and the owner still has everything.
        view = await get_ok(hub, f"/v1/customers/{mine}")
        assert view["tags"] == []
        assert {i["value"] for i in view["identifiers"]} == {PHONE, EMAIL}


async def test_a_replay_rebuilds_the_live_state_and_keeps_the_erased_person_away(
    embedded: Any,
) -> None:
    service = create_service(CONFIG)
    async with running_hub(embedded, [service], CONFIG) as hub:
        await hub.publish(
            started("conv-1", identity("sms", "sms", PHONE, "Zhang San"), 0),
            received("conv-1", identity("sms", "sms", PHONE), SECRET_TEXT, 1),
            started("conv-2", identity("email", "mail", EMAIL, "Zhang San"), 2),
            started("conv-3", identity("web_chat", "web", "visitor-9", "Li Lei"), 3),
            started("conv-4", identity("sms", "sms", "+14155550199", "Han Meimei"), 4),
            received("conv-4", identity("sms", "sms", "+14155550199"), "erase me please", 5),
        )
        phone_customer = (await lookup(hub, PHONE))["customer_id"]
        email_customer = (await lookup(hub, EMAIL))["customer_id"]
        visitor = (await lookup(hub, "visitor-9"))["customer_id"]
        leaving = (await lookup(hub, "+14155550199"))["customer_id"]
        supervisor = hub.auth(SUPERVISOR)
        for body in (
            {"tier": "gold", "attributes": {"city": "上海"}, "tags_add": ["repeat"]},
            {"lifetime_value": "99.50", "lifetime_value_currency": "CNY"},
        ):
            patched = await hub.client.patch(
                f"/v1/customers/{phone_customer}", headers=supervisor, json=body
            )
            assert patched.status_code == 200, patched.text
        # The integrator's own id joins; its verified e-mail merges the e-mail customer.
        for body in (
            {"kind": "external_id", "value": "CRM-0042"},
            {"kind": "email", "value": EMAIL.upper()},
        ):
            added = await hub.client.post(
                f"/v1/customers/{phone_customer}/identifiers", headers=supervisor, json=body
            )
            assert added.status_code == 200, added.text
        values = {i["value"] for i in added.json()["identifiers"]}
        assert values == {PHONE, EMAIL, "CRM-0042"}
        assert added.json()["merged_customer_ids"] == [email_customer]
        wrong = await hub.client.post(
            "/v1/customers/merges",
            headers=supervisor,
            json={"survivor_id": visitor, "merged_id": leaving},
        )
        undone = await hub.client.post(
            f"/v1/customers/merges/{wrong.json()['merge_id']}/undo", headers=supervisor, json={}
        )
        assert undone.status_code == 200, undone.text
        erased = await hub.client.post(f"/v1/customers/{leaving}/erase", headers=hub.auth(ADMIN))
        assert erased.status_code == 202

        async def state() -> list[Any]:
            views = []
            for customer_id in (phone_customer, email_customer, visitor, leaving):
                response = await hub.client.get(
                    f"/v1/customers/{customer_id}", headers=hub.auth(AGENT)
                )
                timeline = await hub.client.get(
                    f"/v1/customers/{customer_id}/timeline", headers=hub.auth(AGENT)
                )
                views.append((response.status_code, response.json(), timeline.json()))
            return views

        # Wait until the projection has read back every command the API emitted.
        await wait_for_keyed(hub, CUSTOMER.name, leaving, lambda e: e.type.endswith("erased.v1"))
        await asyncio.sleep(0.5)
        live = await state()
        assert live[0][1]["tier"] == "gold"
        assert live[1][1]["customer_id"] == phone_customer
        assert (await lookup(hub, "CRM-0042"))["customer_id"] == phone_customer
        assert live[3][0] == 404

        await hub.host.stop()
        await replay(hub.bus, hub.host.stores["crm"], service.projections()[0])
        # Versions count changes, and the merge of the erased customer (undone) cannot be
        # replayed: its conversations are skipped. Everything else must be equal.
        assert without_versions(await state()) == without_versions(live)
        assert await scan_database(hub, ["+14155550199", "erase me please"]) == []
