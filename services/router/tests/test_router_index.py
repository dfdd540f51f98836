"""The agent index of a dispatch round (large rosters) chooses exactly the agent that
`choose_agent` over the whole roster chooses, also after placements; a round's writes are
refused when they would break capacity or single assignment; and the script-based language
guess of classification."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convohub.contracts.events.common import AgentTier, Channel, Priority
from convohub.router.adapters import repository as repo
from convohub.router.adapters.tables import METADATA
from convohub.router.domain.assignment import (
    SHORTLIST_ABOVE,
    AgentIndex,
    AgentState,
    Waiting,
    choose_agent,
)
from convohub.router.domain.classification import Contact, classify, detected_language
from convohub.router.domain.config import RoutingConfig
from convohub.runtime.store import ProjectionStore, create_engine, migrate_runtime

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


async def test_a_round_whose_writes_would_break_capacity_or_requeue_is_refused(
    tmp_path: Path,
) -> None:
    store = ProjectionStore(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"))
    await migrate_runtime(store.engine)
    async with store.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
        await repo.upsert_agent(
            connection,
            "acme",
            "a1",
            name="a1",
            tier=AgentTier.MID,
            skills={"support": 3},
            capacity_total=5,
            per_channel={"web_chat": 1},
            now=NOW,
        )
        for conversation, state in (("c1", "queued"), ("c2", "queued"), ("c3", "closed")):
            await repo.insert_conversation(
                connection,
                conversation_id=conversation,
                tenant_id="acme",
                channel="web_chat",
                state=state,
            )
    try:
        # two web chats for an agent with room for one (a stale view of the load)
        plan = repo.Placements("acme")
        for conversation in ("c1", "c2"):
            plan.reserve("a1", "web_chat")
            plan.assign(conversation, "a1", 1, {"summary": "test"})
        async with store.engine.connect() as connection:
            with pytest.raises(repo.PlacementConflict, match="above capacity"):
                await plan.write(connection)
        # a conversation that is no longer queued
        plan = repo.Placements("acme")
        plan.reserve("a1", "web_chat")
        plan.assign("c3", "a1", 1, {"summary": "test"})
        async with store.engine.connect() as connection:
            with pytest.raises(repo.PlacementConflict, match="no longer queued"):
                await plan.write(connection)
        # a fitting round is written
        plan = repo.Placements("acme")
        plan.reserve("a1", "web_chat")
        plan.assign("c1", "a1", 1, {"summary": "test"})
        async with store.engine.begin() as connection:
            await plan.write(connection)
            row = await repo.conversation(connection, "c1")
            assert (row.state, row.agent_id, row.explanation) == (
                "assigned",
                "a1",
                {"summary": "test"},
            )
            assert (await repo.agent_row(connection, "acme", "a1")).load == 1
    finally:
        await store.engine.dispose()
