"""Replay: drop a projection's tables and rebuild them from the log.

The rebuild reads every partition of the projection's topics from offset 0 without
joining the consumer group, merges them in timestamp order (so events of different topics
interleave as they did live), and applies them through the same runner code as live
consumption, with emitted events suppressed: what the projection emitted the first time
is already on the log. Stop the live consumers of the projection before replaying.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

from convohub.runtime.bus.port import EventBus, LogRecord, TopicPartition
from convohub.runtime.consumer import ProjectionRunner
from convohub.runtime.projection import Projection
from convohub.runtime.store import ProjectionStore

Progress = Callable[[int, int], None]
"""Called with (records done, records in total) after each batch."""


@dataclass(frozen=True)
class ReplayResult:
    records: int
    partitions: int


async def replay(
    bus: EventBus,
    store: ProjectionStore,
    projection: Projection,
    *,
    batch_size: int = 1000,
    progress: Progress | None = None,
) -> ReplayResult:
    """Rebuild `projection` from the start of its topics; returns how much was read."""
    async with store.begin() as connection:
        await connection.run_sync(projection.metadata.drop_all)
        await connection.run_sync(projection.metadata.create_all)
    await store.reset_group(projection.name)

    ends = await bus.end_offsets(list(projection.topics))
    total = sum(ends.values())
    runner = ProjectionRunner(bus, store, projection, replaying=True, max_batch=batch_size)
    merged = _TimestampMerge(bus, ends, batch_size)
    done = 0
    if progress is not None:
        progress(0, total)
    while batch := await merged.next_batch():
        await runner.handle_batch(batch)
        done += len(batch)
        if progress is not None:
            progress(done, total)
    return ReplayResult(records=done, partitions=len(ends))


class _TimestampMerge:
    """Reads many partitions in bounded chunks and yields records in timestamp order
    (offset order within a partition is always kept)."""

    def __init__(self, bus: EventBus, ends: dict[TopicPartition, int], chunk: int) -> None:
        self.bus = bus
        self.ends = ends
        self.chunk = chunk
        self.next_offset = {tp: 0 for tp, end in ends.items() if end > 0}
        self.buffers: dict[TopicPartition, list[LogRecord]] = {}
        self.heap: list[tuple[int, str, int, int]] = []

    async def _refill(self, tp: TopicPartition) -> None:
        offset = self.next_offset.get(tp)
        if offset is None or offset >= self.ends[tp]:
            return
        records = await self.bus.read(tp[0], tp[1], offset, self.chunk)
        records = [r for r in records if r.offset < self.ends[tp]]
        if not records:
            self.next_offset.pop(tp)
            return
        self.next_offset[tp] = records[-1].offset + 1
        self.buffers[tp] = records[::-1]  # pop() from the end yields ascending offsets
        heapq.heappush(self.heap, (records[0].timestamp_ms, tp[0], tp[1], records[0].offset))

    async def next_batch(self) -> list[LogRecord]:
        if not self.heap and not self.buffers:
            for tp in list(self.next_offset):
                await self._refill(tp)
        batch: list[LogRecord] = []
        while self.heap and len(batch) < self.chunk:
            _, topic, partition, _ = heapq.heappop(self.heap)
            tp = (topic, partition)
            buffer = self.buffers[tp]
            batch.append(buffer.pop())
            if buffer:
                head = buffer[-1]
                heapq.heappush(self.heap, (head.timestamp_ms, topic, partition, head.offset))
            else:
                del self.buffers[tp]
                await self._refill(tp)
        return batch
