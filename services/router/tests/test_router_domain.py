"""Pure routing decisions: classification, queue order, widening and the strategies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from convohub.contracts.events.common import AgentTier, Channel, Priority
from convohub.router.domain.assignment import AgentState, Waiting, choose_agent, queue_key
from convohub.router.domain.classification import Contact, classify
from convohub.router.domain.config import RoutingConfig

NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)


def config(**extra: object) -> RoutingConfig:
    return RoutingConfig.model_validate(
        {
            "skill_groups": [
                {"id": "sales", "neighbours": ["support"]},
                {"id": "support"},
                {"id": "complaints", "min_proficiency": 3},
                {"id": "vip"},
            ],
            "default_skill_group": "support",
            "rules": [
                {"id": "ivr-sales", "match": {"ivr": ["1"]}, "skill_group": "sales"},
                {
                    "id": "complaint",
                    "match": {"keywords": ["投诉", "complaint"]},
                    "skill_group": "complaints",
                    "priority": "P2",
                    "escalate": "senior_tier",
                },
                {"id": "order", "match": {"regex": r"order\s*#\d+"}, "skill_group": "support"},
                {
                    "id": "email-sales",
                    "match": {"channels": ["email"], "keywords": ["price"]},
                    "skill_group": "sales",
                    "priority": "P4",
                },
                {"id": "gold", "match": {"segments": ["gold"]}, "skill_group": "sales"},
            ],
            "complaint_keywords": ["angry", "生气"],
            "vip_skill_group": "vip",
            **extra,
        }
    )


def agent(
    name: str,
    skills: dict[str, int],
    *,
    load: int = 0,
    idle: int = 0,
    tier: str = "mid",
    online: bool = True,
    chat: int = 3,
    total: int = 5,
) -> AgentState:
    return AgentState(
        id=name,
        tier=AgentTier(tier),
        skills=skills,
        online=online,
        load=load,
        capacity=total,
        channel_load={"web_chat": load},
        channel_capacity={"web_chat": chat},
        idle_since=NOW - timedelta(seconds=idle),
    )


def waiting(
    group: str = "support", *, waited: int = 0, priority: str = "P3", **extra: object
) -> Waiting:
    return Waiting(
        conversation_id="c",
        skill_group=group,
        channel=Channel.WEB_CHAT,
        priority=Priority(priority),
        queued_at=NOW - timedelta(seconds=waited),
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("contact", "group", "priority", "rule"),
    [
        (Contact(Channel.WEB_CHAT, "我要投诉"), "complaints", "P2", "complaint"),
        (Contact(Channel.WEB_CHAT, "A COMPLAINT and I am ANGRY"), "complaints", "P1", "complaint"),
        (Contact(Channel.VOICE, "", ivr_choice="1"), "sales", "P3", "ivr-sales"),
        (Contact(Channel.WEB_CHAT, "where is order #1234"), "support", "P3", "order"),
        (Contact(Channel.EMAIL, "what price?"), "sales", "P4", "email-sales"),
        (Contact(Channel.WEB_CHAT, "what price?"), "support", "P3", "default"),
        (Contact(Channel.WEB_CHAT, "hi", segments={"gold"}), "sales", "P3", "gold"),
        (Contact(Channel.WEB_CHAT, "我很生气"), "support", "P2", "default"),
    ],
)
def test_the_first_matching_rule_decides(
    contact: Contact, group: str, priority: str, rule: str
) -> None:
    decided = classify(config(), contact)
    assert (decided.skill_group, decided.priority, decided.rule_id) == (group, priority, rule)


def test_keyword_and_regex_rules_report_the_matched_text() -> None:
    assert classify(config(), Contact(Channel.WEB_CHAT, "我要投诉")).matched_text == "投诉"
    assert (
        classify(config(), Contact(Channel.WEB_CHAT, "order #77 late")).matched_text == "order #77"
    )


def test_vip_goes_to_the_vip_group_or_gets_a_higher_priority() -> None:
    vip = classify(config(), Contact(Channel.WEB_CHAT, "hi", segments={"vip"}))
    assert (vip.skill_group, vip.vip) == ("vip", True)
    no_group = classify(
        config(vip_skill_group=None), Contact(Channel.WEB_CHAT, "hi", segments={"vip"})
    )
    assert (no_group.skill_group, no_group.priority) == ("support", "P2")


def test_invalid_configuration_is_refused_with_its_reason() -> None:
    with pytest.raises(ValidationError, match="unknown skill_group 'nowhere'"):
        config(rules=[{"id": "x", "match": {"keywords": ["a"]}, "skill_group": "nowhere"}])
    with pytest.raises(ValidationError, match="regular expression"):
        config(rules=[{"id": "x", "match": {"regex": "("}, "skill_group": "sales"}])


def test_least_busy_prefers_the_lowest_load_ratio() -> None:
    agents = [agent("a", {"support": 5}, load=2), agent("b", {"support": 1}, load=1)]
    decision = choose_agent(config(), waiting(), agents, NOW)
    assert decision.agent_id == "b"
    assert {c.agent_id: c.rejected_because for c in decision.candidates}["a"] is not None


def test_longest_idle_prefers_who_waited_longest() -> None:
    agents = [
        agent("a", {"support": 3}, load=0, idle=10),
        agent("b", {"support": 3}, load=2, idle=500),
    ]
    assert choose_agent(config(strategy="longest_idle"), waiting(), agents, NOW).agent_id == "b"
    assert choose_agent(config(), waiting(), agents, NOW).agent_id == "a"


def test_round_robin_takes_turns() -> None:
    agents = [agent(n, {"support": 3}) for n in ("a", "b", "c")]
    rr = config(strategy="round_robin")
    picks, last = [], None
    for _ in range(4):
        last = choose_agent(rr, waiting(), agents, NOW, round_robin_after=last).agent_id
        picks.append(last)
    assert picks == ["a", "b", "c", "a"]


def test_widening_lowers_proficiency_then_neighbours_then_anyone() -> None:
    steps = {
        "widening": [
            {"after_seconds": 60, "action": "lower_proficiency"},
            {"after_seconds": 120, "action": "neighbours"},
            {"after_seconds": 300, "action": "any_agent"},
        ]
    }
    low = [agent("low", {"complaints": 1})]
    assert choose_agent(config(**steps), waiting("complaints"), low, NOW).agent_id is None
    widened = choose_agent(config(**steps), waiting("complaints", waited=61), low, NOW)
    assert (widened.agent_id, widened.widening_level) == ("low", 1)
    neighbour = [agent("n", {"support": 2})]
    assert (
        choose_agent(config(**steps), waiting("sales", waited=61), neighbour, NOW).agent_id is None
    )
    assert (
        choose_agent(config(**steps), waiting("sales", waited=121), neighbour, NOW).agent_id == "n"
    )
    stranger = [agent("s", {"vip": 2})]
    assert (
        choose_agent(config(**steps), waiting("sales", waited=121), stranger, NOW).agent_id is None
    )
    assert (
        choose_agent(config(**steps), waiting("sales", waited=301), stranger, NOW).agent_id == "s"
    )


def test_offline_full_wrong_tier_and_excluded_agents_are_skipped_with_reasons() -> None:
    agents = [
        agent("off", {"support": 5}, online=False),
        agent("full", {"support": 5}, load=3, chat=3, tier="senior"),
        agent("junior", {"support": 5}, tier="junior"),
        agent("declined", {"support": 5}, tier="senior"),
    ]
    decision = choose_agent(
        config(),
        waiting(required_tier=AgentTier.SENIOR, excluded=frozenset({"declined"})),
        agents,
        NOW,
    )
    assert decision.agent_id is None
    reasons = {c.agent_id: c.rejected_because for c in decision.candidates}
    assert reasons["off"] == "offline"
    assert reasons["full"] == "at capacity (3/3 web_chat)"
    assert "tier" in reasons["junior"]
    assert "declined" in reasons["declined"]


def test_the_previous_agent_is_waited_for_until_the_sticky_window_ends() -> None:
    agents = [agent("prev", {"support": 3}, load=3, chat=3), agent("free", {"support": 3})]
    sticky = waiting(preferred_agent="prev", preferred_until=NOW + timedelta(seconds=30))
    assert choose_agent(config(), sticky, agents, NOW).agent_id is None
    assert choose_agent(config(), sticky, agents, NOW + timedelta(seconds=31)).agent_id == "free"


@given(
    first=st.sampled_from(["P1", "P2", "P3", "P4"]),
    second=st.sampled_from(["P1", "P2", "P3", "P4"]),
    waited=st.integers(0, 5000),
)
def test_queue_order_is_priority_first_and_aging_never_starves(
    first: str, second: str, waited: int
) -> None:
    old = waiting(priority=first, waited=waited)
    new = Waiting(
        conversation_id="d",
        skill_group="support",
        channel=Channel.WEB_CHAT,
        priority=Priority(second),
        queued_at=NOW,
    )
    old_first = queue_key(old, NOW, 300) < queue_key(new, NOW, 300)
    steps_aged = waited // 300
    if int(first[1]) - steps_aged <= int(second[1]):
        assert old_first
    else:
        assert not old_first
