"""Reading a compacted topic as a table: the latest record of every key.

A compacted topic (`cleanup.policy=compact`, such as `convohub.customer-profile.v1`) keeps
at least the latest record of each key. A record with a null value is a tombstone: the key
was deleted (an erased customer). Kafka compacts in the background, so a reader may still
see older records of a key before its latest one; reading every partition to its end and
keeping the last record per key gives the same answer before and after compaction, as
long as a tombstone is read within the topic's `delete.retention.ms` (one day by default)
of its publication. On the embedded log, which never compacts, the answer is the same.
"""

from __future__ import annotations

from convohub.runtime.bus.port import EventBus, LogRecord

__all__ = ["latest_by_key", "live_values"]


async def latest_by_key(bus: EventBus, topic: str, *, chunk: int = 500) -> dict[bytes, LogRecord]:
    """The latest record of every key of `topic` as of now, tombstones included (their
    `value` is None). Keyless records are skipped (a compacted topic refuses them)."""
    ends = await bus.end_offsets([topic])
    latest: dict[bytes, LogRecord] = {}
    for (_, partition), end in sorted(ends.items()):
        offset = 0
        while offset < end:
            records = await bus.read(topic, partition, offset, chunk)
            if not records:
                break  # the rest of the partition was compacted or deleted away
            for record in records:
                if record.offset < end and record.key is not None:
                    latest[record.key] = record
            offset = records[-1].offset + 1
    return latest


async def live_values(bus: EventBus, topic: str) -> dict[bytes, bytes]:
    """The current value of every key that is not deleted: a tombstone removes its key."""
    return {
        key: record.value
        for key, record in (await latest_by_key(bus, topic)).items()
        if record.value is not None
    }
