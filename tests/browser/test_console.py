"""The ops console in a real browser, against `convohub up` fed by `convohub simulate`.

The panels must show what the APIs answer (queues, agents, SLA, metrics, conversations);
an agent signs in, goes online, accepts an offer, replies and resolves through the page,
and the reply is in the conversation's timeline as the API serves it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from convohub.cli.simulate import SimulationSummary, simulate
from convohub.runtime.config import Role
from tests.conftest import REPO_DIR

from .conftest import Hub

README_SCREENSHOT = REPO_DIR / "docs" / "images" / "console.png"
WEB_CHAT = "web-main"
ORIGIN = "http://127.0.0.1:8080"  # an allowed origin of the sample's web chat channel
STARTED_BY_TESTS: list[str] = []
"""Conversations these tests started themselves, besides the simulator's."""


@pytest.fixture(scope="module")
def simulated(hub: Hub) -> SimulationSummary:
    """A short simulated rush: customers on every channel, simulated agents answering."""
    summary = run_simulation(hub, rate=2.5, duration=5.0, seed=11, drain=4.0)
    assert summary.conversations > 5, summary.lines()
    assert not summary.missing_messages, summary.lines()
    return summary


def run_simulation(hub: Hub, **options: Any) -> SimulationSummary:
    run = simulate(hub.base, hub.config, **options)
    # In a thread of its own: Playwright's sync API keeps an event loop in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run).result(timeout=120)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"the page raised: {errors}"


def sign_in(page: Page, hub: Hub, key: str) -> None:
    page.goto(f"{hub.base}/console")
    page.fill("#key", key)
    page.click("#sign-in-form button[type=submit]")
    refreshed = page.locator("body")
    expect(refreshed).to_have_attribute("data-refreshes", re.compile(r"\d+"), timeout=15_000)
    expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=10_000)


def agree(read_page: Callable[[], Any], read_api: Callable[[], Any], timeout: float = 20) -> Any:
    """Wait until the page shows what the API answers (the hub may still settle)."""
    deadline = time.monotonic() + timeout
    while True:
        expected = read_api()
        shown = read_page()
        if shown == expected or time.monotonic() > deadline:
            assert shown == expected
            return shown
        time.sleep(0.3)


def start_web_chat(hub: Hub, text: str) -> str:
    """A new visitor writes on the web chat; returns the conversation id."""
    session = httpx.post(
        f"{hub.base}/v1/webchat/{WEB_CHAT}/sessions",
        json={"display_name": "Browser Test"},
        headers={"Origin": ORIGIN},
    )
    assert session.status_code == 201, session.text
    sent = httpx.post(
        f"{hub.base}/v1/webchat/{WEB_CHAT}/messages",
        json={"client_message_id": uuid.uuid4().hex, "text": text},
        headers={"Origin": ORIGIN, "X-Session-Token": session.json()["session_token"]},
    )
    assert sent.status_code == 202, sent.text
    STARTED_BY_TESTS.append(sent.json()["conversation_id"])
    return str(sent.json()["conversation_id"])


def test_session_stream_and_assets_answer_problems(hub: Hub) -> None:
    supervisor = hub.key()
    anonymous = httpx.get(f"{hub.base}/v1/console/session")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.json()["code"] == "unauthenticated"
    wrong = httpx.get(f"{hub.base}/v1/console/stream", headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "unknown API key"
    assert hub.get("/v1/console/session", supervisor).json()["role"] == "supervisor"
    agent = hub.get("/v1/console/session", hub.key(role=Role.AGENT, agent_id="agent-chen"))
    assert agent.json()["agent_id"] == "agent-chen"
    missing = httpx.get(f"{hub.base}/console/secrets.yaml")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert httpx.get(f"{hub.base}/console").headers["content-type"].startswith("text/html")
    assert "javascript" in httpx.get(f"{hub.base}/console/console.js").headers["content-type"]

    headers = {"Authorization": f"Bearer {supervisor}"}
    with httpx.stream("GET", f"{hub.base}/v1/console/stream", headers=headers, timeout=20) as sse:
        assert sse.headers["content-type"].startswith("text/event-stream")
        lines = sse.iter_lines()
        events = _sse_events(lines)
        name, hello = next(events)
        assert name == "hello"
        start_web_chat(hub, "Is the stream alive?")
        name, change = next(events)
        assert name == "change"
        assert change["version"] > hello["version"], "the log moved by the new message"


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    name = "message"
    for line in lines:
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            yield name, json.loads(line.removeprefix("data:"))
            name = "message"


def test_supervisor_panels_show_the_simulated_numbers(
    hub: Hub, simulated: SimulationSummary, page: Page, artifacts: Path
) -> None:
    key = hub.key()
    sign_in(page, hub, key)

    def api_queues() -> dict[str, int]:
        return {q["skill_group"]: q["length"] for q in hub.get("/v1/queues", key).json()["queues"]}

    def page_queues() -> dict[str, int]:
        rows = page.locator("#panel-queues tr[data-queue]")
        return {
            row.get_attribute("data-queue"): int(row.get_attribute("data-length"))
            for row in rows.all()
        }

    agree(page_queues, api_queues)

    def api_agents() -> dict[str, tuple[str, int]]:
        agents = hub.get("/v1/agents", key).json()["agents"]
        return {a["agent_id"]: (a["presence"], a["load"]) for a in agents}

    def page_agents() -> dict[str, tuple[str, int]]:
        return {
            row.get_attribute("data-agent"): (
                row.get_attribute("data-presence"),
                int(row.get_attribute("data-load")),
            )
            for row in page.locator("#panel-agents tr[data-agent]").all()
        }

    agents = agree(page_agents, api_agents)
    assert len(agents) >= 3 + 1, "the sample's three agents and the simulated ones"

    def api_total() -> int:
        return int(hub.get("/v1/metrics", key).json()["rows"][0]["conversations"])

    def page_total() -> int:
        return int(page.locator("#kpi-conversations b").inner_text())

    # Every conversation the simulator (and this module) started, in the KPI and the heat map.
    started = simulated.conversations + len(STARTED_BY_TESTS)
    assert agree(page_total, api_total) == started
    heat = page.locator("#panel-heatmap .heatmap")
    assert int(heat.get_attribute("data-total")) == started

    def api_channels() -> dict[str, int]:
        rows = hub.get("/v1/metrics", key, group_by="channel").json()["rows"]
        return {r["channel"] or "unknown": r["conversations"] for r in rows}

    def page_channels() -> dict[str, int]:
        return {
            row.get_attribute("data-channel"): int(row.get_attribute("data-count"))
            for row in page.locator("#panel-channels .row").all()
        }

    mix = agree(page_channels, api_channels)
    assert len(mix) >= 3, "the simulator writes on several channels"

    def api_conversations() -> list[str]:
        items = hub.get("/v1/conversations", key, limit=15).json()["items"]
        return [c["conversation_id"] for c in items]

    def page_conversations() -> list[str]:
        rows = page.locator("#panel-conversations tr[data-conversation]")
        return [row.get_attribute("data-conversation") for row in rows.all()]

    agree(page_conversations, api_conversations)

    def api_at_risk() -> set[str]:
        clocks = hub.get("/v1/sla/at-risk", key, limit=8).json()["clocks"]
        return {c["conversation_id"] for c in clocks}

    def page_at_risk() -> set[str]:
        rows = page.locator("#panel-sla tr[data-conversation]")
        return {row.get_attribute("data-conversation") for row in rows.all()}

    agree(page_at_risk, api_at_risk)

    # Open one conversation: its timeline and why the router routed it where it did.
    assigned = next(
        c
        for c in hub.get("/v1/conversations", key, limit=15).json()["items"]
        if c["assigned_agent_id"]
    )
    page.click(f"#panel-conversations tr[data-conversation='{assigned['conversation_id']}']")
    view = page.locator("#panel-conversation")
    expect(view.locator(".meta")).to_have_attribute(
        "data-conversation", assigned["conversation_id"]
    )
    timeline = hub.get(f"/v1/conversations/{assigned['conversation_id']}", key).json()["timeline"]
    expect(view.locator(".timeline li")).to_have_count(len(timeline))
    expect(view.locator(".routing .summary")).to_contain_text("Why:")
    page.wait_for_timeout(300)  # let the last repaint land before the picture
    page.screenshot(path=artifacts / "supervisor.png", full_page=True)


def test_an_agent_accepts_replies_and_resolves_from_the_console(
    hub: Hub, simulated: SimulationSummary, page: Page, artifacts: Path
) -> None:
    agent_id = "agent-chen"
    key = hub.key(role=Role.AGENT, agent_id=agent_id)
    start_web_chat(hub, "How much is the pro plan? 价格是多少")
    sign_in(page, hub, key)
    assert page.locator("#panel-trends").is_hidden(), "metrics are for supervisors"

    page.click("#panel-offers button:has-text('Go online')")
    offer = page.locator("#panel-offers tr[data-offer]").first
    expect(offer).to_be_visible(timeout=15_000)
    conversation_id = offer.get_attribute("data-conversation")
    offer.locator("button.accept").click()

    view = page.locator("#panel-conversation")
    expect(view.locator(".meta")).to_have_attribute("data-conversation", conversation_id)
    expect(view.locator(".meta")).to_contain_text(f"agent {agent_id}", timeout=10_000)
    reply = f"Hello from the console {uuid.uuid4().hex[:8]}"
    view.locator("textarea").fill(reply)
    view.locator("button.send").click()
    expect(view.locator(".notice")).to_contain_text("Sent", timeout=10_000)
    expect(view.locator(".timeline")).to_contain_text(reply)

    conversation = hub.get(f"/v1/conversations/{conversation_id}", key).json()
    sent = [e for e in conversation["timeline"] if e["type"].endswith("message_sent.v1")]
    assert any(
        e["data"]["content"]["text"] == reply and e["data"]["author"]["id"] == agent_id
        for e in sent
    ), sent
    page.screenshot(path=artifacts / "agent-reply.png", full_page=True)

    view.locator("button.resolve").click()
    expect(view.locator(".notice")).to_contain_text("Resolved", timeout=10_000)
    assert hub.get(f"/v1/conversations/{conversation_id}", key).json()["state"] == "resolved"

    # Bad input answers a problem (RFC 9457) that the page shows, not a broken page.
    view.locator("textarea").fill("x" * 10_001)
    view.locator("button.send").click()
    expect(view.locator(".problem")).to_contain_text("body.text")
    page.screenshot(path=artifacts / "agent-problem.png", full_page=True)


def test_the_console_updates_live_while_customers_queue_up(
    hub: Hub, simulated: SimulationSummary, page: Page, artifacts: Path
) -> None:
    key = hub.key()
    for agent in hub.get("/v1/agents", key).json()["agents"]:  # nobody takes the rush
        if agent["presence"] == "online":
            away = httpx.put(
                f"{hub.base}/v1/agents/{agent['agent_id']}/presence",
                json={"presence": "away"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert away.status_code == 200, away.text
    sign_in(page, hub, key)
    before = int(page.locator("body").get_attribute("data-refreshes"))
    # Customers write with no simulated agents: they wait in the queues, on the page too.
    rush = run_simulation(hub, rate=6.0, duration=3.0, seed=12, agents=False, drain=2.0)
    assert rush.messages > 0, rush.lines()

    def api_waiting() -> dict[str, int]:
        return {q["skill_group"]: q["length"] for q in hub.get("/v1/queues", key).json()["queues"]}

    def page_waiting() -> dict[str, int]:
        return {
            row.get_attribute("data-queue"): int(row.get_attribute("data-length"))
            for row in page.locator("#panel-queues tr[data-queue]").all()
        }

    waiting = agree(page_waiting, api_waiting)
    assert sum(waiting.values()) > 0, "the rush waits for agents"
    refreshed = int(page.locator("body").get_attribute("data-refreshes"))
    assert refreshed > before, "the change stream made the page refetch, no reload"
    expect(page.locator("#kpi-waiting b")).to_have_text(str(sum(waiting.values())))
    first = page.locator("#panel-conversations tr[data-conversation]").first
    first.click()
    expect(page.locator("#panel-conversation .timeline li").first).to_be_visible()
    page.wait_for_timeout(300)  # let the last repaint land before the picture
    page.screenshot(path=artifacts / "console.png", full_page=True)
    if os.environ.get("CONVOHUB_README_SCREENSHOT") == "1":  # refresh the README's picture
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifacts / "console.png", README_SCREENSHOT)
