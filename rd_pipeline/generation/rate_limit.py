"""Token-bucket limits for requests per minute and tokens per minute, for use inside one asyncio loop."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """A bucket refilled at ``per_minute / 60`` units per second, holding at most ``capacity`` units.

    ``acquire(amount)`` waits until the bucket holds ``amount`` units (or is full, for an amount larger than
    the capacity) and takes them, so the bucket may go into debt that later callers wait out. Waiters are
    served in arrival order.
    """

    def __init__(self, per_minute: float, capacity: float | None = None) -> None:
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be positive, got {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = capacity if capacity is not None else max(1.0, self.rate)
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:
            need = min(amount, self.capacity)
            while True:
                self._refill()
                if self._level >= need:
                    self._level -= amount
                    return
                await asyncio.sleep((need - self._level) / self.rate)

    def give_back(self, amount: float) -> None:
        """Return units taken in excess (an estimate above what was used); a negative amount takes more."""
        self._refill()
        self._level = min(self.capacity, self._level + amount)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits; either may be absent."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        # Allow a burst of one second's worth of tokens, but at least enough for one large request.
        self.tokens = (
            TokenBucket(tokens_per_minute, capacity=max(tokens_per_minute / 60.0, 1.0))
            if tokens_per_minute
            else None
        )

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.acquire(1.0)
        if self.tokens is not None:
            await self.tokens.acquire(float(estimated_tokens))

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the token bucket once a request's real usage is known."""
        if self.tokens is not None:
            self.tokens.give_back(float(estimated_tokens - actual_tokens))
