"""Ingest's erasure ledger and the outbound intake on a rebuild, applied directly on
SQLite: a projection rebuilt from the log stores no erased person again, and the rebuilt
delivery queue does not send again what was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.event import listen as event_listen

from convohub.contracts import Envelope, new_event, to_kafka_record
from convohub.contracts.catalogue import payload_class, payload_examples
from convohub.ingest.adapters.desk import DESK_CONVERSATIONS, DESK_TIMELINE
from convohub.ingest.adapters.erasure import erased_conversations, remember_erased
from convohub.ingest.adapters.outbound import OUTBOUND_DELIVERIES, OUTBOUND_THREADS
from convohub.ingest.adapters.tables import CONVERSATIONS, METADATA, WEBCHAT_REPLIES
from convohub.ingest.handlers.conversations import ConversationStateProjection
from convohub.ingest.handlers.delivery import OutboundIntake
from convohub.ingest.handlers.readmodel import apply_to_read_model
from convohub.runtime.bus.port import LogRecord
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.store import ProjectionStore, create_engine, migrate_runtime

ADDRESS = "8613800138000"
REPLY = "your parcel SF1234567890 ships today"
AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def event(event_type: str, **fields: Any) -> Envelope[Any]:
    payload = payload_class(event_type).model_validate(
        {**payload_examples(event_type)[0], **fields}
    )
    return new_event(payload, tenant_id="acme", source="/test", time=AT)


def consumed(events: Sequence[Envelope[Any]]) -> list[ConsumedEvent]:
    found = []
    for offset, item in enumerate(events):
        record = to_kafka_record(item)
        log_record = LogRecord(record.topic, 0, offset, record.key, record.value, record.headers, 0)
        found.append(ConsumedEvent.of(item, log_record))
    return found


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ProjectionStore]:
    store = ProjectionStore(create_engine(f"sqlite+aiosqlite:///{tmp_path}/ingest.sqlite3"))
    await migrate_runtime(store.engine)
    async with store.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    yield store
    await store.engine.dispose()


async def apply(store: ProjectionStore, projection: Projection, events: list[Any]) -> None:
    async with store.unit_of_work() as uow:
        await projection.apply(consumed(events), uow)
        await uow.commit()


async def rebuild(store: ProjectionStore, projection: Projection, events: list[Any]) -> None:
    """What `convohub replay` does: drop the projection's tables, recreate, re-apply."""
    async with store.engine.begin() as connection:
        await connection.run_sync(projection.metadata.drop_all)
        await connection.run_sync(projection.metadata.create_all)
    async with store.unit_of_work(replaying=True) as uow:
        await projection.apply(consumed(events), uow)
        await uow.commit()


async def rows_of(store: ProjectionStore, table: Any) -> list[dict[str, Any]]:
    async with store.engine.connect() as connection:
        return [dict(row) for row in (await connection.execute(select(table))).mappings()]


def conversation(conversation_id: str = "conv-1") -> list[Envelope[Any]]:
    return [
        event("convohub.conversation.started.v1", conversation_id=conversation_id),
        event("convohub.conversation.message_received.v1", conversation_id=conversation_id),
        event(
            "convohub.conversation.message_sent.v1",
            conversation_id=conversation_id,
            message_id="msg-reply",
            content={"text": REPLY},
        ),
    ]


async def test_the_outbound_intake_erases_the_person_and_its_rebuild_stores_nothing_of_them(
    store: ProjectionStore,
) -> None:
    intake = OutboundIntake()
    identified = event(
        "convohub.customer.identified.v1", customer_id="cust-1", conversation_id="conv-1"
    )
    await apply(store, intake, [*conversation(), identified])
    assert ADDRESS in str(await rows_of(store, OUTBOUND_THREADS))
    assert REPLY in str(await rows_of(store, OUTBOUND_DELIVERIES))

    await apply(store, intake, [event("convohub.customer.erased.v1", customer_id="cust-1")])
    async with store.engine.connect() as connection:
        assert await erased_conversations(connection, "acme", ["conv-1", "conv-2"]) == {"conv-1"}
    # A rebuild from the conversation topic alone (no customer events to tell whose it
    # was): the ledger alone keeps the address and the reply out.
    await rebuild(store, intake, conversation())

    threads, deliveries = (
        await rows_of(store, OUTBOUND_THREADS),
        await rows_of(store, OUTBOUND_DELIVERIES),
    )
    assert ADDRESS not in str(threads)
    assert ADDRESS not in str(deliveries)
    assert REPLY not in str(deliveries)
    assert [(d["message_id"], d["status"]) for d in deliveries] == [("msg-reply", "erased")]


async def test_a_rebuilt_delivery_queue_does_not_send_again_what_was_sent(
    store: ProjectionStore,
) -> None:
    def sent(message_id: str) -> Envelope[Any]:
        return event("convohub.conversation.message_sent.v1", message_id=message_id)

    log = [
        sent("msg-1"),
        event("convohub.conversation.message_delivered.v1", message_id="msg-1", state="sent"),
        sent("msg-2"),
        event("convohub.conversation.message_failed.v1", message_id="msg-2", retryable=False),
        sent("msg-3"),
        event(
            "convohub.conversation.message_failed.v1",
            message_id="msg-3",
            retryable=True,
            attempts=2,
        ),
        sent("msg-4"),
    ]
    await rebuild(store, OutboundIntake(), log)

    deliveries = {d["message_id"]: d for d in await rows_of(store, OUTBOUND_DELIVERIES)}
    assert {m: (d["status"], d["attempts"]) for m, d in deliveries.items()} == {
        "msg-1": ("sent", 0),
        "msg-2": ("failed", 0),
        "msg-3": ("pending", 2),  # retried, with its attempts counted
        "msg-4": ("pending", 0),  # never tried: still to send
    }


async def test_the_desk_folds_a_ledgered_conversation_as_erased_from_its_first_event(
    store: ProjectionStore,
) -> None:
    async with store.unit_of_work() as uow:
        await remember_erased(uow.connection, "acme", ["conv-1"], AT)
        await uow.commit()
    async with store.unit_of_work() as uow:
        await apply_to_read_model(uow.connection, conversation())
        await uow.commit()

    [row] = await rows_of(store, DESK_CONVERSATIONS)
    assert row["customer_erased"] is True
    assert ADDRESS not in str(row)
    timeline = await rows_of(store, DESK_TIMELINE)
    assert len(timeline) == 3
    assert REPLY not in str(timeline)
    assert ADDRESS not in str(timeline)


async def test_a_rebuild_of_the_channel_state_keeps_the_conversations_and_skips_erased_replies(
    store: ProjectionStore,
) -> None:
    async with store.unit_of_work() as uow:  # what the inbound pipeline wrote live
        await uow.connection.execute(
            CONVERSATIONS.insert().values(
                conversation_id="conv-1",
                tenant_id="acme",
                customer_key="erased:cust-1",
                channel="web_chat",
                channel_id="web-main",
                address="",
                status="open",
                survey_pending=False,
                started_at=AT,
                updated_at=AT,
            )
        )
        await remember_erased(uow.connection, "acme", ["conv-1"], AT)
        await uow.commit()
    reply = event(
        "convohub.conversation.message_sent.v1",
        conversation_id="conv-1",
        channel="web_chat",
        channel_id="web-main",
        recipient={"channel": "web_chat", "channel_id": "web-main", "address": ADDRESS},
        content={"text": REPLY},
    )
    resolved = event("convohub.conversation.resolved.v1", conversation_id="conv-1")

    await rebuild(store, ConversationStateProjection(), [reply, resolved])

    assert await rows_of(store, WEBCHAT_REPLIES) == []
    [conversation] = await rows_of(store, CONVERSATIONS)  # not dropped by the rebuild
    assert conversation["status"] == "resolved"


async def test_the_outbound_intake_writes_a_thread_once_a_batch_and_only_when_it_changes(
    store: ProjectionStore,
) -> None:
    writes: list[str] = []

    def count_thread_writes(*args: Any) -> None:
        statement = args[2].lstrip()
        if statement.startswith(("INSERT INTO ingest_outbound", "UPDATE ingest_outbound")):
            writes.append(statement.split("(")[0])

    event_listen(store.engine.sync_engine, "before_cursor_execute", count_thread_writes)
    sms = {"channel": "sms", "channel_id": "sms-main", "address": "+14155550100"}
    email = {"channel": "email", "channel_id": "mail-main", "address": "ana@example.com"}

    def received(conversation_id: str, n: int, **fields: Any) -> Envelope[Any]:
        return event(
            "convohub.conversation.message_received.v1",
            conversation_id=conversation_id,
            message_id=f"msg-{conversation_id}-{n}",
            provider_message_id=f"p-{conversation_id}-{n}",
            **fields,
        )

    first = [
        event("convohub.conversation.started.v1", conversation_id="conv-1"),
        *(received("conv-1", n) for n in range(10)),
        event("convohub.conversation.started.v1", conversation_id="conv-2"),
        event(
            "convohub.conversation.channel_switched.v1",
            conversation_id="conv-2",
            to_channel="sms",
            to_channel_id="sms-main",
            customer=sms,
        ),
        received("conv-2", 0, channel="sms", channel_id="sms-main", customer=sms),
        event(
            "convohub.conversation.started.v1",
            conversation_id="conv-3",
            channel="email",
            channel_id="mail-main",
            customer=email,
        ),
        *(
            received(
                "conv-3",
                n,
                channel="email",
                channel_id="mail-main",
                customer=email,
                content={"text": "hi", "subject": f"Order {n}"},
            )
            for n in range(2)
        ),
    ]
    await apply(store, OutboundIntake(), first)
    # Three new threads in one statement; the switch folded into conv-2's row before it.
    assert writes == ["INSERT INTO ingest_outbound_threads "], writes
    threads = {row["conversation_id"]: row for row in await rows_of(store, OUTBOUND_THREADS)}
    assert (threads["conv-1"]["channel_id"], threads["conv-2"]["channel_id"]) == (
        "wa-main",
        "sms-main",
    )
    assert threads["conv-2"]["customer"]["address"] == "+14155550100"
    assert threads["conv-3"]["email_message_ids"] == ["p-conv-3-0", "p-conv-3-1"]
    assert threads["conv-3"]["subject"] == "Order 1"

    writes.clear()
    await apply(store, OutboundIntake(), [received("conv-1", n) for n in range(10, 20)])
    assert writes == []  # nothing a reply needs changed
    await apply(
        store,
        OutboundIntake(),
        [
            received("conv-1", 20),
            event(
                "convohub.conversation.message_sent.v1",
                conversation_id="conv-3",
                message_id="msg-reply",
            ),
        ],
    )
    assert writes == ["INSERT INTO ingest_outbound_deliveries "], writes
    (reply,) = await rows_of(store, OUTBOUND_DELIVERIES)
    assert reply["email_headers"] == {
        "message_ids": ["p-conv-3-0", "p-conv-3-1"],
        "subject": "Order 1",
    }
