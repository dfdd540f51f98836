"""Token buckets: `rate` tokens a second, up to `burst`; time is passed in."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["RateLimiter", "TokenBucket"]


@dataclass
class TokenBucket:
    rate: float
    burst: int
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is available."""
        if self.tokens < 0:
            self.tokens, self.updated = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else math.inf


@dataclass
class RateLimiter:
    """One bucket per key (API key and channel); forgets idle buckets beyond `max_keys`."""

    max_keys: int = 100_000
    buckets: dict[tuple[str, ...], TokenBucket] = field(default_factory=dict)

    def take(self, key: tuple[str, ...], rate: float, burst: int, now: float) -> float:
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:
                self.buckets.clear()  # crude, bounded memory; a flood keeps its new bucket
            bucket = self.buckets[key] = TokenBucket(rate=rate, burst=burst)
        return bucket.take(now)
