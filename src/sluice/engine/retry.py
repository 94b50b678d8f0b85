"""When a failed job runs again: exponential backoff, capped."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryStrategy:
    base_delay: float = 2.0
    max_delay: float = 300.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure (1, 2, ...): base, 2*base, 4*base, ..."""
        return min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1))
