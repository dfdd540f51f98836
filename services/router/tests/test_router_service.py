"""The router as a user sees it: events in, routing events and HTTP answers out."""

from __future__ import annotations

import asyncio
from typing import Any

from convohub.contracts.topics import AGENT, ROUTING
from convohub.router.bootstrap import create_service
from convohub.runtime.service import ManualClock
from tests.support.hub import eventually, running_hub

from .conftest import KEYS, SUPERVISOR, agent, hub_config, message, resolved, routing, started

ASSIGNED = "convohub.routing.assigned.v1"


def of_type(kind: str, conversation: str | None = None) -> Any:
    return lambda e: (
        e.type == kind and (conversation is None or e.data.conversation_id == conversation)
    )


async def online(hub: Any, *agents: str) -> None:
    for name in agents:
        response = await hub.client.put(
            f"/v1/agents/{name}/presence", json={"presence": "online"}, headers=hub.auth(KEYS[name])
        )
        assert response.status_code == 200, response.text


async def test_classifies_queues_and_assigns_the_least_busy_agent_with_reasons(
    embedded: Any,
) -> None:
    config = hub_config(
        routing(agents=[agent("a1", "complaints: 4, support: 3"), agent("a2", "complaints: 5")])
    )
    clock = ManualClock()
    async with running_hub(
        embedded, [create_service(config, sweep_every=0.05)], config, clock=clock
    ) as hub:
        await online(hub, "a1", "a2")
        await hub.publish(started("c1"), message("c1", "我要投诉 your service"))
        classified = await hub.wait_for_events(
            ROUTING.name, of_type("convohub.routing.classified.v1", "c1")
        )
        assert classified[0].data.skill_group == "complaints"
        assert classified[0].data.matched_rule.rule_id == "complaint"
        assert classified[0].data.matched_rule.matched_text == "投诉"
        assert classified[0].data.language == "zh", "mostly Han characters"
        first = (await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "c1")))[0].data
        # Equal load: the tie goes to the higher proficiency.
        assert first.agent_id == "a2"
        assert first.strategy == "least_busy"
        await hub.publish(started("c2", "+2"), message("c2", "complaint: angry!", "+2"))
        second = (await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "c2")))[0].data
        assert second.agent_id == "a1", "a2 is busier now"
        by_id = {c.agent_id: c for c in second.explanation.candidates}
        assert by_id["a2"].load == 1
        assert by_id["a1"].eligible
        classified2 = await hub.wait_for_events(
            ROUTING.name, of_type("convohub.routing.classified.v1", "c2")
        )
        assert classified2[0].data.priority == "P1", "complaint words raise P2 to P1"

        shown = await hub.client.get("/v1/conversations/c2/routing", headers=hub.auth(SUPERVISOR))
        assert shown.status_code == 200
        body = shown.json()
        assert body["agent_id"] == "a1"
        assert body["state"] == "assigned"
        assert {c["agent_id"] for c in body["explanation"]["candidates"]} == {"a1", "a2"}
        assert body["classification"]["rule_id"] == "complaint"
        agents = (await hub.client.get("/v1/agents", headers=hub.auth(SUPERVISOR))).json()["agents"]
        assert {a["agent_id"]: a["channels"]["web_chat"]["load"] for a in agents} == {
            "a1": 1,
            "a2": 1,
        }
        missing = await hub.client.get(
            "/v1/conversations/nope/routing", headers=hub.auth(SUPERVISOR)
        )
        assert missing.status_code == 404


async def test_capacity_is_respected_and_freed_on_resolve_with_queue_positions(
    embedded: Any,
) -> None:
    config = hub_config(routing(agents=[agent("a1", "support: 3", chat=1)]))
    clock = ManualClock()
    async with running_hub(
        embedded, [create_service(config, sweep_every=0.05)], config, clock=clock
    ) as hub:
        await online(hub, "a1")
        for n in range(3):
            await hub.publish(started(f"q{n}", f"+{n}"), message(f"q{n}", "hello", f"+{n}"))
        await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "q0"))
        queued = await hub.wait_for_events(
            ROUTING.name,
            lambda e: e.type == "convohub.routing.queued.v1" and e.data.conversation_id == "q2",
        )
        assert queued[-1].data.position == 2
        queues = (await hub.client.get("/v1/queues", headers=hub.auth(SUPERVISOR))).json()["queues"]
        support = next(q for q in queues if q["skill_group"] == "support")
        assert support["length"] == 2
        assert support["agents_online"] == 1
        assert not [
            e
            for e in await hub.events(ROUTING.name)
            if e.type == ASSIGNED and e.data.conversation_id != "q0"
        ]
        await hub.publish(resolved("q0"))
        assigned = await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "q1"))
        assert assigned[0].data.agent_id == "a1"
        moved = await hub.wait_for_events(
            ROUTING.name,
            lambda e: (
                e.type == "convohub.routing.queued.v1"
                and e.data.conversation_id == "q2"
                and e.data.position == 1
            ),
        )
        assert moved


async def test_offer_expires_and_is_offered_again_then_accepted(embedded: Any) -> None:
    config = hub_config(
        routing(
            agents=[agent("a1", "support: 5"), agent("a2", "support: 3")],
            extra="      offer_mode: offer\n      offer_expiry_seconds: 30\n",
        )
    )
    clock = ManualClock()
    async with running_hub(
        embedded, [create_service(config, sweep_every=0.05)], config, clock=clock
    ) as hub:
        await online(hub, "a1", "a2")
        await hub.publish(started("o1"), message("o1", "hi"))
        offered = await hub.wait_for_events(
            ROUTING.name, of_type("convohub.routing.offered.v1", "o1")
        )
        first = offered[0].data
        assert first.agent_id == "a1"
        assert first.attempt == 1
        mine = await hub.client.get("/v1/offers", headers=hub.auth(KEYS["a1"]))
        assert [o["offer_id"] for o in mine.json()["offers"]] == [first.offer_id]
        theirs = await hub.client.get("/v1/offers", headers=hub.auth(KEYS["a2"]))
        assert theirs.json()["offers"] == [], "an agent sees only its own offers"
        peek = await hub.client.get("/v1/offers?agent_id=a1", headers=hub.auth(KEYS["a2"]))
        assert peek.status_code == 403
        every = await hub.client.get("/v1/offers", headers=hub.auth(SUPERVISOR))
        assert [o["conversation_id"] for o in every.json()["offers"]] == ["o1"]
        wrong = await hub.client.post(
            f"/v1/offers/{first.offer_id}/accept", headers=hub.auth(KEYS["a2"])
        )
        assert wrong.status_code == 403
        clock.advance(seconds=31)
        expired = await hub.wait_for_events(
            ROUTING.name, of_type("convohub.routing.offer_expired.v1", "o1")
        )
        assert expired[0].data.agent_id == "a1"
        again = await hub.wait_for_events(
            ROUTING.name, of_type("convohub.routing.offered.v1", "o1"), count=2
        )
        second = again[-1].data
        assert second.agent_id == "a2"
        assert second.attempt == 2
        late = await hub.client.post(
            f"/v1/offers/{first.offer_id}/accept", headers=hub.auth(KEYS["a1"])
        )
        assert late.status_code in (404, 409), "a lapsed offer cannot be accepted"
        accepted = await hub.client.post(
            f"/v1/offers/{second.offer_id}/accept", headers=hub.auth(KEYS["a2"])
        )
        assert accepted.status_code == 200, accepted.text
        assigned = (await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "o1")))[0].data
        assert assigned.agent_id == "a2"
        assert assigned.offer_id == second.offer_id
        agents = (await hub.client.get("/v1/agents", headers=hub.auth(SUPERVISOR))).json()["agents"]
        assert {a["agent_id"]: a["load"] for a in agents} == {"a1": 0, "a2": 1}


async def test_decline_reoffers_to_another_agent(embedded: Any) -> None:
    config = hub_config(
        routing(
            agents=[agent("a1", "support: 5"), agent("a2", "support: 3")],
            extra="      offer_mode: offer\n",
        )
    )
    async with running_hub(
        embedded, [create_service(config, sweep_every=0.05)], config, clock=ManualClock()
    ) as hub:
        await online(hub, "a1", "a2")
        await hub.publish(started("d1"), message("d1", "hi"))
        first = (
            await hub.wait_for_events(ROUTING.name, of_type("convohub.routing.offered.v1", "d1"))
        )[0].data
        declined = await hub.client.post(
            f"/v1/offers/{first.offer_id}/decline",
            json={"reason": "language"},
            headers=hub.auth(KEYS[first.agent_id]),
        )
        assert declined.status_code == 200, declined.text
        again = await hub.wait_for_events(
            ROUTING.name, of_type("convohub.routing.offered.v1", "d1"), count=2
        )
        assert again[-1].data.agent_id != first.agent_id


async def test_a_returning_customer_gets_their_previous_agent_then_falls_back(
    embedded: Any,
) -> None:
    config = hub_config(
        routing(
            agents=[agent("a1", "support: 3"), agent("a2", "support: 3")],
            extra="      sticky_agent_seconds: 60\n",
        )
    )
    clock = ManualClock()
    async with running_hub(
        embedded, [create_service(config, sweep_every=0.05)], config, clock=clock
    ) as hub:
        await online(hub, "a1")
        await hub.publish(started("s1", "+cust"), message("s1", "hi", "+cust"))
        assert (await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "s1")))[
            0
        ].data.agent_id == "a1"
        await hub.publish(started("s2", "+x2"), message("s2", "hi", "+x2"), resolved("s1"))
        await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "s2"))
        await eventually(lambda: _load_is(hub, "a1", 1), "s1 resolved")
        await online(hub, "a2")
        # a2 is less busy, but the customer comes back to a1.
        await hub.publish(started("s3", "+cust"), message("s3", "back again", "+cust"))
        sticky = (await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "s3")))[0].data
        assert sticky.agent_id == "a1"
        assert sticky.strategy == "previous_agent"
        # a1 is now full on web chat (3): the customer waits for a1, then anyone after 60 s.
        await hub.publish(started("s4", "+x4"), message("s4", "hi", "+x4"))
        await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "s4"))
        await hub.client.put(
            "/v1/agents/a2/presence", json={"presence": "away"}, headers=hub.auth(KEYS["a2"])
        )
        await hub.publish(started("s5", "+x5"), message("s5", "hi", "+x5"))
        await eventually(lambda: _load_is(hub, "a1", 3), "a1 full")
        await online(hub, "a2")
        await hub.publish(started("s6", "+cust"), message("s6", "third time", "+cust"))
        await hub.wait_for_events(ROUTING.name, of_type("convohub.routing.queued.v1", "s6"))
        clock.advance(seconds=30)
        await asyncio.sleep(0.3)  # several sweeps
        assigned = [e for e in await hub.events(ROUTING.name) if e.type == ASSIGNED]
        assert "s6" not in {e.data.conversation_id for e in assigned}
        clock.advance(seconds=31)
        fallback = (await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "s6")))[0].data
        assert fallback.agent_id == "a2"
        assert fallback.strategy == "least_busy"


async def _load_is(hub: Any, agent_id: str, load: int) -> bool:
    agents = (await hub.client.get("/v1/agents", headers=hub.auth(SUPERVISOR))).json()["agents"]
    return any(a["agent_id"] == agent_id and a["load"] == load for a in agents)


async def test_bullseye_widening_reaches_neighbouring_groups_after_the_wait(embedded: Any) -> None:
    config = hub_config(
        routing(
            agents=[agent("a1", "support: 4")],
            extra="      widening:\n        - {after_seconds: 60, action: neighbours}\n",
        )
    )
    clock = ManualClock()
    async with running_hub(
        embedded, [create_service(config, sweep_every=0.05)], config, clock=clock
    ) as hub:
        await online(hub, "a1")
        await hub.publish(started("w1", channel="web_chat", ivr_choice="1"))  # sales
        await hub.wait_for_events(ROUTING.name, of_type("convohub.routing.queued.v1", "w1"))
        clock.advance(seconds=30)
        await asyncio.sleep(0.3)  # several sweeps
        assert not [e for e in await hub.events(ROUTING.name) if e.type == ASSIGNED]
        clock.advance(seconds=31)
        assigned = (await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "w1")))[0].data
        assert assigned.agent_id == "a1"
        assert assigned.explanation.widening_level == 1
        assert assigned.skill_group == "sales"


async def test_transfer_to_an_agent_and_to_a_queue(embedded: Any) -> None:
    config = hub_config(
        routing(
            agents=[agent("a1", "support: 4"), agent("a2", "logistics: 3"), agent("a3", "sales: 2")]
        )
    )
    async with running_hub(
        embedded, [create_service(config, sweep_every=0.05)], config, clock=ManualClock()
    ) as hub:
        await online(hub, "a1")
        await hub.publish(started("t1"), message("t1", "order #123 broken"))
        assert (await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "t1")))[
            0
        ].data.agent_id == "a1"
        await online(hub, "a2", "a3")
        not_owner = await hub.client.post(
            "/v1/conversations/t1/transfer",
            json={"to_agent_id": "a2"},
            headers=hub.auth(KEYS["a2"]),
        )
        assert not_owner.status_code == 403
        both = await hub.client.post(
            "/v1/conversations/t1/transfer",
            json={"to_agent_id": "a2", "to_skill_group": "sales"},
            headers=hub.auth(KEYS["a1"]),
        )
        assert both.status_code == 422
        moved = await hub.client.post(
            "/v1/conversations/t1/transfer",
            json={"to_agent_id": "a2", "reason": "needs_specialist", "note": "shipping issue"},
            headers=hub.auth(KEYS["a1"]),
        )
        assert moved.status_code == 200, moved.text
        transferred = await hub.wait_for_events(
            ROUTING.name, of_type("convohub.routing.transferred.v1", "t1")
        )
        assert transferred[0].data.to_agent_id == "a2"
        assert transferred[0].data.note == "shipping issue"
        assigned = await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "t1"), count=2)
        assert assigned[-1].data.agent_id == "a2"
        assert assigned[-1].data.strategy == "manual"
        to_queue = await hub.client.post(
            "/v1/conversations/t1/transfer",
            json={"to_skill_group": "sales"},
            headers=hub.auth(SUPERVISOR),
        )
        assert to_queue.status_code == 200, to_queue.text
        again = await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "t1"), count=3)
        assert again[-1].data.agent_id == "a3"
        assert again[-1].data.skill_group == "sales"
        body = (
            await hub.client.get("/v1/conversations/t1/routing", headers=hub.auth(SUPERVISOR))
        ).json()
        assert [t["to_agent_id"] or t["to_skill_group"] for t in body["transfers"]] == [
            "a2",
            "sales",
        ]
        assert body["classification"]["rule_id"] == "order-regex", "the context stays"
        agents = (await hub.client.get("/v1/agents", headers=hub.auth(SUPERVISOR))).json()["agents"]
        assert {a["agent_id"]: a["load"] for a in agents} == {"a1": 0, "a2": 0, "a3": 1}


async def test_a_silent_agent_goes_offline_and_admins_manage_agents(embedded: Any) -> None:
    config = hub_config(
        routing(agents=[agent("a1", "support: 4")], extra="      heartbeat_timeout_seconds: 60\n")
    )
    clock = ManualClock()
    async with running_hub(
        embedded, [create_service(config, sweep_every=0.05)], config, clock=clock
    ) as hub:
        await online(hub, "a1")
        clock.advance(seconds=40)
        beat = await hub.client.post("/v1/agents/a1/heartbeat", headers=hub.auth(KEYS["a1"]))
        assert beat.status_code == 200
        other = await hub.client.post("/v1/agents/a1/heartbeat", headers=hub.auth(KEYS["a2"]))
        assert other.status_code == 403
        clock.advance(seconds=40)
        await asyncio.sleep(0.3)  # several sweeps
        assert await _presence(hub, "a1") == "online"
        clock.advance(seconds=30)
        timed_out = await hub.wait_for_events(
            AGENT.name,
            lambda e: (
                e.type == "convohub.agent.presence_changed.v1"
                and e.data.reason == "heartbeat_timeout"
            ),
        )
        assert timed_out[0].data.agent_id == "a1"
        assert timed_out[0].data.to_presence == "offline"
        assert await _presence(hub, "a1") == "offline"

        new = {
            "id": "a4",
            "name": "New Agent",
            "tier": "junior",
            "skills": {"support": 2},
            "capacity": {"per_channel": {"web_chat": 2}, "total": 2},
        }
        denied = await hub.client.post("/v1/agents", json=new, headers=hub.auth(KEYS["a1"]))
        assert denied.status_code == 403
        created = await hub.client.post("/v1/agents", json=new, headers=hub.auth(SUPERVISOR))
        assert created.status_code == 201, created.text
        duplicate = await hub.client.post("/v1/agents", json=new, headers=hub.auth(SUPERVISOR))
        assert duplicate.status_code == 409
        bad = await hub.client.put(
            "/v1/agents/a4", json={**new, "skills": {"support": 9}}, headers=hub.auth(SUPERVISOR)
        )
        assert bad.status_code == 422
        assert "skills" in bad.text
        changed = await hub.client.put(
            "/v1/agents/a4", json={**new, "tier": "senior"}, headers=hub.auth(SUPERVISOR)
        )
        assert changed.status_code == 200
        mine = await hub.wait_for_events(AGENT.name, lambda e: e.data.agent_id == "a4", count=2)
        kinds = [e.type for e in mine]
        assert kinds == ["convohub.agent.registered.v1", "convohub.agent.profile_changed.v1"]


async def _presence(hub: Any, agent_id: str) -> str:
    agents = (await hub.client.get("/v1/agents", headers=hub.auth(SUPERVISOR))).json()["agents"]
    return next(a["presence"] for a in agents if a["agent_id"] == agent_id)


def _customer_event(kind: str, **data: Any) -> Any:
    from convohub.contracts import new_event
    from convohub.contracts.catalogue import payload_class, payload_examples

    payload = payload_class(kind).model_validate({**payload_examples(kind)[0], **data})
    return new_event(payload, tenant_id="acme", source="/test")


async def test_vip_segments_route_to_the_vip_group_until_the_customer_is_erased(
    embedded: Any,
) -> None:
    config = hub_config(
        routing(
            agents=[agent("a1", "support: 3, vip: 4")], extra="      sticky_agent_seconds: 30\n"
        )
    )
    async with running_hub(
        embedded, [create_service(config, sweep_every=0.05)], config, clock=ManualClock()
    ) as hub:
        await online(hub, "a1")
        await hub.publish(
            started("v0", "+vip"),
            _customer_event(
                "convohub.customer.identified.v1", customer_id="cust-1", conversation_id="v0"
            ),
            _customer_event(
                "convohub.customer.segment_entered.v1", customer_id="cust-1", segment_id="vip"
            ),
            message("v0", "hello", "+vip"),
        )
        first = await hub.wait_for_events(
            ROUTING.name, of_type("convohub.routing.classified.v1", "v0")
        )
        assert first
        await asyncio.sleep(0.3)  # the customer topic is consumed independently
        await hub.publish(started("v1", "+vip"), message("v1", "hello again", "+vip"))
        again = await hub.wait_for_events(
            ROUTING.name, of_type("convohub.routing.classified.v1", "v1")
        )
        assert again[0].data.vip is True
        assert again[0].data.skill_group == "vip"
        await hub.publish(_customer_event("convohub.customer.erased.v1", customer_id="cust-1"))
        await asyncio.sleep(0.3)  # the customer topic is consumed independently
        await hub.publish(
            started("v2", "+vip"),
            message("v2", "after erasure", "+vip"),
        )
        erased = await hub.wait_for_events(
            ROUTING.name, of_type("convohub.routing.classified.v1", "v2")
        )
        assert erased[0].data.vip is False
        assigned = await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "v2"))
        assert assigned[0].data.strategy != "previous_agent", "the sticky link was erased"


async def test_sla_escalation_moves_to_the_senior_tier_and_follow_ups_to_supervisors(
    embedded: Any,
) -> None:
    config = hub_config(
        routing(
            agents=[
                agent("a1", "support: 3"),
                agent("a2", "support: 2", tier="senior"),
                agent("a3", "supervisor: 3", tier="senior"),
            ]
        )
    )
    async with running_hub(
        embedded, [create_service(config, sweep_every=0.05)], config, clock=ManualClock()
    ) as hub:
        await online(hub, "a1")
        await hub.publish(started("e1"), message("e1", "hello"))
        assert (await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "e1")))[
            0
        ].data.agent_id == "a1"
        await online(hub, "a2", "a3")
        await hub.publish(
            _customer_event(
                "convohub.sla.escalated.v1", conversation_id="e1", action="route_to_senior"
            )
        )
        escalated = await hub.wait_for_events(
            ROUTING.name, of_type("convohub.routing.escalated.v1", "e1")
        )
        assert escalated[0].data.target == "senior_tier"
        moved = await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "e1"), count=2)
        assert moved[-1].data.agent_id == "a2"
        await hub.publish(
            resolved("e1"),
            _customer_event("convohub.feedback.follow_up_requested.v1", conversation_id="e1"),
        )
        follow_up = await hub.wait_for_events(ROUTING.name, of_type(ASSIGNED, "e1"), count=3)
        assert follow_up[-1].data.agent_id == "a3"
        assert follow_up[-1].data.skill_group == "supervisor"
        agents = (await hub.client.get("/v1/agents", headers=hub.auth(SUPERVISOR))).json()
        assert {a["agent_id"]: a["load"] for a in agents["agents"]} == {"a1": 0, "a2": 0, "a3": 1}
