"""Client-side pacing of provider requests: one smooth limiter per API host, shared by threads.

The limiter is a GCRA (generic cell rate algorithm, a spaced token bucket): with the default
burst of 1, consecutive grants are at least ``60 / per_minute`` seconds apart on the limiter's
clock, so a plan's budget is spent evenly and never in bursts. The first request is granted at
once.

Window arithmetic. Grants spaced exactly ``T = 60 / R`` apart put at most ``R`` grants in any
half-open window ``[t, t + 60)``, but ``R + 1`` in a closed one (``t`` and ``t + 60`` both
count). A server that keeps arrival times in a sliding window and rejects when the window
already holds ``R`` sees *arrival* times, which jitter: if request ``k`` arrives a little late
and request ``k + R`` a little early, exact spacing trips it. ``headroom`` stretches the spacing
to ``T * (1 + headroom)``, which gives ``60 * headroom`` seconds of slack per window (0.6 s at
1 %), at the same cost in throughput. ``limiter_for``, the process-wide entry point, uses 1 %.

Priority: waiters queue in a heap ordered by (higher priority first, then arrival). Only the
waiter at the head of the heap may take the next slot; it sleeps outside the lock until its
slot is due, then checks it is still the head, so a higher-priority request that arrives
meanwhile (the daily run, priority 1) is served before queued backfill requests (priority 0).
``clock`` and ``sleep`` are injectable so tests run on a fake clock.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

DEFAULT_HEADROOM = 0.01


class RateLimiter:
    """Thread-safe smooth rate limiter; ``acquire`` blocks until a request may be sent."""

    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        burst: int = 1,
        headroom: float = 0.0,
    ):
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if headroom < 0:
            raise ValueError(f"headroom must not be negative, got {headroom}")
        self._clock = clock
        self._sleep = sleep
        self._burst = burst
        self._headroom = headroom
        self._cond = threading.Condition(threading.Lock())
        self._waiters: list[tuple[int, int]] = []  # heap of (-priority, arrival number)
        self._arrivals = 0
        self._tat: float | None = None  # theoretical arrival time of the next conforming request
        self._set_rate(per_minute)

    def _set_rate(self, per_minute: float) -> None:
        if not per_minute > 0:
            raise ValueError(f"per_minute must be positive, got {per_minute}")
        self._per_minute = float(per_minute)
        self._interval = 60.0 / self._per_minute * (1.0 + self._headroom)
        self._tolerance = (self._burst - 1) * self._interval

    @property
    def per_minute(self) -> float:
        return self._per_minute

    @property
    def interval(self) -> float:
        """Seconds between grants at the steady rate (headroom included)."""
        return self._interval

    @property
    def waiting(self) -> int:
        """Number of threads currently blocked in ``acquire``."""
        with self._cond:
            return len(self._waiters)

    def set_rate(self, per_minute: float) -> None:
        """Change the rate; threads already waiting re-check their slot at their next wake."""
        with self._cond:
            self._set_rate(per_minute)
            self._cond.notify_all()

    def acquire(self, priority: int = 0) -> float:
        """Block until a request may be sent; return the grant instant on the limiter's clock.

        Higher ``priority`` waiters are served first; equal priorities in arrival order.
        """
        with self._cond:
            self._arrivals += 1
            entry = (-priority, self._arrivals)
            heapq.heappush(self._waiters, entry)
            try:
                while True:
                    if self._waiters[0] != entry:
                        self._cond.wait()
                        continue
                    now = self._clock()
                    due = now if self._tat is None else self._tat - self._tolerance
                    if now >= due:
                        heapq.heappop(self._waiters)
                        start = now if self._tat is None else max(self._tat, now)
                        self._tat = start + self._interval
                        self._cond.notify_all()
                        return now
                    # Sleep without the lock so others can queue (and outrank us) meanwhile.
                    self._cond.release()
                    try:
                        self._sleep(due - now)
                    finally:
                        self._cond.acquire()
            except BaseException:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
                    self._cond.notify_all()
                raise

    def __repr__(self) -> str:
        return (
            f"RateLimiter(per_minute={self._per_minute:g}, burst={self._burst}, "
            f"headroom={self._headroom:g})"
        )


_registry: dict[str, RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(key: str, per_minute: float, *, headroom: float = DEFAULT_HEADROOM) -> RateLimiter:
    """The one limiter of this process for ``key`` (e.g. the API host), created on first use.

    Every caller with the same key shares it, whatever thread it runs on. A different
    ``per_minute`` for an existing key re-paces the shared limiter (settings changed).
    """
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = RateLimiter(per_minute, headroom=headroom)
            _registry[key] = limiter
        elif limiter.per_minute != float(per_minute):
            limiter.set_rate(per_minute)
        return limiter


def clear_limiters() -> None:
    """Forget every registered limiter (tests; a process normally keeps them for life)."""
    with _registry_lock:
        _registry.clear()
