"""One retry policy, keyed on the error's class (design §3), applied to each request.

Rate limited → wait ``retry_after`` when the provider gave one, else one plan window
(``PLAN_WINDOW_S``: plans count requests per minute, and a 429 says the minute's quota is
spent — by another consumer of the key, since the shared limiter paces this desk — so a retry
within seconds only earns another 429);
transient (5xx, timeouts) → exponential backoff with full jitter, bounded;
everything else → no retry. ``sleep`` and ``rng`` are injectable for tests.

Providers apply the policy to every single request (a page of a paginated answer is retried
on its own; the pages before it are kept), and record what they did per calling thread in a
``RequestLedger``: the requests sent and each retry with its wait. The engine takes the
ledger's counts after each step and logs them (``fetch_log``, ``runs.requests``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from enrich.errors import RateLimitedError, error_class_of
from enrich.providers.ratelimit import PLAN_WINDOW_S

T = TypeVar("T")


@dataclass
class RetryPolicy:
    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    rate_window: float = PLAN_WINDOW_S  # a 429 without Retry-After waits this long
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, exc: BaseException) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if isinstance(exc, RateLimitedError):
            if exc.retry_after is None:
                return self.rate_window
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
                    exc.attempts = attempt  # type: ignore[attr-defined]  # any exception
                    raise
                wait = self.delay(attempt, exc)
                if on_retry is not None:
                    on_retry(attempt, exc, wait)
                self.sleep(wait)
                attempt += 1


NO_RETRY = RetryPolicy(max_retries=0)


@dataclass(frozen=True)
class Retry:
    """One retried request: which endpoint, after which attempt, why, and the wait."""

    endpoint: str
    attempt: int  # the attempt that failed (1 = the first try)
    wait_s: float
    error_class: str
    message: str


@dataclass
class RequestStats:
    """Requests sent (retries included) and the retries among them."""

    requests: int = 0
    retries: list[Retry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings worth logging (a truncation)

    def __add__(self, other: RequestStats) -> RequestStats:
        return RequestStats(self.requests + other.requests, self.retries + other.retries,
                            self.notes + other.notes)


class RequestLedger:
    """Per-thread request bookkeeping shared by a provider and its clones."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _stats(self) -> RequestStats:
        stats = getattr(self._local, "stats", None)
        if stats is None:
            stats = self._local.stats = RequestStats()
        return stats

    def sent(self, at: float | None = None) -> None:
        """A request leaves; ``at``: when (``time.perf_counter``), after any wait for the
        rate limiter (``last_sent_at``)."""
        self._stats().requests += 1
        self._local.sent_at = at

    def last_sent_at(self) -> float | None:
        """When the calling thread's last request left (as passed to ``sent``)."""
        return getattr(self._local, "sent_at", None)

    def unsent(self) -> None:
        """The last request ``sent`` never reached the provider (no connection was made): the
        plan does not count it, so neither does the ledger."""
        self._stats().requests -= 1

    def retried(self, endpoint: str, attempt: int, exc: BaseException, wait: float) -> None:
        self._stats().retries.append(
            Retry(endpoint, attempt, wait, error_class_of(exc), str(exc)[:1000]))

    def note(self, text: str) -> None:
        self._stats().notes.append(text)

    def take(self) -> RequestStats:
        """What the calling thread did since the last take; resets it."""
        stats = self._stats()
        self._local.stats = RequestStats()
        return stats

    def retrying(self, policy: RetryPolicy, endpoint: str, fn: Callable[[], T]) -> T:
        """``fn`` (one request) under ``policy``, each retry recorded."""
        result, _ = policy.call(
            fn, on_retry=lambda attempt, exc, wait: self.retried(endpoint, attempt, exc, wait))
        return result
