"""Which events move the clocks, and how (the handler's translation into facts)."""

from __future__ import annotations

from datetime import UTC, datetime

from convohub.contracts import new_event
from convohub.contracts.events.common import (
    Channel,
    ChannelIdentity,
    MessageContent,
    Participant,
    ParticipantKind,
)
from convohub.contracts.events.conversation import (
    CallAnswered,
    CallDirection,
    CallStarted,
    MessageSent,
)
from convohub.contracts.events.sla import SlaMetric
from convohub.sla.domain.clocks import ClockState, ConversationSla, FactKind
from convohub.sla.domain.policies import SlaSection
from convohub.sla.handlers import fact_of

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CALLER = ChannelIdentity(channel=Channel.VOICE, channel_id="voice", address="+4930123456")
VOICE = SlaSection.model_validate(
    {"policies": [{"id": "voice", "match": {"channels": ["voice"]}, "first_response": "60s"}]}
)


def event(payload):
    return new_event(payload, tenant_id="acme", source="/test")


def test_a_call_answered_by_an_agent_meets_the_voice_first_response():
    call = CallStarted(
        conversation_id="v1",
        channel_id="voice",
        provider_call_id="CA1",
        customer=CALLER,
        company_number="+4930999",
        direction=CallDirection.INBOUND,
        started_at=T0,
    )
    answered = CallAnswered(
        conversation_id="v1",
        channel_id="voice",
        provider_call_id="CA1",
        agent_id="agent-1",
        answered_at=T0.replace(second=48),
        wait_seconds=48,
    )
    state = ConversationSla(tenant_id="acme", conversation_id="v1")
    for payload in (call, answered):
        fact = fact_of(event(payload))
        assert fact is not None
        state.apply(fact, VOICE)
    clock = state.clocks[SlaMetric.FIRST_RESPONSE]
    assert (clock.policy_id, clock.state, clock.counted.total_seconds()) == (
        "voice",
        ClockState.MET,
        48,
    )


def test_bot_messages_do_not_meet_clocks_and_unanswered_calls_tell_nothing():
    bot = MessageSent(
        conversation_id="c1",
        message_id="m1",
        channel=Channel.WEB_CHAT,
        channel_id="web",
        author=Participant(kind=ParticipantKind.BOT, id="faq-bot"),
        recipient=CALLER,
        content=MessageContent(text="hi"),
        sent_at=T0,
    )
    agent = bot.model_copy(update={"author": Participant(kind=ParticipantKind.AGENT, id="a")})
    unanswered = CallAnswered(
        conversation_id="v1",
        channel_id="voice",
        provider_call_id="CA1",
        answered_at=T0,
        wait_seconds=0,
    )
    assert fact_of(event(bot)) is None
    assert fact_of(event(unanswered)) is None
    agent_fact = fact_of(event(agent))
    assert agent_fact is not None
    assert agent_fact.kind is FactKind.AGENT_REPLY
