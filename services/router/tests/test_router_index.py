"""The agent index of a dispatch round (large rosters) chooses exactly the agent that
`choose_agent` over the whole roster chooses, also after placements; and the script-based
language guess of classification."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convohub.contracts.events.common import AgentTier, Channel, Priority
from convohub.router.domain.assignment import (
    SHORTLIST_ABOVE,
    AgentIndex,
    AgentState,
    Waiting,
    choose_agent,
)
from convohub.router.domain.classification import Contact, classify, detected_language
from convohub.router.domain.config import RoutingConfig

NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)
GROUPS = ("sales", "support", "complaints")
TIERS = tuple(AgentTier)


def routing(strategy: str) -> RoutingConfig:
    return RoutingConfig.model_validate(
        {
            "skill_groups": [
                {"id": "sales", "neighbours": ["support"]},
                {"id": "support", "neighbours": ["sales"]},
                {"id": "complaints", "min_proficiency": 3},
            ],
            "default_skill_group": "support",
            "strategy": strategy,
            "widening": [
                {"after_seconds": 30, "action": "lower_proficiency"},
                {"after_seconds": 60, "action": "neighbours"},
                {"after_seconds": 120, "action": "any_agent"},
            ],
        }
    )


agents_strategy = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(GROUPS), st.integers(1, 5), max_size=2),
        st.integers(0, 4),  # load
        st.booleans(),  # online
        st.sampled_from(TIERS),
        st.integers(0, 600),  # idle seconds
    ),
    min_size=SHORTLIST_ABOVE + 1,
    max_size=SHORTLIST_ABOVE + 40,
)


def roster(specs: list[tuple[dict[str, int], int, bool, AgentTier, int]]) -> list[AgentState]:
    return [
        AgentState(
            id=f"agent-{n:03d}",
            tier=tier,
            skills=skills,
            online=online,
            load=load,
            capacity=4,
            channel_load={"web_chat": load},
            channel_capacity={"web_chat": 3},
            idle_since=NOW - timedelta(seconds=idle),
        )
        for n, (skills, load, online, tier, idle) in enumerate(specs)
    ]


@settings(max_examples=60, deadline=None)
@given(
    specs=agents_strategy,
    strategy=st.sampled_from(["least_busy", "longest_idle", "round_robin"]),
    items=st.lists(
        st.tuples(
            st.sampled_from(GROUPS),
            st.integers(0, 200),  # waited seconds
            st.none() | st.sampled_from(TIERS),
            st.sets(st.integers(0, 30), max_size=3),  # excluded agent numbers
            st.none() | st.integers(0, 30),  # preferred agent number
        ),
        min_size=1,
        max_size=25,
    ),
    cursor=st.none() | st.integers(0, 100),
)
def test_the_index_chooses_what_the_whole_roster_would(
    specs: list[tuple[dict[str, int], int, bool, AgentTier, int]],
    strategy: str,
    items: list[tuple[str, int, AgentTier | None, set[int], int | None]],
    cursor: int | None,
) -> None:
    config = routing(strategy)
    agents = {agent.id: agent for agent in roster(specs)}
    index = AgentIndex(config, list(agents.values()))
    after = None if cursor is None else f"agent-{cursor:03d}"
    for n, (group, waited, tier, excluded, preferred) in enumerate(items):
        item = Waiting(
            conversation_id=f"c{n}",
            skill_group=group,
            channel=Channel.WEB_CHAT,
            priority=Priority.P3,
            queued_at=NOW - timedelta(seconds=waited),
            required_tier=tier,
            preferred_agent=None if preferred is None else f"agent-{preferred:03d}",
            preferred_until=NOW + timedelta(seconds=60),
            excluded=frozenset(f"agent-{e:03d}" for e in excluded),
        )
        whole = choose_agent(config, item, list(agents.values()), NOW, round_robin_after=after)
        shortlist, eligible = index.shortlist(item, NOW, round_robin_after=after)
        short = choose_agent(
            config, item, shortlist, NOW, round_robin_after=after, eligible_count=eligible
        )
        assert short.agent_id == whole.agent_id
        assert short.strategy == whole.strategy
        assert short.summary == whole.summary
        assert len(shortlist) <= 21
        assert index.free_on(Channel.WEB_CHAT) == any(
            a.online and a.free_on(Channel.WEB_CHAT) for a in agents.values()
        )
        if whole.agent_id is not None:  # place it, as a dispatch round does
            chosen = agents[whole.agent_id]
            placed = replace(
                chosen,
                load=chosen.load + 1,
                channel_load={"web_chat": chosen.channel_load["web_chat"] + 1},
                idle_since=NOW,
            )
            agents[placed.id] = placed
            index.replace(placed)
            after = placed.id


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("我要投诉，你们的物流太慢了", "zh"),
        ("where is my order #1234?", "en"),
        ("我的物流单号是 SF1234", "zh"),
        ("please help me with the refund for order 88, 谢谢", "en"),
        ("配送はいつですか", "ja"),
        ("배송이 늦어요", "ko"),
        ("12345 !!!", None),
        ("", None),
    ],
)
def test_language_is_guessed_from_the_script(text: str, language: str | None) -> None:
    assert detected_language(text) == language


def test_classification_carries_the_language_with_chinese_and_english_keyword_rules() -> None:
    config = RoutingConfig.model_validate(
        {
            "skill_groups": [{"id": "support"}, {"id": "logistics"}],
            "default_skill_group": "support",
            "rules": [
                {
                    "id": "logistics",
                    "match": {"keywords": ["物流", "发货", "shipping"]},
                    "skill_group": "logistics",
                }
            ],
        }
    )
    chinese = classify(config, Contact(Channel.WEB_CHAT, "请问什么时候发货？"))
    english = classify(config, Contact(Channel.WEB_CHAT, "When is SHIPPING due?"))
    neither = classify(config, Contact(Channel.WEB_CHAT, "你好"))
    assert (chinese.skill_group, chinese.matched_text, chinese.language) == (
        "logistics",
        "发货",
        "zh",
    )
    assert (english.skill_group, english.matched_text, english.language) == (
        "logistics",
        "shipping",
        "en",
    )
    assert (neither.skill_group, neither.rule_id, neither.language) == ("support", "default", "zh")
