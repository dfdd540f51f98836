"""The channel side as providers and integrators see it: signed webhooks in, events on the
log out, in both modes (embedded log + SQLite, Kafka + PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from convohub.contracts import encode_event, new_event
from convohub.contracts.events.common import (
    Channel,
    ChannelIdentity,
    MessageContent,
    Participant,
    ParticipantKind,
)
from convohub.contracts.events.conversation import (
    ConversationClosed,
    ConversationCloseReason,
    ConversationResolved,
    DeliveryState,
    MessageDelivered,
    MessageSent,
)
from convohub.contracts.events.customer import (
    CustomerErased,
    CustomerIdentified,
    CustomerIdentifier,
    IdentifierKind,
    IdentityMatchMethod,
)
from convohub.contracts.events.feedback import SurveySent
from convohub.contracts.topics import CONVERSATION
from convohub.ingest.adapters.tables import CONVERSATIONS, INBOUND_CLAIMS, PROVIDER_MESSAGES
from convohub.ingest.bootstrap import create_service
from convohub.runtime.service import ManualClock
from tests.support.hub import BACKENDS, backend_for, eventually, running_hub

from .channel_support import (
    API_KEY,
    GLOBEX_KEY,
    MAILGUN_FORM,
    NARROW_KEY,
    ORIGIN,
    RAW_EMAIL,
    SMS_TOKEN,
    VOICE_TOKEN,
    WA_VERIFY,
    email_request,
    hub_config,
    mailgun_request,
    raw_email,
    twilio_request,
    twilio_sms,
    whatsapp_request,
    whatsapp_text,
)

PUBLIC = "https://hooks.acme.example"
STARTED = "convohub.conversation.started.v1"
RECEIVED = "convohub.conversation.message_received.v1"
SOURCE = "tests/desk"


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_for(request.param, request, tmp_path) as backend:
        yield backend


@pytest.fixture
async def embedded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_for("embedded", request, tmp_path) as backend:
        yield backend


def of_type(kind: str) -> Any:
    return lambda event: event.type == kind


async def sms(hub: Any, sid: str, body: str, sender: str = "+14158675310") -> Any:
    path = "/v1/webhooks/twilio/sms-main"
    return await hub.client.post(
        path, **twilio_request(path, twilio_sms(sid, body, sender), SMS_TOKEN, base=PUBLIC)
    )


async def api_message(hub: Any, external_id: str, text: str = "hi", **customer: Any) -> Any:
    body = {"external_id": external_id, "customer": {"id": "cust-1", **customer}, "text": text}
    return await hub.client.post(
        "/v1/channels/api-main/messages", json=body, headers=hub.auth(API_KEY)
    )


async def conversation_row(hub: Any, conversation_id: str) -> Any:
    engine = hub.host.stores["ingest"].engine
    async with engine.connect() as connection:
        return (
            await connection.execute(
                select(CONVERSATIONS).where(CONVERSATIONS.c.conversation_id == conversation_id)
            )
        ).first()


async def wait_for_status(
    hub: Any, conversation_id: str, status: str, survey: bool = False
) -> None:
    async def reached() -> bool:
        row = await conversation_row(hub, conversation_id)
        return row is not None and row.status == status and bool(row.survey_pending) == survey

    await eventually(reached, f"{conversation_id} {status}")


async def test_a_signed_twilio_sms_becomes_a_conversation_on_the_log(backend: Any) -> None:
    config = hub_config()
    async with running_hub(backend, [create_service(config)], config) as hub:
        first = await sms(hub, "SM00000000000000000000000000000001", "Hello from Twilio")
        assert first.status_code == 200, first.text
        assert first.headers["content-type"].startswith("text/xml")
        assert first.text.endswith("<Response/>")
        second = await sms(hub, "SM00000000000000000000000000000002", "still there?")
        assert second.status_code == 200
        # Answered only after the broker acknowledged: the events are on the log already.
        events = [e for e in await hub.events(CONVERSATION.name) if e.tenantid == "acme"]
    kinds = [e.type for e in events]
    assert kinds.count(STARTED) == 1
    assert kinds.count(RECEIVED) == 2
    started = next(e for e in events if e.type == STARTED)
    received = [e for e in events if e.type == RECEIVED]
    assert {e.data.conversation_id for e in received} == {started.data.conversation_id}
    assert started.data.customer.address == "+14158675310"
    assert {e.data.content.text for e in received} == {"Hello from Twilio", "still there?"}
    assert all(e.partitionkey == started.data.conversation_id for e in events)


async def test_a_retry_storm_yields_exactly_one_event_per_message(backend: Any) -> None:
    config = hub_config()
    async with running_hub(backend, [create_service(config)], config) as hub:
        deliveries = []
        for n in range(4):
            deliveries.append(
                lambda n=n: sms(hub, f"SMstorm{n:028d}", f"sms {n}", sender=f"+1415867{5300 + n}")
            )
        for n in range(3):
            document = whatsapp_text(f"wamid.storm{n}", f"wa {n}", wa_id=f"8613800138{n:03d}")
            deliveries.append(
                lambda d=document: hub.client.post(
                    "/v1/webhooks/whatsapp/wa-main", **whatsapp_request(d)
                )
            )
        for n in range(3):
            deliveries.append(lambda n=n: api_message(hub, f"ext-storm-{n}", f"api {n}"))
        responses = await asyncio.gather(*(send() for send in deliveries for _ in range(5)))
        assert all(response.status_code in (200, 202) for response in responses), [
            (r.status_code, r.text) for r in responses if r.status_code >= 300
        ]
        events = await hub.events(CONVERSATION.name)
    received = [e for e in events if e.type == RECEIVED]
    assert len(received) == 10
    assert len({e.data.provider_message_id for e in received}) == 10
    assert len({e.id for e in events}) == len(events)
    # 4 SMS senders, 3 WhatsApp senders, 1 API customer: one conversation each.
    assert len([e for e in events if e.type == STARTED]) == 8


async def test_concurrent_messages_are_claimed_in_batches_in_order_per_customer(
    backend: Any,
) -> None:
    config = hub_config()
    async with running_hub(backend, [create_service(config)], config) as hub:
        placements: list[str] = []

        def count_placements(*args: Any) -> None:
            statement = args[2].lstrip()
            if statement.startswith(
                ("INSERT INTO ingest_conversations", "UPDATE ingest_conversations")
            ):
                placements.append(statement)

        engine = hub.host.stores["ingest"].engine.sync_engine
        event.listen(engine, "before_cursor_execute", count_placements)
        customers = ["+14158675401", "+14158675402", "+14158675403"]
        deliveries = [
            lambda n=n, c=c: sms(hub, f"SMbatch{c[-1]}{n:027d}", f"message {n}", sender=c)
            for c in customers
            for n in range(8)
        ]
        # The third customer also writes over WhatsApp in the same moment: a channel switch.
        document = whatsapp_text("wamid.batch", "and here", wa_id=customers[2].lstrip("+"))
        deliveries.append(
            lambda: hub.client.post("/v1/webhooks/whatsapp/wa-main", **whatsapp_request(document))
        )
        # And each of those is delivered twice at once (a provider's retry).
        responses = await asyncio.gather(*(send() for send in deliveries for _ in range(2)))
        event.remove(engine, "before_cursor_execute", count_placements)
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        events = await hub.events(CONVERSATION.name)
    received = [e for e in events if e.type == RECEIVED]
    assert len(received) == 25
    assert len({e.id for e in events}) == len(events)
    started = [e for e in events if e.type == STARTED]
    assert len(started) == 3  # one conversation a customer, though its messages raced
    by_customer = {e.data.customer.address: e.data.conversation_id for e in started}
    for message in received:
        if message.data.channel_id == "sms-main":
            assert message.data.conversation_id == by_customer[message.data.customer.address]
    (switched,) = [e for e in events if e.type == "convohub.conversation.channel_switched.v1"]
    assert switched.data.conversation_id in by_customer.values()
    # 25 messages placed with far fewer statements than one each: batches shared them.
    assert len(placements) <= 12, placements


async def test_whatsapp_handshake_documented_payloads_and_statuses(embedded: Any) -> None:
    config = hub_config()
    async with running_hub(embedded, [create_service(config)], config) as hub:
        handshake = await hub.client.get(
            "/v1/webhooks/whatsapp/wa-main",
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": WA_VERIFY,
                "hub.challenge": "1158201444",
            },
        )
        assert handshake.status_code == 200
        assert handshake.text == "1158201444"
        refused = await hub.client.get(
            "/v1/webhooks/whatsapp/wa-main",
            params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
        )
        assert refused.status_code == 403
        document = whatsapp_text("wamid.doc1", "this is a text message")
        accepted = await hub.client.post(
            "/v1/webhooks/whatsapp/wa-main", **whatsapp_request(document)
        )
        assert accepted.status_code == 200, accepted.text
        (received,) = await hub.wait_for_events(CONVERSATION.name, of_type(RECEIVED))
        assert received.data.customer.display_name == "Kerry Fisher"
        assert received.data.customer.address == "16505551234"
        # An agent's reply was sent through the provider (the desk records its wamid) ...
        await hub.publish(
            delivered(
                received.data.conversation_id,
                "wa-main",
                Channel.WHATSAPP,
                "wamid.out1",
                DeliveryState.SENT,
            )
        )
        await eventually(lambda: provider_known(hub, "wamid.out1"), "the outbound wamid")
        # ... and Meta reports it read.
        status = {
            "entry": [
                {
                    "changes": [
                        {
                            "value": {
                                "statuses": [
                                    {
                                        "id": "wamid.out1",
                                        "status": "read",
                                        "timestamp": "1750263773",
                                        "recipient_id": "16505551234",
                                    }
                                ]
                            }
                        }
                    ]
                }
            ]
        }
        for _ in range(2):
            answer = await hub.client.post(
                "/v1/webhooks/whatsapp/wa-main", **whatsapp_request(status)
            )
            assert answer.status_code == 200
        read = await hub.wait_for_events(
            CONVERSATION.name,
            lambda e: (
                e.type == "convohub.conversation.message_delivered.v1"
                and e.data.state == DeliveryState.READ
            ),
        )
        assert len(read) == 1
        assert read[0].data.message_id == "msg-out-1"


async def provider_known(hub: Any, provider_id: str) -> bool:
    async with hub.host.stores["ingest"].engine.connect() as connection:
        found = await connection.scalar(
            select(PROVIDER_MESSAGES.c.message_id).where(
                PROVIDER_MESSAGES.c.provider_message_id == provider_id
            )
        )
    return found is not None


def delivered(
    conversation_id: str, channel_id: str, channel: Channel, provider_id: str, state: DeliveryState
) -> Any:
    return new_event(
        MessageDelivered(
            conversation_id=conversation_id,
            message_id="msg-out-1",
            channel=channel,
            channel_id=channel_id,
            provider_message_id=provider_id,
            state=state,
            state_changed_at=datetime(2026, 11, 23, 9, 1, tzinfo=UTC),
        ),
        tenant_id="acme",
        source=SOURCE,
    )


async def test_twilio_status_callbacks_update_delivery(embedded: Any) -> None:
    config = hub_config()
    async with running_hub(embedded, [create_service(config)], config) as hub:
        await sms(hub, "SM00000000000000000000000000000010", "hello")
        (received,) = await hub.wait_for_events(CONVERSATION.name, of_type(RECEIVED))
        conversation = received.data.conversation_id
        await hub.publish(
            delivered(conversation, "sms-main", Channel.SMS, "SMout", DeliveryState.SENT)
        )
        await eventually(lambda: provider_known(hub, "SMout"), "the outbound sid")
        path = "/v1/webhooks/twilio/sms-main"
        for status, extra in (("delivered", {}), ("undelivered", {"ErrorCode": "30007"})):
            form = {"MessageSid": "SMout", "MessageStatus": status, "AccountSid": "AC1", **extra}
            answer = await hub.client.post(
                path, **twilio_request(path, form, SMS_TOKEN, base=PUBLIC)
            )
            assert answer.status_code == 200, answer.text
        failed = await hub.wait_for_events(
            CONVERSATION.name, of_type("convohub.conversation.message_failed.v1")
        )
    assert failed[0].data.error_code == "30007"
    assert failed[0].data.message_id == "msg-out-1"
    assert failed[0].data.conversation_id == conversation


async def test_email_threads_by_references_and_mailgun_is_signed(embedded: Any) -> None:
    config = hub_config()
    clock = ManualClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    async with running_hub(embedded, [create_service(config)], config, clock=clock) as hub:
        first = raw_email("first-1@acme.example", "Zhang San <zhang.san@example.com>", "Where?")
        answer = await hub.client.post("/v1/webhooks/email/email-support", **email_request(first))
        assert answer.status_code == 202, answer.text
        reply = await hub.client.post(
            "/v1/webhooks/email/email-support", **email_request(RAW_EMAIL)
        )
        assert reply.status_code == 202, reply.text
        assert reply.json()["conversation_id"] == answer.json()["conversation_id"]
        again = await hub.client.post(
            "/v1/webhooks/email/email-support", **email_request(RAW_EMAIL)
        )
        assert again.json()["duplicate"] is True
        unsigned = await hub.client.post(
            "/v1/webhooks/email/email-support",
            content=RAW_EMAIL,
            headers={"Content-Type": "message/rfc822"},
        )
        assert unsigned.status_code == 401
        now = str(int(clock.now().timestamp()))
        mailgun = await hub.client.post(
            "/v1/webhooks/mailgun/email-support", **mailgun_request(MAILGUN_FORM, now, "tok-1")
        )
        assert mailgun.status_code == 200, mailgun.text
        stale = str(int(clock.now().timestamp()) - 3600)
        replayed = await hub.client.post(
            "/v1/webhooks/mailgun/email-support", **mailgun_request(MAILGUN_FORM, stale, "tok-2")
        )
        assert replayed.status_code == 403
        assert replayed.json()["code"] == "stale_signature"
        events = await hub.events(CONVERSATION.name)
    received = [e for e in events if e.type == RECEIVED]
    assert [e.data.content.text for e in received] == [
        "Where?",
        "Still waiting for my order, any news?",
        "Hi Alice, This is Bob.",
    ]
    assert received[1].data.in_reply_to == "first-1@acme.example"
    assert received[1].data.content.attachments[0].filename == "invoice.pdf"


async def test_voice_callbacks_become_call_events_with_the_ivr_choice(embedded: Any) -> None:
    config = hub_config()
    async with running_hub(embedded, [create_service(config)], config) as hub:
        path = "/v1/webhooks/twilio-voice/voice-main"
        call = {
            "CallSid": "CA1b2c3d4e5f60718293a4b5c6d7e8f901",
            "AccountSid": "AC1",
            "From": "+8613800138000",
            "To": "+862161234567",
            "Direction": "inbound",
        }
        steps = [
            {
                "CallStatus": "ringing",
                "Digits": "2",
                "Timestamp": "Mon, 23 Nov 2026 09:30:00 +0000",
            },
            {"CallStatus": "in-progress", "Timestamp": "Mon, 23 Nov 2026 09:30:48 +0000"},
            {
                "CallStatus": "completed",
                "CallDuration": "430",
                "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE5f8e",
                "RecordingSid": "RE5f8e",
                "RecordingDuration": "382",
                "Timestamp": "Mon, 23 Nov 2026 09:37:10 +0000",
            },
        ]
        for step in [*steps, steps[-1]]:  # the last one retried
            answer = await hub.client.post(
                path, **twilio_request(path, {**call, **step}, VOICE_TOKEN)
            )
            assert answer.status_code == 200, answer.text
        events = await hub.events(CONVERSATION.name)
    kinds = [e.type.split(".")[2] for e in events]
    assert kinds == ["started", "call_started", "call_answered", "call_ended"]
    assert events[0].data.routing_hints == {"ivr_choice": "2"}
    assert events[2].data.wait_seconds == 48
    assert events[3].data.duration_seconds == 430
    assert events[3].data.ivr_choice == "2"
    assert events[3].data.recording.duration_seconds == 382


async def test_lifecycle_channel_switch_reopen_survey_and_close(embedded: Any) -> None:
    config = hub_config()
    async with running_hub(embedded, [create_service(config)], config) as hub:
        await sms(hub, "SMlife0000000000000000000000000001", "hi", sender="+16505551234")
        switch = await hub.client.post(
            "/v1/webhooks/whatsapp/wa-main",
            **whatsapp_request(whatsapp_text("wamid.l2", "me again")),
        )
        assert switch.status_code == 200
        events = await hub.events(CONVERSATION.name)
        conversation = events[0].data.conversation_id
        switched = [e for e in events if e.type == "convohub.conversation.channel_switched.v1"]
        assert len(switched) == 1
        assert switched[0].data.conversation_id == conversation
        assert (switched[0].data.from_channel_id, switched[0].data.to_channel_id) == (
            "sms-main",
            "wa-main",
        )

        await hub.publish(resolved(conversation))
        await wait_for_status(hub, conversation, "resolved")
        await hub.publish(survey(conversation))
        await wait_for_status(hub, conversation, "resolved", survey=True)
        await sms(hub, "SMlife0000000000000000000000000003", "5", sender="+16505551234")
        await hub.publish(
            new_event(
                ConversationClosed(
                    conversation_id=conversation,
                    reason=ConversationCloseReason.RESOLVED,
                    closed_by=Participant(kind=ParticipantKind.SYSTEM),
                    closed_at=datetime(2026, 11, 24, tzinfo=UTC),
                ),
                tenant_id="acme",
                source=SOURCE,
            )
        )
        await wait_for_status(hub, conversation, "closed")
        await sms(hub, "SMlife0000000000000000000000000004", "new problem", sender="+16505551234")
        events = await hub.events(CONVERSATION.name)
    mine = [e for e in events if e.source == "convohub/ingest"]
    kinds = [e.type.split(".")[2] for e in mine]
    assert "reopened" not in kinds  # the survey answer did not reopen it
    started = [e for e in mine if e.type == STARTED]
    assert len(started) == 2
    assert started[1].data.conversation_id != conversation
    answer = next(e for e in mine if e.type == RECEIVED and e.data.content.text == "5")
    assert answer.data.conversation_id == conversation


async def test_a_customer_message_reopens_a_resolved_conversation(embedded: Any) -> None:
    config = hub_config()
    async with running_hub(embedded, [create_service(config)], config) as hub:
        first = await api_message(hub, "ext-r1", "help")
        conversation = first.json()["conversation_id"]
        await hub.publish(resolved(conversation))
        await wait_for_status(hub, conversation, "resolved")
        again = await api_message(hub, "ext-r2", "it broke again")
        assert again.json()["conversation_id"] == conversation
        (reopened,) = await hub.wait_for_events(
            CONVERSATION.name, of_type("convohub.conversation.reopened.v1")
        )
        await wait_for_status(hub, conversation, "open")
    assert reopened.data.reason == "customer_message"
    assert reopened.data.message_id == again.json()["message_id"]


def resolved(conversation: str) -> Any:
    return new_event(
        ConversationResolved(
            conversation_id=conversation,
            resolved_by=Participant(kind=ParticipantKind.AGENT, id="agent-42"),
            resolved_at=datetime(2026, 11, 23, 10, tzinfo=UTC),
        ),
        tenant_id="acme",
        source=SOURCE,
    )


def survey(conversation: str) -> Any:
    example = SurveySent.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
    return new_event(
        SurveySent.model_validate({**example, "conversation_id": conversation}),
        tenant_id="acme",
        source="tests/feedback",
    )


async def test_web_chat_session_messages_and_agent_replies_over_sse(embedded: Any) -> None:
    config = hub_config()
    async with running_hub(embedded, [create_service(config)], config) as hub:
        elsewhere = await hub.client.post(
            "/v1/webchat/web-main/sessions", json={}, headers={"Origin": "https://evil.example"}
        )
        assert elsewhere.status_code == 403
        started = await hub.client.post(
            "/v1/webchat/web-main/sessions",
            json={"display_name": "Visitor"},
            headers={"Origin": ORIGIN},
        )
        assert started.status_code == 201, started.text
        assert started.headers["access-control-allow-origin"] == ORIGIN
        session = started.json()
        token = {"X-Session-Token": session["session_token"], "Origin": ORIGIN}
        sent = await hub.client.post(
            "/v1/webchat/web-main/messages",
            json={"client_message_id": "c1", "text": "hello?"},
            headers=token,
        )
        assert sent.status_code == 202, sent.text
        resent = await hub.client.post(
            "/v1/webchat/web-main/messages",
            json={"client_message_id": "c1", "text": "hello?"},
            headers=token,
        )
        assert resent.json()["duplicate"] is True
        bad_token = await hub.client.post(
            "/v1/webchat/web-main/messages",
            json={"client_message_id": "c2", "text": "x"},
            headers={"X-Session-Token": "forged"},
        )
        assert bad_token.status_code == 401
        conversation = sent.json()["conversation_id"]
        await hub.publish(reply(conversation, session["visitor_id"], "How can I help?"))

        async def streamed() -> Any:
            answer = await hub.client.get(
                "/v1/webchat/web-main/events",
                params={"token": session["session_token"], "wait": 0},
            )
            return "How can I help?" in answer.text and answer

        answer = await eventually(streamed, "the agent's reply on the stream")
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert "event: message" in answer.text
    assert "id: 1" in answer.text


def reply(conversation: str, visitor: str, text: str) -> Any:
    return new_event(
        MessageSent(
            conversation_id=conversation,
            message_id="msg-agent-1",
            channel=Channel.WEB_CHAT,
            channel_id="web-main",
            author=Participant(kind=ParticipantKind.AGENT, id="agent-42", display_name="Li Wei"),
            recipient=ChannelIdentity(
                channel=Channel.WEB_CHAT, channel_id="web-main", address=visitor
            ),
            content=MessageContent(text=text),
            sent_at=datetime(2026, 11, 23, 9, 5, tzinfo=UTC),
        ),
        tenant_id="acme",
        source=SOURCE,
    )


async def test_bad_input_is_refused_with_problems_and_no_event(embedded: Any) -> None:
    config = hub_config()
    async with running_hub(embedded, [create_service(config)], config) as hub:
        path = "/v1/webhooks/twilio/sms-main"
        form = twilio_sms("SMbad00000000000000000000000000001", "hi")
        signed = twilio_request(path, form, SMS_TOKEN, base=PUBLIC)
        # Signed for the request URL, not the configured public one: refused.
        wrong_url = await hub.client.post(path, **twilio_request(path, form, SMS_TOKEN))
        wrong_token = await hub.client.post(
            path, **twilio_request(path, form, "other", base=PUBLIC)
        )
        unsigned = await hub.client.post(
            path,
            content=signed["content"],
            headers={"Content-Type": signed["headers"]["Content-Type"]},
        )
        malformed_form = {k: v for k, v in form.items() if k != "From"}
        malformed = await hub.client.post(
            path, **twilio_request(path, malformed_form, SMS_TOKEN, base=PUBLIC)
        )
        unknown = await hub.client.post("/v1/webhooks/twilio/nope", **signed)
        wa_bad = await hub.client.post(
            "/v1/webhooks/whatsapp/wa-main", **whatsapp_request({"entry": [{"changes": "x"}]})
        )
        oversize = await api_message(hub, "ext-big", "x" * 5000)
        missing_field = await hub.client.post(
            "/v1/channels/api-main/messages",
            json={"customer": {"id": "c"}, "text": "x"},
            headers=hub.auth(API_KEY),
        )
        bad_phone = await api_message(hub, "ext-phone", phone="not-a-phone")
        other_tenant = await hub.client.post(
            "/v1/channels/api-main/messages",
            json={"external_id": "e", "customer": {"id": "c"}, "text": "x"},
            headers=hub.auth(GLOBEX_KEY),
        )
        narrow = await hub.client.post(
            "/v1/channels/api-main/messages",
            json={"external_id": "e", "customer": {"id": "c"}, "text": "x"},
            headers=hub.auth(NARROW_KEY),
        )
        flood = await asyncio.gather(*(api_message(hub, f"ext-flood-{n}") for n in range(30)))
        events = await hub.events(CONVERSATION.name)

    expectations = [
        (wrong_url, 403, "invalid_signature"),
        (wrong_token, 403, "invalid_signature"),
        (unsigned, 401, "missing_signature"),
        (malformed, 422, "invalid_payload"),
        (unknown, 404, "unknown_channel"),
        (wa_bad, 422, "invalid_payload"),
        (oversize, 413, "body_too_large"),
        (missing_field, 422, "validation"),
        (bad_phone, 422, "validation"),
        (other_tenant, 404, "unknown_channel"),
        (narrow, 403, "forbidden"),
    ]
    for response, status, code in expectations:
        assert response.status_code == status, (status, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code
    assert "From" in malformed.json()["detail"]
    assert wa_bad.json()["errors"][0]["field"] == "entry[0].changes"
    assert missing_field.json()["errors"][0]["field"] == "body.external_id"
    assert bad_phone.json()["errors"][0]["field"] == "body.customer.phone"
    limited = [r for r in flood if r.status_code == 429]
    assert limited
    assert limited[0].headers["Retry-After"].isdigit()
    accepted = len([r for r in flood if r.status_code == 202])
    assert len([e for e in events if e.type == RECEIVED]) == accepted


async def test_erasure_purges_the_customers_identifiers_names_and_texts(embedded: Any) -> None:
    config = hub_config()
    async with running_hub(embedded, [create_service(config)], config) as hub:
        started = await hub.client.post(
            "/v1/webchat/web-main/sessions",
            json={"phone": "+16505551234", "display_name": "Kerry"},
            headers={"Origin": ORIGIN},
        )
        session = started.json()
        sent = await hub.client.post(
            "/v1/webchat/web-main/messages",
            json={"client_message_id": "c1", "text": "hi"},
            headers={"X-Session-Token": session["session_token"]},
        )
        conversation = sent.json()["conversation_id"]
        await hub.publish(reply(conversation, session["visitor_id"], "secret reply"))
        identified = CustomerIdentified.model_validate(
            {
                **CustomerIdentified.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                "customer_id": "cust-9",
                "identifier": CustomerIdentifier(
                    kind=IdentifierKind.PHONE, value="+16505551234", verified=False
                ),
                "matched_by": IdentityMatchMethod.NEW,
                "conversation_id": conversation,
            }
        )
        await hub.publish(new_event(identified, tenant_id="acme", source="tests/crm"))
        await hub.publish(
            new_event(
                CustomerErased.model_validate(
                    {
                        **CustomerErased.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                        "customer_id": "cust-9",
                    }
                ),
                tenant_id="acme",
                source="tests/crm",
            )
        )

        async def erased() -> bool:
            row = await conversation_row(hub, conversation)
            return (
                row.address == ""
                and row.display_name is None
                and "+16505551234" not in row.customer_key
            )

        await eventually(erased, "the conversation's identifiers erased")
        stream = await hub.client.get(
            "/v1/webchat/web-main/events", params={"token": session["session_token"], "wait": 0}
        )
    assert stream.status_code == 401  # the session itself is gone


async def test_a_failed_publish_or_a_crashed_claim_is_retried_into_exactly_one_event(
    embedded: Any,
) -> None:
    config = hub_config()
    service = create_service(config)
    async with running_hub(embedded, [service], config) as hub:
        real_publish = hub.bus.publish

        async def broker_down(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("broker unavailable")

        hub.bus.publish = broker_down  # type: ignore[method-assign]
        refused = await sms(hub, "SMcrash000000000000000000000000001", "are you there?")
        hub.bus.publish = real_publish  # type: ignore[method-assign]
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert not [e for e in await hub.events(CONVERSATION.name) if e.type == RECEIVED]
        retried = await sms(hub, "SMcrash000000000000000000000000001", "are you there?")
        assert retried.status_code == 200, retried.text

        # A replica that crashed right after claiming: its claim is retaken after the timeout.
        engine = hub.host.stores["ingest"].engine
        async with engine.begin() as connection:
            await connection.execute(
                INBOUND_CLAIMS.insert().values(
                    tenant_id="acme",
                    channel_id="sms-main",
                    dedupe_key="message:SMcrash000000000000000000000000002",
                    state="pending",
                    owner="dead-replica",
                    claimed_at=datetime(2026, 1, 1, tzinfo=UTC),
                )
            )
        taken_over = await sms(hub, "SMcrash000000000000000000000000002", "hello?")
        assert taken_over.status_code == 200, taken_over.text

        # One that crashed after deciding, before publishing: exactly its events go out.
        decided = next(e for e in await hub.events(CONVERSATION.name) if e.type == RECEIVED)
        stored = decided.model_copy(
            update={
                "id": "3f1a7c4e-0000-5000-8000-000000000003",
                "data": decided.data.model_copy(
                    update={"provider_message_id": "SMcrash000000000000000000000000003"}
                ),
            }
        )
        async with engine.begin() as connection:
            await connection.execute(
                INBOUND_CLAIMS.insert().values(
                    tenant_id="acme",
                    channel_id="sms-main",
                    dedupe_key="message:SMcrash000000000000000000000000003",
                    state="pending",
                    owner="dead-replica",
                    claimed_at=datetime(2026, 1, 1, tzinfo=UTC),
                    records=[encode_event(stored).decode()],
                    outcome={"conversation_id": "c"},
                )
            )
        republished = await sms(hub, "SMcrash000000000000000000000000003", "hello?")
        assert republished.status_code == 200, republished.text
        events = await hub.events(CONVERSATION.name)
    received = [e for e in events if e.type == RECEIVED]
    assert sorted(e.data.provider_message_id for e in received) == [
        "SMcrash000000000000000000000000001",
        "SMcrash000000000000000000000000002",
        "SMcrash000000000000000000000000003",
    ]
    (third,) = [e for e in received if e.data.provider_message_id.endswith("003")]
    assert third.id == "3f1a7c4e-0000-5000-8000-000000000003"  # the stored event, as decided
