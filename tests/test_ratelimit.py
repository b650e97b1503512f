"""RateLimiter on a fake clock: spacing, bursts, thread safety, priority, window arithmetic."""

from __future__ import annotations

import threading
import time

import pytest

from enrich.ratelimit import DEFAULT_HEADROOM, RateLimiter, clear_limiters, limiter_for
from tests.fakes.massive_server import SlidingWindow


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self, start: float = 0.0):
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


def _wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


def max_in_window(grants: list[float], width: float, closed: bool) -> int:
    """Most grants in any window [t, t + width) (or [t, t + width] when ``closed``)."""
    grants = sorted(grants)
    best = 0
    hi = 0
    for lo, start in enumerate(grants):
        while hi < len(grants) and (
            grants[hi] <= start + width if closed else grants[hi] < start + width
        ):
            hi += 1
        best = max(best, hi - lo)
    return best


def test_first_request_is_immediate_then_evenly_spaced():
    clock = FakeClock()
    lim = RateLimiter(60, clock, clock.sleep)
    grants = [lim.acquire() for _ in range(5)]
    assert grants == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert clock.sleeps == [1.0, 1.0, 1.0, 1.0]
    assert lim.interval == 1.0


def test_idle_time_does_not_build_up_a_burst():
    clock = FakeClock()
    lim = RateLimiter(5, clock, clock.sleep)  # the free plan: one request every 12 s
    lim.acquire()
    clock.advance(600)
    first = lim.acquire()
    second = lim.acquire()
    assert first == 600.0
    assert second == pytest.approx(612.0)


def test_request_after_partial_interval_waits_only_the_rest():
    clock = FakeClock()
    lim = RateLimiter(5, clock, clock.sleep)
    lim.acquire()
    clock.advance(5)
    assert lim.acquire() == pytest.approx(12.0)
    assert clock.sleeps == [pytest.approx(7.0)]


def test_explicit_burst_allows_that_many_back_to_back():
    clock = FakeClock()
    lim = RateLimiter(60, clock, clock.sleep, burst=3)
    grants = [lim.acquire() for _ in range(6)]
    assert grants[:3] == [0.0, 0.0, 0.0]
    assert grants[3:] == [1.0, 2.0, 3.0]


def test_headroom_stretches_the_spacing():
    clock = FakeClock()
    lim = RateLimiter(600, clock, clock.sleep, headroom=0.01)
    grants = [lim.acquire() for _ in range(3)]
    assert grants[2] - grants[1] == pytest.approx(0.101)


@pytest.mark.parametrize("kwargs", [{"per_minute": 0}, {"per_minute": -1},
                                    {"per_minute": 5, "burst": 0},
                                    {"per_minute": 5, "headroom": -0.1}])
def test_invalid_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)


def test_threads_share_one_schedule_on_a_fake_clock():
    clock = FakeClock()
    lim = RateLimiter(120, clock, clock.sleep)
    grants: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            t = lim.acquire()
            with lock:
                grants.append(t)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(grants) == 200
    ordered = sorted(grants)
    gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    assert min(gaps) >= 0.5 - 1e-9
    assert lim.waiting == 0


def test_threads_share_one_schedule_on_the_real_clock():
    lim = RateLimiter(60_000)  # one request per millisecond
    grants: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(10):
            t = lim.acquire()
            with lock:
                grants.append(t)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    ordered = sorted(grants)
    assert len(ordered) == 50
    assert min(b - a for a, b in zip(ordered, ordered[1:], strict=False)) >= 0.001 - 1e-9


def test_higher_priority_waiter_is_served_before_earlier_lower_ones():
    clock = FakeClock()
    gate = threading.Event()

    def gated_sleep(seconds: float) -> None:
        gate.wait(5)
        clock.sleep(seconds)

    lim = RateLimiter(60, clock, gated_sleep)
    lim.acquire()  # takes the slot at t=0; everyone below must wait
    served: list[tuple[float, str]] = []
    lock = threading.Lock()

    def worker(name: str, priority: int) -> None:
        t = lim.acquire(priority)
        with lock:
            served.append((t, name))

    threads = []
    for n, (name, prio) in enumerate([("backfill-1", 0), ("backfill-2", 0), ("daily", 1)]):
        th = threading.Thread(target=worker, args=(name, prio))
        th.start()
        threads.append(th)
        _wait_until(lambda n=n: lim.waiting == n + 1)
    gate.set()
    for th in threads:
        th.join(5)
    assert [name for _, name in sorted(served)] == ["daily", "backfill-1", "backfill-2"]
    grants = sorted(t for t, _ in served)
    assert all(b - a >= 1.0 for a, b in zip(grants, grants[1:], strict=False))


def test_a_waiter_interrupted_while_sleeping_leaves_the_queue():
    clock = FakeClock()

    class Interrupt(Exception):
        pass

    calls = {"n": 0}

    def sleep(seconds: float) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Interrupt
        clock.sleep(seconds)

    lim = RateLimiter(60, clock, sleep)
    lim.acquire()
    with pytest.raises(Interrupt):
        lim.acquire()
    assert lim.waiting == 0
    assert lim.acquire() == 1.0


@pytest.mark.parametrize("rate", [5, 7, 100, 600])
def test_exact_spacing_sits_right_at_the_edge_of_a_minute(rate):
    clock = FakeClock()
    lim = RateLimiter(rate, clock, clock.sleep)
    grants = [lim.acquire() for _ in range(rate * 3 + 1)]
    # Any window a hair shorter than a minute holds at most `rate` grants...
    assert max_in_window(grants, 60.0 - 1e-6, closed=True) == rate
    # ...but a closed minute [t, t + 60] holds rate + 1: grant 0 and grant `rate` are
    # exactly 60 s apart, so a server judging arrival times can count both.
    assert max_in_window(grants, 60.0, closed=True) == rate + 1


@pytest.mark.parametrize("rate", [5, 7, 100, 600])
def test_headroom_leaves_slack_in_every_minute(rate):
    clock = FakeClock()
    lim = RateLimiter(rate, clock, clock.sleep, headroom=DEFAULT_HEADROOM)
    grants = [lim.acquire() for _ in range(rate * 3 + 1)]
    assert max_in_window(grants, 60.0, closed=True) <= rate
    # The slack: even a window 60 * headroom seconds longer than a minute stays within rate.
    assert max_in_window(grants, 60.0 * (1 + DEFAULT_HEADROOM) - 1e-6, closed=True) <= rate


def _arrivals(lim: RateLimiter, clock: FakeClock, n: int, first_delay: float) -> list[float]:
    """Grant times as a server sees them: the first request is late (connection set-up)."""
    grants = [lim.acquire() for _ in range(n)]
    return [g + (first_delay if i == 0 else 0.0) for i, g in enumerate(grants)]


def test_server_window_sees_arrival_jitter_exact_spacing_can_trip_it():
    clock = FakeClock()
    lim = RateLimiter(30, clock, clock.sleep)
    window = SlidingWindow(30, clock=lambda: 0.0)
    rejected = [t for t in _arrivals(lim, clock, 91, first_delay=0.2) if not window.admit(t)]
    assert rejected, "request 31 arrives 59.8 s after request 1 and must be refused"


def test_server_window_with_default_headroom_absorbs_the_jitter():
    clock = FakeClock()
    lim = RateLimiter(30, clock, clock.sleep, headroom=DEFAULT_HEADROOM)
    window = SlidingWindow(30, clock=lambda: 0.0)
    arrivals = _arrivals(lim, clock, 91, first_delay=0.2)
    assert all(window.admit(t) for t in arrivals)


def test_registry_shares_one_limiter_per_key_and_follows_rate_changes():
    clear_limiters()
    try:
        a = limiter_for("api.massive.com", 5)
        b = limiter_for("api.massive.com", 5)
        other = limiter_for("127.0.0.1:8000", 5)
        assert a is b
        assert other is not a
        c = limiter_for("api.massive.com", 100)
        assert c is a
        assert a.per_minute == 100
        assert a.interval == pytest.approx(0.6 * (1 + DEFAULT_HEADROOM))
    finally:
        clear_limiters()


def test_registry_is_safe_under_concurrent_first_use():
    clear_limiters()
    try:
        got: list[RateLimiter] = []
        lock = threading.Lock()
        barrier = threading.Barrier(8)

        def worker():
            barrier.wait()
            lim = limiter_for("host", 60)
            with lock:
                got.append(lim)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert len({id(x) for x in got}) == 1
    finally:
        clear_limiters()
