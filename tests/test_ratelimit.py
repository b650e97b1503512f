"""RateLimiter on a fake clock: spacing, bursts, thread safety, priority, window arithmetic;
then the limiter of a data directory, shared by processes: its file, dead and stopped
waiters, a killed lock holder, priorities across processes, and two processes against the
loopback fake's plan limit."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from enrich.config import Settings
from enrich.providers.massive.provider import MassiveProvider
from enrich.providers.ratelimit import (
    DEFAULT_HEADROOM,
    RateLimiter,
    clear_limiters,
    limiter_for,
    shared_limiter,
    state_path,
)
from tests.conftest import REPO
from tests.fakes.massive_server import FakeMassive, SlidingWindow


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


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    """Where a limiter keeps its schedule: in the object, or in a state file (as the limiter
    of a data directory does). The same schedule must come out of both."""
    return None if request.param == "memory" else tmp_path / "locks" / "ratelimit.json"


def make(per_minute, clock, sleep, store, **kw) -> RateLimiter:
    # A long poll: on a fake clock the head's sleeps are then cut only by the look it takes
    # just before its slot.
    return RateLimiter(per_minute, clock, sleep, state=store, poll=1000.0, **kw)


def _wait_until(predicate, timeout: float = 60.0) -> None:
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


def test_first_request_is_immediate_then_evenly_spaced(store):
    clock = FakeClock()
    lim = make(60, clock, clock.sleep, store)
    grants = [lim.acquire() for _ in range(5)]
    assert grants == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    if store is None:
        assert clock.sleeps == [1.0, 1.0, 1.0, 1.0]
    else:  # the head of a shared queue looks again 2 ms before its slot
        assert clock.sleeps == pytest.approx([0.998, 0.002] * 4)
    assert lim.interval == 1.0


def test_idle_time_does_not_build_up_a_burst(store):
    clock = FakeClock()
    lim = make(5, clock, clock.sleep, store)  # the free plan: one request every 12 s
    lim.acquire()
    clock.advance(600)
    first = lim.acquire()
    second = lim.acquire()
    assert first == 600.0
    assert second == pytest.approx(612.0)


def test_request_after_partial_interval_waits_only_the_rest(store):
    clock = FakeClock()
    lim = make(5, clock, clock.sleep, store)
    lim.acquire()
    clock.advance(5)
    assert lim.acquire() == pytest.approx(12.0)
    if store is None:
        assert clock.sleeps == [pytest.approx(7.0)]
    else:
        assert sum(clock.sleeps) == pytest.approx(7.0)


def test_explicit_burst_allows_that_many_back_to_back(store):
    clock = FakeClock()
    lim = make(60, clock, clock.sleep, store, burst=3)
    grants = [lim.acquire() for _ in range(6)]
    assert grants[:3] == [0.0, 0.0, 0.0]
    assert grants[3:] == pytest.approx([1.0, 2.0, 3.0])


def test_headroom_stretches_the_spacing(store):
    clock = FakeClock()
    lim = make(600, clock, clock.sleep, store, headroom=0.01)
    grants = [lim.acquire() for _ in range(3)]
    assert grants[2] - grants[1] == pytest.approx(0.101)


@pytest.mark.parametrize("kwargs", [{"per_minute": 0}, {"per_minute": -1},
                                    {"per_minute": 5, "burst": 0},
                                    {"per_minute": 5, "headroom": -0.1}])
def test_invalid_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)


def test_threads_share_one_schedule_on_a_fake_clock(store):
    clock = FakeClock()
    lim = make(120, clock, clock.sleep, store)
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
        t.join(60)
    assert len(grants) == 200
    ordered = sorted(grants)
    gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    assert min(gaps) >= 0.5 - 1e-9
    assert lim.waiting == 0


def test_threads_share_one_schedule_on_the_real_clock(store):
    lim = RateLimiter(60_000, state=store)  # one request per millisecond
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
        t.join(60)
    ordered = sorted(grants)
    assert len(ordered) == 50
    assert min(b - a for a, b in zip(ordered, ordered[1:], strict=False)) >= 0.001 - 1e-9


def test_higher_priority_waiter_is_served_before_earlier_lower_ones(store):
    clock = FakeClock()
    gate = threading.Event()

    def gated_sleep(seconds: float) -> None:
        # Until the three waiters queued: a bound of 5 s let a slow machine start serving
        # before the daily waiter arrived. The bound only frees a failed test's threads.
        gate.wait(60)
        clock.sleep(seconds)

    lim = make(60, clock, gated_sleep, store)
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
        th.join(60)
    assert [name for _, name in sorted(served)] == ["daily", "backfill-1", "backfill-2"]
    grants = sorted(t for t, _ in served)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(grants, grants[1:], strict=False))


def test_a_waiter_interrupted_while_sleeping_leaves_the_queue(store):
    clock = FakeClock()

    class Interrupt(Exception):
        pass

    calls = {"n": 0}

    def sleep(seconds: float) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Interrupt
        clock.sleep(seconds)

    lim = make(60, clock, sleep, store)
    lim.acquire()
    with pytest.raises(Interrupt):
        lim.acquire()
    assert lim.waiting == 0
    assert lim.acquire() == pytest.approx(1.0)


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
def test_headroom_leaves_slack_in_every_minute(rate, store):
    clock = FakeClock()
    lim = make(rate, clock, clock.sleep, store, headroom=DEFAULT_HEADROOM)
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
            t.join(60)
        assert len({id(x) for x in got}) == 1
    finally:
        clear_limiters()


# -- the limiter of a data directory ------------------------------------------------------------


def test_one_limiter_per_data_directory_created_on_first_request(tmp_path, monkeypatch):
    clear_limiters()
    try:
        data = tmp_path / "data"
        a = shared_limiter(data, 600)
        monkeypatch.chdir(tmp_path)
        assert shared_limiter(Path("data"), 600) is a  # the same directory, spelled relative
        other = shared_limiter(tmp_path / "other", 600)
        assert other is not a
        assert not data.exists(), "building the limiter must not touch the data directory"
        a.acquire()
        assert a.state_path == state_path(data) == data.resolve() / "locks" / "ratelimit.json"
        files = {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()}
        assert files <= {"locks/ratelimit.json", "locks/ratelimit.json.lock"}
        assert "locks/ratelimit.json" in files
        assert shared_limiter(data, 100) is a and a.per_minute == 100  # settings changed
    finally:
        clear_limiters()


def test_massive_providers_on_one_data_dir_share_its_limiter(tmp_path):
    clear_limiters()
    try:
        def settings(data_dir: Path) -> Settings:
            return Settings(data_dir=data_dir, provider="massive", api_key="k",
                            rate_limit_per_min=5)

        a = MassiveProvider.from_settings(settings(tmp_path / "one"))
        b = MassiveProvider.from_settings(settings(tmp_path / "one")).with_priority(-1)
        c = MassiveProvider.from_settings(settings(tmp_path / "two"))
        try:
            assert a._limiter is b._limiter is not None
            assert a._limiter is not c._limiter
            assert a._limiter.state_path == state_path(tmp_path / "one")
            assert a._limiter.per_minute == 5
        finally:
            for p in (a, b, c):
                p.close()
    finally:
        clear_limiters()


def test_two_limiter_objects_on_one_file_share_the_schedule(tmp_path):
    """What two processes see, in one process: the second limiter waits for the first's slot."""
    clock = FakeClock()
    path = tmp_path / "locks" / "ratelimit.json"
    serve = RateLimiter(60, clock, clock.sleep, state=path, poll=1000.0)
    cli = RateLimiter(60, clock, clock.sleep, state=path, poll=1000.0)
    grants = [serve.acquire(), cli.acquire(), serve.acquire(), cli.acquire()]
    assert grants == pytest.approx([0.0, 1.0, 2.0, 3.0])


def test_an_unreadable_state_file_starts_afresh(tmp_path, caplog):
    clock = FakeClock()
    path = tmp_path / "locks" / "ratelimit.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "tat": 5')  # torn: a hand edit or a failed disk
    lim = RateLimiter(60, clock, clock.sleep, state=path, poll=1000.0)
    with caplog.at_level(logging.WARNING, logger="enrich.providers.ratelimit"):
        assert lim.acquire() == 0.0
    assert "unreadable" in caplog.text
    assert json.loads(path.read_text())["tat"] == pytest.approx(1.0)
    assert lim.acquire() == pytest.approx(1.0)


def test_a_state_from_before_a_reboot_is_discarded(tmp_path, caplog):
    """CLOCK_MONOTONIC restarts at boot: a last grant in the clock's future is stale."""
    path = tmp_path / "locks" / "ratelimit.json"
    before = FakeClock(start=5000.0)
    RateLimiter(5, before, before.sleep, state=path).acquire()  # next slot at 5012
    state = json.loads(path.read_text())
    state["waiters"] = [[0, 99, os.getpid(), 424242, 5000.0]]  # a waiter from then, too
    path.write_text(json.dumps(state))
    after = FakeClock(start=30.0)  # a fresh boot
    lim = RateLimiter(5, after, after.sleep, state=path)
    with caplog.at_level(logging.WARNING, logger="enrich.providers.ratelimit"):
        assert lim.acquire() == 30.0  # at once, not at 5012, and not behind the old waiter
    assert "clock restarted" in caplog.text
    assert lim.waiting == 0


# Child processes for the tests below. Each prints "ready" once its limiter or provider is
# built. A "file clock" is a fake clock shared by processes: a number in a file that only the
# test moves, so the order of grants never depends on how fast the machine is.
_CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path

    mode, args = sys.argv[1], json.loads(sys.argv[2])

    last = 0.0  # this process's last reading of the file clock

    def file_clock():
        global last
        last = float(Path(args["clock"]).read_text())
        return last

    def file_sleep(seconds):
        # Measured from the caller's last reading, which is what the limiter measures
        # ``seconds`` from. Not from a fresh reading: the test may move the clock while this
        # process is stopped or descheduled between the two, and the sleep would then end
        # ``seconds`` after a time the test sets last, which it never passes.
        until = last + seconds
        while file_clock() < until:
            time.sleep(0.002)

    if mode == "wait":  # queue once on the shared limiter, record the grant
        from enrich.providers.ratelimit import RateLimiter
        lim = RateLimiter(60, file_clock, file_sleep, state=args["state"])
        print("ready", flush=True)
        granted = lim.acquire(args["priority"])
        with open(args["out"], "a") as f:
            f.write(f"{args['name']} {granted}\\n")
    elif mode == "hold":  # take the state's lock and keep it until killed
        from filelock import FileLock, Timeout
        lock = FileLock(args["state"] + ".lock", thread_local=False, mode=0o644)
        lock.acquire()  # (kept in a name: a lock object released on collection)
        print("ready", flush=True)
        time.sleep(600)
    elif mode == "requests":  # a MassiveProvider built from settings, as serve or the CLI
        import datetime as dt
        from enrich.config import Settings
        from enrich.errors import ProviderError
        from enrich.providers.massive.provider import MassiveProvider
        settings = Settings(data_dir=Path(args["data_dir"]), provider="massive",
                            api_key=args["key"], base_url=args["base_url"],
                            rate_limit_per_min=args["rate"])
        provider = MassiveProvider.from_settings(settings).with_priority(args["priority"])
        print("ready", flush=True)
        sys.stdin.readline()
        day = dt.date(2025, 5, 30)
        errors = 0
        for _ in range(args["n"]):
            try:
                provider.bars(args["symbol"], "1d", day, day)
            except ProviderError:
                errors += 1
        print(json.dumps({"errors": errors}), flush=True)
""")


@pytest.fixture
def children():
    """Start child processes; every one is killed and reaped at the end of the test."""
    started: list[subprocess.Popen] = []

    def start(mode: str, **args) -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-c", _CHILD, mode, json.dumps(args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": REPO},
        )
        started.append(p)
        line = p.stdout.readline().strip()
        assert line == "ready", f"child {mode} did not start (exit {p.poll()})"
        return p

    yield start
    for p in started:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)  # a stopped process dies only once resumed
                p.kill()
        p.wait(30)
        for stream in (p.stdin, p.stdout):
            stream.close()


class FileClock:
    """The test's side of a file clock: it sets the time; its limiters read it too."""

    def __init__(self, path: Path):
        self.path = path
        self.set(0.0)

    def set(self, t: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(repr(t))
        os.replace(tmp, self.path)

    def __call__(self) -> float:
        return float(self.path.read_text())

    def sleep(self, seconds: float) -> None:  # the test's limiters never need to wait
        raise AssertionError(f"the test's own limiter would wait {seconds} s")


def _acquire_within(lim: RateLimiter, priority: int, timeout: float = 60.0) -> float:
    """``lim.acquire(priority)``, failing (not hanging) if it is not granted in time."""
    got: list[float] = []
    t = threading.Thread(target=lambda: got.append(lim.acquire(priority)), daemon=True)
    t.start()
    t.join(timeout)
    assert got, f"not granted within {timeout} s"
    return got[0]


def _lines(path: Path, n: int, timeout: float = 60.0) -> list[str]:
    _wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= n, timeout)
    return path.read_text().splitlines()


def test_a_backfill_waiter_yields_to_a_daily_run_waiter_in_another_process(tmp_path, children):
    state = tmp_path / "data" / "locks" / "ratelimit.json"
    clock = FileClock(tmp_path / "clock")
    out = tmp_path / "grants"
    here = RateLimiter(60, clock, clock.sleep, state=state)
    assert here.acquire() == 0.0  # the slot at t=0 is taken: the next one is at t=1
    common = {"state": str(state), "clock": str(clock.path), "out": str(out)}
    children("wait", name="backfill", priority=-1, **common)
    _wait_until(lambda: here.waiting == 1, 60)
    children("wait", name="daily", priority=0, **common)  # arrives later, outranks it
    _wait_until(lambda: here.waiting == 2, 60)
    clock.set(1.0)
    assert _lines(out, 1) == ["daily 1.0"]
    clock.set(2.0)
    assert _lines(out, 2) == ["daily 1.0", "backfill 2.0"]
    assert here.waiting == 0


def test_a_killed_waiter_does_not_block_the_others(tmp_path, children):
    state = tmp_path / "data" / "locks" / "ratelimit.json"
    clock = FileClock(tmp_path / "clock")
    here = RateLimiter(60, clock, clock.sleep, state=state)
    here.acquire()
    dead = children("wait", name="dead", priority=5, state=str(state), clock=str(clock.path),
                    out=str(tmp_path / "grants"))
    _wait_until(lambda: here.waiting == 1, 60)
    dead.kill()
    dead.wait(30)
    clock.set(1.0)
    assert _acquire_within(here, 0) == 1.0  # its entry, ahead of ours, was dropped
    assert json.loads(state.read_text())["waiters"] == []
    assert not (tmp_path / "grants").exists()


def _stop(p: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGSTOP a child and return once it is stopped (a signal is delivered asynchronously)."""
    os.kill(p.pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while True:
        pid, status = os.waitpid(p.pid, os.WUNTRACED | os.WNOHANG)
        if pid:
            assert os.WIFSTOPPED(status), f"child exited (status {status}) instead of stopping"
            return
        assert time.monotonic() < deadline, f"child not stopped within {timeout} s"
        time.sleep(0.001)


def test_a_stopped_waiter_is_passed_over_and_keeps_its_place(tmp_path, children):
    """A waiter that stops looking (its process suspended, e.g. Ctrl-Z) is passed over once
    ``stale_after`` has gone by; it is served when it resumes."""
    state = tmp_path / "data" / "locks" / "ratelimit.json"
    clock = FileClock(tmp_path / "clock")
    out = tmp_path / "grants"
    here = RateLimiter(60, clock, clock.sleep, state=state, stale_after=5.0)
    here.acquire()
    stopped = children("wait", name="stopped", priority=5, state=str(state),
                       clock=str(clock.path), out=str(out))
    _wait_until(lambda: here.waiting == 1, 60)
    _stop(stopped)  # stopped before the clock moves: it cannot look at t=10
    clock.set(10.0)
    assert _acquire_within(here, 0) == 10.0
    assert here.waiting == 1  # still queued
    os.kill(stopped.pid, signal.SIGCONT)
    clock.set(11.0)
    assert _lines(out, 1) == ["stopped 11.0"]


def test_a_process_killed_holding_the_lock_does_not_wedge_the_limiter(tmp_path, children):
    state = tmp_path / "data" / "locks" / "ratelimit.json"
    state.parent.mkdir(parents=True)
    holder = children("hold", state=str(state))
    lim = RateLimiter(60, state=state)
    granted = threading.Event()
    waiter = threading.Thread(target=lambda: (lim.acquire(), granted.set()), daemon=True)
    waiter.start()
    with pytest.raises(Timeout):  # the child does hold it
        FileLock(str(state) + ".lock", thread_local=False, mode=0o644).acquire(timeout=0)
    assert not granted.is_set()  # cannot be, while the lock is held
    holder.kill()
    holder.wait(30)
    assert granted.wait(60), "the kernel drops a dead process's lock; the waiter must proceed"
    waiter.join(10)


def _max_in_window(times: list[float], width: float) -> int:
    times = sorted(times)
    best, hi = 0, 0
    for lo, start in enumerate(times):
        while hi < len(times) and times[hi] < start + width:
            hi += 1
        best = max(best, hi - lo)
    return best


@pytest.mark.slow
def test_two_processes_stay_within_the_plan_together(tmp_path, children):
    """Issue 11: two processes on one data directory (a run at priority 0, a backfill at -1)
    against a fake enforcing R requests per minute: no 429, no minute over R.

    At R = 600 the run takes about 8 s, far from a full minute, so the plan's own window
    cannot tell one shared limiter from two private ones (each would pace at R). A shorter
    window does: one shared limiter puts at most R / 12 = 50 requests in any 5 s, two private
    ones put all 80 there. The bound allows 10 more: the fake stamps a request when it has
    answered it, so a stall of the test process on a busy machine bunches the stamps of the
    requests that arrived meanwhile.
    """
    rate, per_process = 600, 40
    with FakeMassive(rate_limit_per_min=rate, rate_limit_retry_after=True,
                     symbols=("AAPL", "MSFT"), today=dt.date(2025, 6, 2)) as fake:
        common = {"data_dir": str(tmp_path / "data"), "key": fake.api_key,
                  "base_url": fake.base_url, "rate": rate, "n": per_process}
        procs = [children("requests", symbol="MSFT", priority=-1, **common),
                 children("requests", symbol="AAPL", priority=0, **common)]
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [json.loads(p.stdout.readline()) for p in procs]
        seen = fake.requests
    assert [r["errors"] for r in results] == [0, 0]
    assert len(seen) == 2 * per_process
    assert [s for s in seen if s.status == 429] == []
    arrivals = [s.at for s in seen]
    assert _max_in_window(arrivals, 60.0) <= rate
    assert _max_in_window(arrivals, 5.0) <= rate * 5 // 60 + 10
    # The schedule lives beside the other locks, never in the lake.
    data = tmp_path / "data"
    assert (data / "locks" / "ratelimit.json").is_file()
    assert not (data / "lake").exists() or not any((data / "lake").rglob("*ratelimit*"))
