"""The clock fold: starts, pauses, met, policy matching and retargeting, recomputation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from convohub.contracts.events.common import Channel, Priority
from convohub.contracts.events.sla import SlaMetric
from convohub.sla.domain.clocks import (
    ChangeKind,
    ClockState,
    ConversationSla,
    Fact,
    FactKind,
    planned_timers,
)
from convohub.sla.domain.policies import ConversationAttributes, SlaSection

T0 = datetime(2026, 3, 27, 15, 0, tzinfo=UTC)  # a Friday, 16:00 in Berlin
SECTION = SlaSection.model_validate(
    yaml.safe_load(
        """
calendars:
  - id: berlin
    timezone: Europe/Berlin
    hours: {mon: ["09:00-18:00"], tue: ["09:00-18:00"], wed: ["09:00-18:00"],
            thu: ["09:00-18:00"], fri: ["09:00-18:00"]}
    holidays: [2026-03-30]
policies:
  - id: chat
    match: {channels: [web_chat]}
    first_response: 60s
    next_response: 2m
    resolution: 1h
  - id: p1
    match: {priorities: [P1]}
    first_response: 20s
  - id: vip
    match: {segments: [vip]}
    resolution: 4h
    business_hours_only: true
    calendar: berlin
    pause_while_waiting_on_customer: false
"""
    )
)


def fact(kind: FactKind, seconds: float, n: int = 0, **extra: object) -> Fact:
    return Fact(
        kind=kind, at=T0 + timedelta(seconds=seconds), event_id=f"{kind}-{seconds}-{n}", **extra
    )


def conversation() -> ConversationSla:
    return ConversationSla(tenant_id="acme", conversation_id="c1")


def test_first_reply_meets_first_response_and_pauses_resolution_until_the_customer_writes():
    state = conversation()
    started = state.apply(fact(FactKind.STARTED, 0, channel=Channel.WEB_CHAT), SECTION)
    assert [(c.kind, c.clock.metric) for c in started] == [
        (ChangeKind.STARTED, SlaMetric.FIRST_RESPONSE),
        (ChangeKind.STARTED, SlaMetric.RESOLUTION),
    ]
    reply = state.apply(fact(FactKind.AGENT_REPLY, 40), SECTION)
    assert [c.kind for c in reply] == [ChangeKind.MET, ChangeKind.PAUSED]
    first = state.clocks[SlaMetric.FIRST_RESPONSE]
    assert first.state is ClockState.MET
    assert first.elapsed(T0 + timedelta(hours=5), SECTION.calendar_of(None)) == timedelta(
        seconds=40
    )

    back = state.apply(fact(FactKind.CUSTOMER_MESSAGE, 7200), SECTION)
    assert [c.kind for c in back] == [ChangeKind.RESUMED, ChangeKind.STARTED]
    resolution = state.clocks[SlaMetric.RESOLUTION]
    # 40 s counted before the pause; 3560 s left from the customer's message
    assert resolution.due_at == T0 + timedelta(seconds=7200 + 3560)
    assert state.clocks[SlaMetric.NEXT_RESPONSE].due_at == T0 + timedelta(seconds=7200 + 120)

    done = state.apply(fact(FactKind.RESOLVED, 7300), SECTION)
    assert {(c.kind, c.clock.metric) for c in done} == {
        (ChangeKind.MET, SlaMetric.RESOLUTION),
        (ChangeKind.STOPPED, SlaMetric.NEXT_RESPONSE),
    }
    assert resolution.counted == timedelta(seconds=140)


def test_the_tightest_matching_target_applies_and_classification_retargets():
    state = conversation()
    state.apply(fact(FactKind.STARTED, 0, channel=Channel.WEB_CHAT), SECTION)
    assert state.clocks[SlaMetric.FIRST_RESPONSE].policy_id == "chat"
    changes = state.apply(
        fact(FactKind.CLASSIFIED, 5, priority=Priority.P1, skill_group="billing"), SECTION
    )
    assert [(c.kind, c.clock.metric) for c in changes] == [
        (ChangeKind.RETARGETED, SlaMetric.FIRST_RESPONSE)
    ]
    clock = state.clocks[SlaMetric.FIRST_RESPONSE]
    assert (clock.policy_id, clock.target_seconds) == ("p1", 20)
    assert clock.due_at == T0 + timedelta(seconds=20)
    assert (
        SECTION.policy_for(ConversationAttributes(priority=Priority.P3), SlaMetric.RESOLUTION)
        is None
    )


def test_vip_resolution_counts_business_hours_only():
    state = conversation()
    state.apply(fact(FactKind.STARTED, 0, channel=Channel.EMAIL), SECTION)
    assert SlaMetric.RESOLUTION not in state.clocks  # no policy for e-mail resolution
    # the customer turns out to be a VIP a minute later: the clock starts from the start
    changes = state.apply(fact(FactKind.SEGMENTS_CHANGED, 60, segments=("vip",)), SECTION)
    assert [(c.kind, c.clock.metric) for c in changes] == [
        (ChangeKind.STARTED, SlaMetric.RESOLUTION)
    ]
    clock = state.clocks[SlaMetric.RESOLUTION]
    assert clock.started_at == T0
    # Friday 16:00 + 4 business hours: 2 h on Friday, weekend and Monday's holiday
    # skipped, DST begins: Tuesday 11:00 CEST = 09:00 UTC.
    assert clock.due_at == datetime(2026, 3, 31, 9, 0, tzinfo=UTC)
    timers = planned_timers(
        clock, SECTION.policy("vip"), SECTION.calendar_of(SECTION.policy("vip"))
    )
    assert [timer.key for timer in timers] == ["warning-75", "warning-90", "breach"]
    assert timers[0].due_at == datetime(2026, 3, 31, 8, 0, tzinfo=UTC)  # 3 h in: Tue 10:00


def test_a_policy_change_recomputes_the_clocks_from_the_facts():
    state = conversation()
    for item in (
        fact(FactKind.STARTED, 0, channel=Channel.WEB_CHAT),
        fact(FactKind.AGENT_REPLY, 30),
        fact(FactKind.CUSTOMER_MESSAGE, 600),
    ):
        state.apply(item, SECTION)
    stricter = SECTION.model_copy(
        update={"policies": [SECTION.policies[0].model_copy(update={"next_response": 45})]}
    )
    again = ConversationSla.recompute("acme", "c1", state.facts, stricter)
    assert again.clocks[SlaMetric.NEXT_RESPONSE].due_at == T0 + timedelta(seconds=645)
    assert again.clocks[SlaMetric.FIRST_RESPONSE].state is ClockState.MET
    assert ConversationSla.recompute("acme", "c1", state.facts, SECTION) == state


kinds = st.sampled_from(
    [
        FactKind.CUSTOMER_MESSAGE,
        FactKind.AGENT_REPLY,
        FactKind.RESOLVED,
        FactKind.REOPENED,
        FactKind.CLASSIFIED,
        FactKind.SEGMENTS_CHANGED,
    ]
)
steps = st.lists(
    st.tuples(kinds, st.integers(min_value=0, max_value=20_000), st.booleans()), max_size=25
)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_clocks_never_count_more_than_wall_time_and_never_go_backwards(script):
    state = conversation()
    state.apply(fact(FactKind.STARTED, 0, channel=Channel.WEB_CHAT), SECTION)
    now = 0
    previous: dict[str, timedelta] = {}
    for index, (kind, gap, flag) in enumerate(script):
        now += gap
        extra: dict[str, object] = {}
        if kind is FactKind.CLASSIFIED:
            extra = {"priority": Priority.P1 if flag else Priority.P3}
        if kind is FactKind.SEGMENTS_CHANGED:
            extra = {"segments": ("vip",) if flag else ()}
        state.apply(fact(kind, now, index, **extra), SECTION)
        moment = T0 + timedelta(seconds=now)
        for clock in state.clocks.values():
            calendar = SECTION.calendar_of(SECTION.policy(clock.policy_id))
            elapsed = clock.elapsed(moment, calendar)
            assert timedelta(0) <= elapsed <= moment - clock.started_at
            assert elapsed >= previous.get(clock.clock_id, timedelta(0))
            previous[clock.clock_id] = elapsed
            if clock.state is ClockState.RUNNING and elapsed < timedelta(
                seconds=clock.target_seconds
            ):
                assert (
                    calendar.elapsed(moment, clock.due_at)
                    == timedelta(seconds=clock.target_seconds) - elapsed
                )
    assert ConversationSla.recompute("acme", "c1", state.facts, SECTION).clocks == state.clocks


def test_an_attribute_change_stamped_before_the_start_adds_no_time():
    # the router's topic can deliver a classification stamped before the conversation's start
    state = conversation()
    state.apply(fact(FactKind.STARTED, 100, channel=Channel.WEB_CHAT), SECTION)
    state.apply(fact(FactKind.CLASSIFIED, 50, priority=Priority.P1), SECTION)
    clock = state.clocks[SlaMetric.FIRST_RESPONSE]
    assert (clock.policy_id, clock.due_at) == ("p1", T0 + timedelta(seconds=120))
