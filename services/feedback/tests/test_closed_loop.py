"""The feedback service end to end, through the log and HTTP, on both backends: a resolved
conversation is surveyed, a bad answer in the channel becomes a follow-up, closing it
re-surveys the customer; plus the web link, metrics, CSV and the BI facts (embedded)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from convohub.contracts import new_event
from convohub.contracts.catalogue import payload_class, payload_examples
from convohub.contracts.topics import CONVERSATION_FACTS, FEEDBACK
from convohub.feedback.adapters.facts_export import export_facts
from convohub.feedback.bootstrap import create_service
from convohub.runtime.config import parse_config
from tests.support.hub import BACKENDS, RunningHub, backend_for, eventually, running_hub

SUPERVISOR_KEY = "supervisor-key-0123456789"
AGENT_KEY = "agent-key-0123456789abc"
CONFIG = parse_config(
    f"""
feedback: {{poll_interval_seconds: 0.05}}
tenants:
  - id: acme
    name: Acme
    api_keys:
      - {{key: {SUPERVISOR_KEY}, role: supervisor, agent_id: sup-1}}
      - {{key: {AGENT_KEY}, role: agent}}
    feedback:
      kinds: [csat]
      delay_seconds: 0
      expiry_hours: 48
      follow_up: {{resurvey_delay_seconds: 0}}
""",
    {},
)
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def event(kind: str, **fields: Any) -> Any:
    type_ = f"convohub.{kind}.v1"
    payload = payload_class(type_).model_validate({**payload_examples(type_)[0], **fields})
    return new_event(payload, tenant_id="acme", source="/test")


def started(conversation: str, channel: str = "whatsapp", at: datetime = T0) -> Any:
    return event(
        "conversation.started",
        conversation_id=conversation,
        channel=channel,
        channel_id=f"{channel}-main",
        started_at=at.isoformat(),
    )


def received(conversation: str, text: str, n: int, at: datetime, channel: str = "whatsapp") -> Any:
    return event(
        "conversation.message_received",
        conversation_id=conversation,
        message_id=f"{conversation}-m{n}",
        provider_message_id=f"p-{conversation}-{n}",
        channel=channel,
        channel_id=f"{channel}-main",
        content={"text": text},
        received_at=at.isoformat(),
    )


def resolved(conversation: str, at: datetime) -> Any:
    return event("conversation.resolved", conversation_id=conversation, resolved_at=at.isoformat())


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_for(request.param, request, tmp_path) as backend:
        yield backend


def of(type_suffix: str, conversation: str) -> Any:
    return lambda e: (
        e.type == f"convohub.feedback.{type_suffix}.v1" and (e.data.conversation_id == conversation)
    )


async def test_bad_answer_follow_up_close_and_resurvey(backend: Any) -> None:
    conversation = f"conv-loop-{backend.__class__.__name__}"
    supervisor = RunningHub.auth(SUPERVISOR_KEY)

    async def surveys(hub: Any, status: str, count: int) -> Any:
        async def check() -> Any:
            response = await hub.client.get(
                "/v1/surveys", params={"conversation_id": conversation}, headers=supervisor
            )
            items = [i for i in response.json()["items"] if i["status"] == status]
            return items if len(items) >= count else None

        return await eventually(check, f"{count} {status} survey(s)")

    async with running_hub(backend, [create_service(CONFIG)], CONFIG) as hub:
        await hub.publish(
            started(conversation),
            received(conversation, "my order is late", 1, T0),
            resolved(conversation, T0 + timedelta(minutes=5)),
        )
        # Progress is watched over HTTP (cheap); the log is read once at the end.
        await surveys(hub, "sent", 1)
        reply = received(conversation, "1 - nobody helped me", 2, T0 + timedelta(minutes=9))
        await hub.publish(reply)

        async def open_follow_ups() -> Any:
            response = await hub.client.get("/v1/follow-ups", headers=supervisor)
            assert response.status_code == 200, response.text
            return response.json()["items"]

        (follow_up,) = await eventually(open_follow_ups, "an open follow-up")
        assert (follow_up["trigger"], follow_up["trigger_score"]) == ("low_csat", 1)
        path = f"/v1/follow-ups/{follow_up['follow_up_id']}/close"
        body = {"outcome": "resolved", "note": "called back, refunded"}
        forbidden = await hub.client.post(path, json=body, headers=hub.auth(AGENT_KEY))
        assert forbidden.status_code == 403
        closed = await hub.client.post(path, json=body, headers=supervisor)
        assert closed.status_code == 200, closed.text
        again = await hub.client.post(path, json=body, headers=supervisor)
        assert again.status_code == 409
        assert await open_follow_ups() == []
        await surveys(hub, "sent", 1)  # the re-survey (the first one is answered)
        await surveys(hub, "answered", 1)

        await hub.wait_for_events(FEEDBACK.name, of("survey_sent", conversation), count=2)
        found = [
            e for e in await hub.events(FEEDBACK.name) if e.data.conversation_id == conversation
        ]
        by_type: dict[str, list[Any]] = {}
        for e in found:
            by_type.setdefault(e.type.split(".")[2], []).append(e.data)
        first, resurvey = by_type["survey_sent"]
        assert first.delivery == "channel_message"
        assert first.kinds == ["csat"]
        assert "1 (very unsatisfied) to 5" in first.text
        assert first.follow_up_id is None
        (answered,) = by_type["survey_answered"]
        assert (answered.csat, answered.comment) == (1, "nobody helped me")
        assert answered.answered_via == "channel_reply"
        assert answered.survey_id == first.survey_id
        (requested,) = by_type["follow_up_requested"]
        assert requested.trigger == "low_csat"
        assert requested.follow_up_id == follow_up["follow_up_id"]
        (closed_event,) = by_type["follow_up_closed"]
        assert (closed_event.outcome, closed_event.closed_by) == ("resolved", "sup-1")
        assert resurvey.follow_up_id == requested.follow_up_id
        assert closed.json()["resurvey_id"] == resurvey.survey_id


def routed(conversation: str, agent: str, at: datetime) -> Any:
    return event(
        "routing.assigned",
        conversation_id=conversation,
        agent_id=agent,
        skill_group="orders",
        assigned_at=at.isoformat(),
    )


def replied(conversation: str, n: int, at: datetime, agent: str = "agent-1") -> Any:
    return event(
        "conversation.message_sent",
        conversation_id=conversation,
        message_id=f"{conversation}-r{n}",
        author={"kind": "agent", "id": agent},
        sent_at=at.isoformat(),
    )


def closed(conversation: str, at: datetime) -> Any:
    return event("conversation.closed", conversation_id=conversation, closed_at=at.isoformat())


async def test_web_link_metrics_csv_and_facts(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with (
        backend_for("embedded", request, tmp_path) as backend,
        running_hub(backend, [create_service(CONFIG)], CONFIG) as hub,
    ):
        # An e-mail conversation gets a web link: answered once over HTTP without an API key.
        mail = "conv-mail"
        await hub.publish(
            started(mail, "email"),
            received(mail, "where is my parcel?", 1, T0, "email"),
            routed(mail, "agent-1", T0 + timedelta(seconds=5)),
            replied(mail, 1, T0 + timedelta(seconds=15)),
            resolved(mail, T0 + timedelta(minutes=10)),
        )
        (sent,) = await hub.wait_for_events(FEEDBACK.name, of("survey_sent", mail))
        assert (sent.data.delivery, sent.data.text) == ("web_link", None)
        listed = await hub.client.get(
            "/v1/surveys", params={"conversation_id": mail}, headers=hub.auth(SUPERVISOR_KEY)
        )
        link = urlparse(listed.json()["items"][0]["link"])
        token = parse_qs(link.query)["token"][0]
        wrong = await hub.client.get(link.path, params={"token": token[:-2] + "xx"})
        assert wrong.status_code == 404
        shown = await hub.client.get(link.path, params={"token": token})
        assert shown.status_code == 200
        assert shown.json()["kinds"] == ["csat"]
        bad = await hub.client.post(link.path, params={"token": token}, json={"csat": 9})
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "body.csat"
        answer = {"csat": 5, "comment": "very quick and helpful"}
        first = await hub.client.post(link.path, params={"token": token}, json=answer)
        assert first.status_code == 200, first.text
        second = await hub.client.post(link.path, params={"token": token}, json=answer)
        assert second.status_code == 409
        assert second.json()["code"] == "already_answered"
        (answered,) = await hub.wait_for_events(FEEDBACK.name, of("survey_answered", mail))
        assert (answered.data.csat, answered.data.answered_via) == (5, "web_link")

        await hub.publish(closed(mail, T0 + timedelta(minutes=20)))
        (facts,) = await hub.wait_for_events(
            CONVERSATION_FACTS.name, lambda e: e.data.conversation_id == mail
        )
        assert facts.data.first_response_seconds == 15
        assert facts.data.handle_seconds == 595  # assigned at +5 s, resolved at +10 min
        assert (facts.data.csat, facts.data.agent_ids, facts.data.channel_path) == (
            5,
            ["agent-1"],
            ["email"],
        )
        assert facts.data.first_contact_resolution is True
        exported = tmp_path / "facts.jsonl"
        assert await export_facts(hub.bus, exported) == 1
        (row,) = [json.loads(line) for line in exported.read_text().splitlines()]
        assert (row["conversation_id"], row["tenant_id"], row["csat"]) == (mail, "acme", 5)
        assert row["sla_breaches"] == 0

        response = await hub.client.get(
            "/v1/metrics", params={"group_by": "channel"}, headers=hub.auth(SUPERVISOR_KEY)
        )
        assert response.status_code == 200, response.text
        (row,) = response.json()["rows"]
        assert row["channel"] == "email"
        assert row["csat"] == 1.0
        assert row["service_level"] == 1.0
        as_csv = await hub.client.get(
            "/v1/metrics",
            params={"group_by": "agent"},
            headers={**hub.auth(SUPERVISOR_KEY), "Accept": "text/csv"},
        )
        assert as_csv.headers["content-type"].startswith("text/csv")
        lines = as_csv.text.splitlines()
        assert lines[0].startswith("agent,conversations,first_response_seconds")
        assert lines[1].startswith("agent-1,1,15.0")
        wrong_group = await hub.client.get(
            "/v1/metrics", params={"group_by": "planet"}, headers=hub.auth(SUPERVISOR_KEY)
        )
        assert wrong_group.status_code == 422
        filtered = await hub.client.get(
            "/v1/metrics",
            params={"from": (T0 + timedelta(hours=1)).isoformat(), "format": "csv"},
            headers=hub.auth(SUPERVISOR_KEY),
        )
        assert filtered.text.splitlines()[1].startswith("0,")  # no conversation after 10:00
        bad_time = await hub.client.get(
            "/v1/metrics", params={"to": "yesterday"}, headers=hub.auth(SUPERVISOR_KEY)
        )
        assert bad_time.status_code == 422
        assert bad_time.json()["errors"][0]["field"] == "query.to"
        agent = await hub.client.get("/v1/metrics", headers=hub.auth(AGENT_KEY))
        assert agent.status_code == 403

        staffing = await hub.client.get(
            "/v1/staffing", params={"weeks": 1}, headers=hub.auth(SUPERVISOR_KEY)
        )
        assert staffing.status_code == 200, staffing.text
        (slot,) = staffing.json()["rows"]
        assert (slot["skill_group"], slot["weekday"], slot["hour"]) == ("orders", 0, 9)
        assert (slot["arrivals_per_hour"], slot["average_handle_seconds"]) == (1.0, 595.0)
        assert slot["agents"] == 1


async def test_erasure_purges_the_customers_texts(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from sqlalchemy import select

    from convohub.feedback.adapters.tables import SURVEYS

    async with (
        backend_for("embedded", request, tmp_path) as backend,
        running_hub(backend, [create_service(CONFIG)], CONFIG) as hub,
    ):
        chat = "conv-erase"
        identified = event("customer.identified", customer_id="cust-9", conversation_id=chat)
        await hub.publish(started(chat), identified, resolved(chat, T0 + timedelta(minutes=1)))
        await hub.wait_for_events(FEEDBACK.name, of("survey_sent", chat))
        await hub.publish(closed(chat, T0 + timedelta(minutes=2)))
        await hub.publish(received(chat, "2 the agent was rude", 1, T0 + timedelta(minutes=3)))
        await hub.wait_for_events(FEEDBACK.name, of("follow_up_requested", chat))
        # The late answer supersedes the fact record written at the close.
        records = await hub.wait_for_events(
            CONVERSATION_FACTS.name, lambda e: e.data.conversation_id == chat, count=2
        )
        assert [r.data.csat for r in records] == [None, 2]

        async def stored() -> tuple[str | None, str | None]:
            async with hub.host.stores["feedback"].engine.connect() as connection:
                row = (await connection.execute(select(SURVEYS))).one()
            return row.comment, row.raw_answer

        assert await stored() == ("the agent was rude", "2 the agent was rude")
        await hub.publish(event("customer.erased", customer_id="cust-9"))

        async def purged() -> bool:
            return await stored() == (None, None)

        await eventually(purged, "the survey's texts purged")


async def test_unanswered_surveys_expire_once(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from convohub.runtime.service import ManualClock

    clock = ManualClock(T0 + timedelta(minutes=1))
    async with (
        backend_for("embedded", request, tmp_path) as backend,
        running_hub(backend, [create_service(CONFIG)], CONFIG, clock=clock) as hub,
    ):
        chat = "conv-expire"
        await hub.publish(started(chat), resolved(chat, T0))
        (sent,) = await hub.wait_for_events(FEEDBACK.name, of("survey_sent", chat))
        assert sent.data.expires_at == T0 + timedelta(minutes=1, hours=48)
        clock.advance(hours=48, minutes=1)
        (expired,) = await hub.wait_for_events(FEEDBACK.name, of("survey_expired", chat))
        assert expired.data.survey_id == sent.data.survey_id
        late = received(chat, "5", 1, clock.now())
        await hub.publish(late)
        await hub.wait_for_events(FEEDBACK.name, of("analysed", chat))
        events = await hub.events(FEEDBACK.name)
        assert [e.type.split(".")[2] for e in events if e.data.conversation_id == chat] == [
            "survey_sent",
            "survey_expired",
            "analysed",
        ]
