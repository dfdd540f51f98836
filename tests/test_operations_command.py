"""`convohub dlq`, `convohub replay` and `convohub topics` as an operator runs them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convohub.cli.app import app
from convohub.contracts.topics import CONVERSATION
from convohub.runtime.bus.embedded import EmbeddedBus
from convohub.runtime.consumer import ProjectionRunner, RetryPolicy
from convohub.runtime.hosting import EMBEDDED_LOG_FILE, open_store
from convohub.runtime.settings import RuntimeSettings
from convohub.runtime.store import OutboxRelay, migrate_runtime

from .scenarios.projections import POISON, MessageLedger, message

runner = CliRunner()
LEDGER = "tests.scenarios.projections:MessageLedger"


@pytest.fixture
def embedded_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An embedded hub's data folder where a ledger consumed 12 messages, one of them
    poison (dead-lettered)."""
    monkeypatch.setenv("CONVOHUB_MODE", "embedded")
    monkeypatch.setenv("CONVOHUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables to the terminal's width

    async def consume() -> None:
        bus = EmbeddedBus(tmp_path / EMBEDDED_LOG_FILE)
        await bus.start()
        events = [message(f"conv-{i % 3}", i) for i in range(11)]
        events.insert(5, message("conv-1", 50, text=POISON))
        await bus.publish_events(events)
        ledger = MessageLedger()
        store = open_store(RuntimeSettings(), ledger.name)
        await migrate_runtime(store.engine)
        async with store.engine.begin() as connection:
            await connection.run_sync(ledger.metadata.create_all)
        consumer = ProjectionRunner(bus, store, ledger, retry=RetryPolicy(attempts=2))
        for (topic, partition), end in (await bus.end_offsets([CONVERSATION.name])).items():
            if end:
                await consumer.handle_batch(await bus.read(topic, partition, 0, end))
        await OutboxRelay(store, bus).publish_pending()
        await store.engine.dispose()
        await bus.stop()

    asyncio.run(consume())
    return tmp_path


def test_dlq_list_show_and_redrive(embedded_hub: Path) -> None:
    listed = runner.invoke(app, ["dlq", "list"])
    assert listed.exit_code == 0, listed.output
    assert "scenario-ledger" in listed.output
    assert "handle: ValueError" in listed.output

    async def first_id() -> str:
        bus = EmbeddedBus(embedded_hub / EMBEDDED_LOG_FILE)
        await bus.start()
        from convohub.runtime.deadletters import list_dead_letters

        letters = await list_dead_letters(bus)
        await bus.stop()
        return letters[0].id

    dead_letter_id = asyncio.run(first_id())
    shown = runner.invoke(app, ["dlq", "show", dead_letter_id])
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.output)
    assert document["data"]["error"]["stage"] == "handle"
    assert POISON in document["data"]["original_value"]

    before = asyncio.run(_conversation_records(embedded_hub))
    redriven = runner.invoke(app, ["dlq", "redrive", dead_letter_id])
    assert redriven.exit_code == 0, redriven.output
    assert "for scenario-ledger" in redriven.output
    after = asyncio.run(_conversation_records(embedded_hub))
    assert len(after) == len(before) + 1
    newest = max(after, key=lambda r: r.timestamp_ms)
    assert newest.header("convohub_redrive_group") == b"scenario-ledger"

    missing = runner.invoke(app, ["dlq", "show", "no-such-id"])
    assert missing.exit_code == 1


def test_replay_rebuilds_a_projection_with_progress(embedded_hub: Path) -> None:
    result = runner.invoke(app, ["replay", LEDGER])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary == {"projection": "scenario-ledger", "records": 12}

    async def ledger_rows() -> int:
        ledger = MessageLedger()
        store = open_store(RuntimeSettings(), ledger.name)
        async with store.engine.connect() as connection:
            rows = await ledger.applications(connection)
        await store.engine.dispose()
        return len(rows)

    assert asyncio.run(ledger_rows()) == 11, "every message but the poison"


def test_replay_of_an_unknown_projection_is_a_clear_error(embedded_hub: Path) -> None:
    result = runner.invoke(app, ["replay", "no-such-service"])
    assert result.exit_code == 2
    assert "no projection named 'no-such-service'" in result.output


@pytest.mark.integration
def test_topics_apply_is_idempotent_on_kafka(
    kafka_bootstrap_servers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("CONVOHUB_MODE", "distributed")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://unused@127.0.0.1/unused")
    first = runner.invoke(app, ["topics", "apply"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["topics", "apply"])
    assert second.exit_code == 0, second.output
    lines = second.output.strip().splitlines()
    assert lines[-1] == "nothing to do", "a second apply changes nothing"
    for topic in ("convohub.conversation.v1", "convohub.dlq.v1"):
        assert f"{topic}: ok" in lines


async def _conversation_records(folder: Path) -> list:
    bus = EmbeddedBus(folder / EMBEDDED_LOG_FILE)
    await bus.start()
    records = []
    for (topic, partition), end in (await bus.end_offsets([CONVERSATION.name])).items():
        if end:
            records.extend(await bus.read(topic, partition, 0, end))
    await bus.stop()
    return records
