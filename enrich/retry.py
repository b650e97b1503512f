"""One retry policy, keyed on the error's class (design §3).

Rate limited → wait ``retry_after`` when the provider gave one, else back off;
transient (5xx, timeouts) → exponential backoff with full jitter, bounded;
everything else → no retry. ``sleep`` and ``rng`` are injectable for tests.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from enrich.errors import RateLimitedError

T = TypeVar("T")


@dataclass
class RetryPolicy:
    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, exc: BaseException) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.max_delay * 4)
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return self.rng.uniform(cap / 2, cap)

    def call(
        self,
        fn: Callable[[], T],
        on_retry: Callable[[int, BaseException, float], None] | None = None,
    ) -> tuple[T, int]:
        """Run ``fn``; return ``(result, attempts)``. Re-raises the last error."""
        attempt = 1
        while True:
            try:
                return fn(), attempt
            except Exception as exc:
                if not getattr(exc, "retryable", False) or attempt > self.max_retries:
                    exc.attempts = attempt  # type: ignore[attr-defined]
                    raise
                wait = self.delay(attempt, exc)
                if on_retry is not None:
                    on_retry(attempt, exc, wait)
                self.sleep(wait)
                attempt += 1
