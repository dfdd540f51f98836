"""Which partition a key lands on: Kafka's default partitioner, in both modes.

The embedded log uses the same murmur2 hash as Kafka's Java and Python clients, so a key's
partition is the same whichever mode wrote it.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=65_536)  # murmur2 is pure Python (~30 µs a key); keys repeat a lot
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a non-empty key among `partitions` partitions."""
    if partitions < 1:
        raise ValueError("a topic has at least one partition")
    return (murmur2(key) & 0x7FFFFFFF) % partitions
