"""What a service hands the runtime: a projection of some topics into its own tables."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData

from convohub.contracts import Envelope
from convohub.contracts.kafka import TRACEPARENT_HEADER
from convohub.runtime.bus.port import LogRecord

if TYPE_CHECKING:
    from convohub.runtime.store import UnitOfWork


@dataclass(frozen=True, slots=True)
class ConsumedEvent:
    """A validated event and the record it was read from."""

    event: Envelope[Any]
    record: LogRecord
    traceparent: str | None = None
    """Trace context to put on the events this one causes (one message, one trace)."""

    @classmethod
    def of(cls, event: Envelope[Any], record: LogRecord) -> ConsumedEvent:
        header = record.header(TRACEPARENT_HEADER)
        return cls(event, record, header.decode() if header else None)


class Projection(ABC):
    """A read model built from the log, applied in batches inside one unit of work.

    `name` is the consumer group and the bookkeeping key. `metadata` holds the tables the
    projection owns: a replay drops and recreates exactly these. `apply` writes through
    `uow.connection` and emits new facts with `uow.emit(...)`; it never commits and never
    publishes to the broker itself.
    """

    name: str
    topics: Sequence[str]
    metadata: MetaData

    @abstractmethod
    async def apply(self, events: Sequence[ConsumedEvent], uow: UnitOfWork) -> None:
        """Apply a batch of events, in log order per partition."""
