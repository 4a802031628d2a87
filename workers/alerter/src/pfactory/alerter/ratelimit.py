"""A token bucket that answers how long to wait, so callers sleep on their own (test-swappable) clock."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate_per_s`` tokens a second up to ``burst``; a reservation may run the bucket into debt.

    Debt is what makes waiting fair: each reservation is served after the ones before it.
    """

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(
                f"a token bucket needs a positive rate and a burst of 1 or more, got {rate_per_s}, {burst}"
            )
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def reserve(self, max_wait_s: float) -> float | None:
        """Take one token; the seconds to wait before using it, or None (nothing taken) past ``max_wait_s``."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now
        wait = max(0.0, (1.0 - self._tokens) / self.rate_per_s)
        if wait > max_wait_s:
            return None
        self._tokens -= 1.0
        return wait
