"""A token bucket in front of STS: a global ceiling on AssumeRole calls per second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``acquire`` waits for one.

    Waiters are served in arrival order (one lock), so a burst of 1 000 refreshes drains at
    the configured rate instead of stampeding. Uses monotonic time: it paces real calls.
    """

    def __init__(self, rate: float, burst: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate: invalid value {rate}: must be greater than 0")
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._monotonic = monotonic
        self._stamp = monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            while self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1
