"""A policy change reaches open conversations at the next start; queue service levels are
published once per window; erasure drops what the service knows of a customer."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from convohub.contracts import new_event
from convohub.contracts.events.common import Channel
from convohub.contracts.events.customer import (
    CustomerErased,
    CustomerIdentified,
    CustomerIdentifier,
    CustomerSegmentEntered,
    IdentifierKind,
    IdentityMatchMethod,
)
from convohub.runtime.config import ConfigError
from convohub.runtime.service import ManualClock
from convohub.sla.adapters.tables import CUSTOMER_CONVERSATIONS, CUSTOMER_SEGMENTS
from convohub.sla.bootstrap import create_service
from services.sla.tests.scenario import (
    AGENT_KEY,
    agent_reply,
    emitted,
    hub_config,
    labels,
    started,
)
from tests.support.hub import backend_for, eventually, running_hub

BEFORE = hub_config(
    """
    sla:
      policies:
        - {id: chat, match: {channels: [web_chat]}, first_response: 10m}
        - {id: vip, match: {segments: [vip]}, first_response: 2m}
      service_levels:
        - {channels: [web_chat], threshold: 20s, target: 0.8}
      service_level_window: 60s
"""
)
AFTER = hub_config(
    """
    sla:
      policies:
        - {id: chat, match: {channels: [web_chat]}, first_response: 5m}
"""
)


async def clocks(hub, conversation: str) -> dict:
    response = await hub.client.get(
        f"/v1/conversations/{conversation}/sla", headers=hub.auth(AGENT_KEY)
    )
    assert response.status_code == 200, response.text
    return {clock["metric"]: clock for clock in response.json()["clocks"]}


async def test_a_policy_change_recomputes_open_clocks_at_the_next_start(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    clock = ManualClock()
    t0 = clock.now()
    async with backend_for("embedded", request, tmp_path) as backend:
        async with running_hub(backend, [create_service(BEFORE)], BEFORE, clock=clock) as hub:
            await hub.publish(started("c1", t0))

            async def started_clock():
                response = await hub.client.get(
                    "/v1/conversations/c1/sla", headers=hub.auth(AGENT_KEY)
                )
                return response.status_code == 200 and response.json()["clocks"]

            await eventually(started_clock, "the first-response clock")
            assert (await clocks(hub, "c1"))["first_response"]["target_seconds"] == 600
        clock.advance(minutes=4)
        async with running_hub(backend, [create_service(AFTER)], AFTER, clock=clock) as hub:
            first = (await clocks(hub, "c1"))["first_response"]
            assert (first["target_seconds"], first["remaining_seconds"]) == (300, 60)
            assert first["due_at"].startswith((t0 + timedelta(minutes=5)).isoformat()[:19])
            clock.advance(minutes=1, seconds=1)
            store = hub.host.stores["sla"]

            async def breached():
                return "breached:first_response" in labels(await emitted(store, "c1"))

            await eventually(breached, "the breach under the new policy")


async def test_queue_service_level_and_customer_segments_and_erasure(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    clock = ManualClock()
    t0 = clock.now()  # 09:00:00, a window boundary
    service = create_service(BEFORE, service_level_interval=0.05)
    async with (
        backend_for("embedded", request, tmp_path) as backend,
        running_hub(backend, [service], BEFORE, clock=clock) as hub,
    ):
        identified = CustomerIdentified(
            customer_id="cust-1",
            identifier=CustomerIdentifier(
                kind=IdentifierKind.WEB_VISITOR_ID, value="v1", verified=False
            ),
            conversation_id="c1",
            is_new_customer=True,
            matched_by=IdentityMatchMethod.NEW,
        )
        vip = CustomerSegmentEntered(
            customer_id="cust-1", segment_id="vip", rule_id="ltv", entered_at=t0
        )
        await hub.publish(
            new_event(identified, tenant_id="acme", source="/test"),
            new_event(vip, tenant_id="acme", source="/test"),
        )
        await hub.publish(started("c1", t0), started("c2", t0), started("c3", t0))

        async def vip_clock():
            response = await hub.client.get("/v1/conversations/c1/sla", headers=hub.auth(AGENT_KEY))
            found = response.status_code == 200 and response.json()["clocks"]
            return found and found[0]["policy_id"] == "vip" and found

        await eventually(vip_clock, "c1's first response under the VIP policy")
        # answered in 10 s, 15 s and 30 s: two of three within the 20 s threshold
        for conversation, wait in (("c1", 10), ("c2", 15), ("c3", 30)):
            await hub.publish(agent_reply(conversation, 1, t0 + timedelta(seconds=wait)))
        store = hub.host.stores["sla"]

        async def all_met():
            return labels(await emitted(store)).count("met:first_response") == 3

        await eventually(all_met, "three first responses met")
        clock.advance(seconds=61)  # the window 09:00-09:01 has closed

        async def measured():
            found = [e for e in await emitted(store) if "queue_service_level" in e.type]
            return found

        levels = await eventually(measured, "the service level of the window")
        clock.advance(seconds=1)
        await service.publish_service_levels()  # the same window again: nothing new
        assert len(await measured()) == 1
        level = levels[0].data
        assert (level.skill_group, level.channel) == ("unassigned", Channel.WEB_CHAT)
        assert (level.answered_within_threshold, level.answered_total) == (2, 3)
        assert level.service_level_ratio == pytest.approx(2 / 3)
        assert (level.window_end - level.window_start) == timedelta(seconds=60)

        erased = CustomerErased(customer_id="cust-1", request_id="r1", erased_at=clock.now())
        await hub.publish(new_event(erased, tenant_id="acme", source="/test"))

        async def forgotten():
            async with store.engine.connect() as connection:
                left = 0
                for table in (CUSTOMER_SEGMENTS, CUSTOMER_CONVERSATIONS):
                    left += await connection.scalar(select(func.count()).select_from(table))
            return left == 0

        await eventually(forgotten, "the customer's segments and links dropped")


def test_a_bad_sla_section_names_every_key_path() -> None:
    config = hub_config(
        """
    sla:
      policies:
        - id: chat
          first_response: soon
          warnings: [1.5]
          escalations: [{action: call_the_ceo, at: 0.5}]
          busines_hours_only: true
"""
    )
    with pytest.raises(ConfigError) as caught:
        create_service(config)
    paths = {problem.path for problem in caught.value.problems}
    assert {
        "tenants[0].sla.policies[0].first_response",
        "tenants[0].sla.policies[0].warnings",
        "tenants[0].sla.policies[0].escalations[0].action",
        "tenants[0].sla.policies[0].busines_hours_only",
    } <= paths
