"""Token buckets: one per session for its messages, and one per key (an address, a user) for handshakes and chats."""
from __future__ import annotations

import time


class TokenBucket:
    """Allows `rate` messages per second on average with bursts up to `burst`."""

    # Slots: thousands of these live at once; no per-instance dict saves about a kilobyte each.
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def allow(self) -> bool:
        """Take a token if there is one."""
        return self.take(1.0)

    def take(self, amount: float, now: float | None = None) -> bool:
        """Take `amount` tokens (bytes, frames) if the bucket holds them."""
        if now is None:
            now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False


class KeyedBuckets:
    """A token bucket per key (a client address, a user) for new connections or chat requests; the
    table is bounded (the oldest key forgotten)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, key: str) -> bool:
        """Take a token from this key's bucket if it has one."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.pop(next(iter(self._buckets)))
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket.allow()
