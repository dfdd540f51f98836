"""`convohub simulate` against a real `convohub up`: signed traffic on every channel kind
lands in the read model, simulated agents get it assigned and resolved, and the traffic
plan is a function of the seed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from convohub.cli.app import app
from convohub.cli.sample import EXAMPLE
from convohub.cli.simulate import plan_traffic, simulate
from convohub.runtime.config import HubConfig, load_config, parse_config

from .conftest import REPO_DIR, free_port

Hub = tuple[str, HubConfig]


def example_config(survey_delay_seconds: int = 300) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    # Surveys go out a second after resolution, so a short run sees them answered.
    return text.replace("delay_seconds: 300", f"delay_seconds: {survey_delay_seconds}")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    folder = tmp_path_factory.mktemp("simulated-hub")
    config_path = folder / "convohub.yaml"
    config_path.write_text(example_config(survey_delay_seconds=1), encoding="utf-8")
    port = free_port()
    log = (folder / "hub.log").open("w")  # a pipe nobody reads would fill and stall the hub
    process = subprocess.Popen(
        [
            str(REPO_DIR / "convohub"),
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(folder / ".convohub"),
            "--config",
            str(config_path),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the wrapper, uv and the hub
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"hub did not come up:\n{(folder / 'hub.log').read_text()}")
            time.sleep(0.2)
        yield base, load_config(config_path, {})
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        log.close()


def supervisor_headers(config: HubConfig) -> dict[str, str]:
    key = next(
        k.key.get_secret_value() for k in config.tenant("acme").api_keys if k.role == "supervisor"
    )
    return {"Authorization": f"Bearer {key}"}


def unfinished_routing(base: str, config: HubConfig, conversations: tuple[str, ...]) -> str:
    """What the router says about conversations a run left unfinished (for a failure)."""
    lines = []
    for conversation_id in conversations[:5]:
        if conversation_id.startswith("conv-"):
            routing = httpx.get(
                f"{base}/v1/conversations/{conversation_id}/routing",
                headers=supervisor_headers(config),
            ).json()
            routing.pop("explanation", None)
            lines.append(f"{conversation_id}: {routing}")
    return "unfinished conversations:\n" + "\n".join(lines or conversations)


def test_the_same_seed_makes_the_same_plan_and_another_seed_another() -> None:
    config = parse_config(example_config(), {})
    first = plan_traffic(config, rate=5, duration=200, seed=7)
    assert plan_traffic(config, rate=5, duration=200, seed=7) == first
    assert plan_traffic(config, rate=5, duration=200, seed=8) != first

    conversations = first.conversations
    assert 850 <= len(conversations) <= 1150  # Poisson with mean 1000
    assert all(a.at <= b.at for a, b in itertools.pairwise(conversations))
    acme = config.tenant("acme")
    kinds = Counter(acme.channel(c.first.channel_id).type.value for c in conversations)
    assert set(kinds) == {"web_chat", "whatsapp", "email", "sms", "api", "social"}
    rules = {c.rule_id for c in conversations}
    assert {"complaint", "logistics", "pricing", "order-number", None} <= rules
    languages = {c.customer.language for c in conversations}
    assert languages == {"zh", "en"}
    assert any("投诉" in c.first.text for c in conversations)
    assert any(c.customer.vip for c in conversations)
    assert any(c.returning for c in conversations)
    assert any(f.channel_id != c.first.channel_id for c in conversations for f in c.follow_ups)
    assert any(c.transfer_to for c in conversations)


def test_a_run_lands_in_the_read_model_and_gets_assigned_resolved_and_surveyed(hub: Hub) -> None:
    base, config = hub

    seen: list[int] = []
    summary = asyncio.run(
        simulate(
            base,
            config,
            rate=2.5,
            duration=6.0,
            seed=3,
            progress=lambda stats: seen.append(stats.messages),
            drain=40.0,  # ends as soon as every conversation is done; the cap is for slow CI
            pace=0.5,
        )
    )
    planned = len(plan_traffic(config, rate=2.5, duration=6.0, seed=3).conversations)
    assert seen, "the progress callback was called"
    assert not [key for key in summary.errors if key.startswith("5")], summary.error_details
    assert summary.conversations == planned
    assert summary.missing_messages == ()
    assert summary.messages_verified == summary.messages > summary.conversations
    assert summary.unfinished == (), unfinished_routing(base, config, summary.unfinished)
    assert summary.assigned == summary.resolved == summary.conversations
    assert summary.replies >= summary.conversations
    assert summary.surveys_answered >= 1
    assert summary.latency_p50 is not None
    assert summary.latency_p99 is not None

    # What a user checks by hand: the desk API lists them, every customer message is there,
    # and each conversation was assigned to a simulated agent and closed.
    headers = supervisor_headers(config)
    listed = httpx.get(f"{base}/v1/conversations", params={"limit": 200}, headers=headers).json()
    assert len(listed["items"]) == summary.conversations
    received = 0
    for item in listed["items"]:
        assert item["state"] in ("resolved", "closed")
        assert item["assigned_agent_id"].startswith("sim-agent-")
        detail = httpx.get(
            f"{base}/v1/conversations/{item['conversation_id']}", headers=headers
        ).json()
        received += sum(
            entry["type"] == "convohub.conversation.message_received.v1"
            for entry in detail["timeline"]
        )
    assert received == summary.messages


def test_the_command_names_a_wrong_config_and_an_unreachable_hub(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["simulate", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2
    assert "nope.yaml" in missing.output

    config = tmp_path / "convohub.yaml"
    config.write_text(example_config(), encoding="utf-8")
    url = f"http://127.0.0.1:{free_port()}"
    unreachable = runner.invoke(
        app, ["simulate", "--config", str(config), "--url", url, "--duration", "5"]
    )
    assert unreachable.exit_code == 1
    assert f"cannot reach the hub at {url}" in unreachable.output
