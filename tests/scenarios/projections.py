"""Two small projections the delivery scenarios run on both backends.

`MessageLedger` reads conversation messages, counts how often each event was applied and
whether each key's messages arrived in order, and emits one `classified` event per message
(through the outbox). `ClassifiedLedger` reads those emitted events downstream. A message
whose text is "POISON" makes `MessageLedger` fail, as a handler bug would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.contracts import caused_by, new_event
from convohub.contracts.catalogue import payload_class, payload_examples
from convohub.contracts.topics import CONVERSATION, ROUTING
from convohub.runtime.projection import ConsumedEvent, Projection

RECEIVED = "convohub.conversation.message_received.v1"
CLASSIFIED = "convohub.routing.classified.v1"
POISON = "POISON"


def message(key: str, seq: int, text: str | None = None, tenant: str = "acme") -> Any:
    """A `message_received` event for conversation `key`, the `seq`-th of that key."""
    example = payload_examples(RECEIVED)[0]
    payload = payload_class(RECEIVED).model_validate(
        {
            **example,
            "conversation_id": key,
            "message_id": f"{key}:{seq}",
            "content": {"text": text if text is not None else f"message {seq} of {key}"},
        }
    )
    return new_event(payload, tenant_id=tenant, source="/convohub/scenario")


def sequence_of(event: Any) -> int:
    return int(event.data.message_id.rsplit(":", 1)[1])


async def upsert_counts(
    connection: AsyncConnection, table: Table, rows: list[dict[str, Any]], counter: str
) -> None:
    """Insert rows; on a repeated primary key add to the counter instead."""
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    keys = [c.name for c in table.primary_key.columns]
    statement = statement.on_conflict_do_update(
        index_elements=keys,
        set_={counter: table.c[counter] + statement.excluded[counter]},
    )
    await connection.execute(statement, rows)


class MessageLedger(Projection):
    topics = (CONVERSATION.name,)

    def __init__(self, name: str = "scenario-ledger", poison_text: str | None = POISON) -> None:
        self.name = name
        self.poison_text = poison_text  # None: the bug is fixed, poison is a message like any
        self.metadata = MetaData()
        self.ledger = Table(
            "scenario_ledger",
            self.metadata,
            Column("event_id", String(64), primary_key=True),
            Column("conversation_id", String(128), nullable=False),
            Column("seq", Integer, nullable=False),
            Column("applications", Integer, nullable=False),
        )
        self.progress = Table(
            "scenario_key_progress",
            self.metadata,
            Column("conversation_id", String(128), primary_key=True),
            Column("last_seq", Integer, nullable=False),
            Column("out_of_order", Integer, nullable=False),
        )

    async def apply(self, events: Sequence[ConsumedEvent], uow: Any) -> None:
        connection: AsyncConnection = uow.connection
        keys = {e.event.data.conversation_id for e in events}
        rows = await connection.execute(
            select(self.progress.c.conversation_id, self.progress.c.last_seq).where(
                self.progress.c.conversation_id.in_(keys)
            )
        )
        last = {key: seq for key, seq in rows}
        out_of_order = dict.fromkeys(keys, 0)
        ledger_rows = []
        for consumed in events:
            event = consumed.event
            if self.poison_text is not None and event.data.content.text == self.poison_text:
                raise ValueError(f"cannot process {event.id}: poison message")
            key, seq = event.data.conversation_id, sequence_of(event)
            if seq <= last.get(key, -1):
                out_of_order[key] += 1
            last[key] = seq
            ledger_rows.append(
                {"event_id": event.id, "conversation_id": key, "seq": seq, "applications": 1}
            )
            classified = payload_class(CLASSIFIED).model_validate(
                {**payload_examples(CLASSIFIED)[0], "conversation_id": key}
            )
            uow.emit(
                caused_by(event, classified, source="/convohub/scenario"),
                traceparent=consumed.traceparent,
            )
        await upsert_counts(connection, self.ledger, ledger_rows, "applications")
        progress_rows = [
            {"conversation_id": k, "last_seq": last[k], "out_of_order": out_of_order[k]}
            for k in keys
        ]
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(self.progress)
        statement = statement.on_conflict_do_update(
            index_elements=["conversation_id"],
            set_={
                "last_seq": statement.excluded.last_seq,
                "out_of_order": self.progress.c.out_of_order + statement.excluded.out_of_order,
            },
        )
        await connection.execute(statement, progress_rows)

    async def applications(self, connection: AsyncConnection) -> dict[str, int]:
        rows = await connection.execute(select(self.ledger.c.event_id, self.ledger.c.applications))
        return dict(rows.all())

    async def out_of_order(self, connection: AsyncConnection) -> int:
        rows = await connection.execute(select(self.progress.c.out_of_order))
        return sum(value for (value,) in rows)


class ClassifiedLedger(Projection):
    topics = (ROUTING.name,)

    def __init__(self, name: str = "scenario-downstream") -> None:
        self.name = name
        self.metadata = MetaData()
        self.ledger = Table(
            "scenario_downstream",
            self.metadata,
            Column("event_id", String(64), primary_key=True),
            Column("causation_id", String(64), nullable=False),
            Column("applications", Integer, nullable=False),
        )

    async def apply(self, events: Sequence[ConsumedEvent], uow: Any) -> None:
        rows = [
            {"event_id": e.event.id, "causation_id": e.event.causationid, "applications": 1}
            for e in events
        ]
        await upsert_counts(uow.connection, self.ledger, rows, "applications")

    async def applications(self, connection: AsyncConnection) -> dict[str, int]:
        rows = await connection.execute(
            select(self.ledger.c.causation_id, self.ledger.c.applications)
        )
        return dict(rows.all())
