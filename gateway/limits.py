"""Per-session rate limiting (token bucket)."""
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
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class HandshakeLimiter:
    """A token bucket per key (a client address, a user) for new connections or requests; the table
    is bounded (oldest forgotten)."""

    def __init__(self, rate: float, burst: int, max_ips: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_ips = max_ips
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, ip: str) -> bool:
        bucket = self._buckets.get(ip)
        if bucket is None:
            if len(self._buckets) >= self.max_ips:
                self._buckets.pop(next(iter(self._buckets)))
            bucket = self._buckets[ip] = TokenBucket(self.rate, self.burst)
        return bucket.allow()
