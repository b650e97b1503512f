"""Client-side pacing of provider requests: one smooth limiter per data directory, shared by
every thread and every process that uses that directory.

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
1 %), at the same cost in throughput. ``limiter_for`` and ``shared_limiter`` use 1 %.

Priority: waiters queue in order of (higher priority first, then arrival). Only the waiter at
the head of the queue may take the next slot; it sleeps outside the lock until its slot is
due, then checks it is still the head, so a higher-priority request that arrives meanwhile
(the daily run and Run now, priority >= 0) is served before queued backfill requests (-1).

Sharing across processes (``state=``, see ``shared_limiter``). The plan's quota is per API
key, so ``serve``, the dashboard and a CLI backfill on one data directory must share one
schedule. The schedule (``tat``, the last grant) and the queue of waiters live in a small JSON
file, ``<data_dir>/locks/ratelimit.json``, read and rewritten under a ``filelock`` lock beside
it (the lake never sees it). Within a process a condition variable serialises the threads and
wakes them on local changes; changes made by other processes are seen by looking again: the
head a moment before its slot (``_EARLY``: it takes the lock early and waits out the rest
holding it, so the lock's own cost does not make the grant late), the others about half an
interval before their turn could come, everyone at least every ``poll`` seconds.

Failures. The kernel drops the lock of a process that dies, so a process killed while holding
it wedges nothing. The file is rewritten in place in one write of a few hundred bytes, which
the kernel completes even for a process being killed (a temporary file and a rename tripled the
cost of a look, to about 1 ms, measured); a torn file (a hand edit, a failing disk) is read as
an empty schedule, which costs at most one request sent early. Each waiter's entry names its
process and when it last looked (``seen``): the entries of processes that no longer exist are
dropped by the next waiter that finds them ahead of it, and entries not refreshed for
``stale_after`` seconds (a stopped process: Ctrl-Z) are passed over, not dropped, so that
process takes its place again when it resumes. A grant reserves the granting process's
``interval``: processes sharing a directory should share ``ENRICH_RATE_LIMIT_PER_MIN`` (they
read the same settings).

Clock: ``time.monotonic`` (``CLOCK_MONOTONIC``), which on Linux is one system-wide clock
shared by every process, so grant times written by one process are meaningful to another; and
unlike the wall clock it never steps (NTP, a manual change), which would freeze the limiter
(a step back) or let a burst through (a step forward). It restarts at boot: a state file whose
last grant lies in the clock's future was written before a reboot and is discarded. The
consequence is that processes sharing a data directory must run on one machine (a data
directory on a network share used by two hosts would need the wall clock); processes in
separate PID namespaces (containers) would drop each other's waiters as dead, which costs
queue order, never spacing.

``clock`` and ``sleep`` are injectable so tests run on a fake clock.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)

DEFAULT_HEADROOM = 0.01
PLAN_WINDOW_S = 60.0  # plans limit requests per minute: the window a 429 says is spent
MAX_HOLD_S = 2 * PLAN_WINDOW_S  # the longest ``hold``, whatever a Retry-After header says
STATE_FILE = "ratelimit.json"  # under <data_dir>/locks/
DEFAULT_POLL = 1.0  # seconds: longest sleep between two looks at a shared state file
_LOCK_POLL = 0.0005  # seconds between tries of a contended file lock (held for ~1 ms)
# How early the head of a shared queue takes the lock before its slot: more than taking the
# lock and reading the state cost (~0.3 ms with filelock), little enough to hold it meanwhile.
_EARLY = 0.002

_entry_ids = itertools.count(1)  # waiter ids, unique within this process


@dataclass
class _Waiter:
    priority: int
    seq: int  # arrival number in the shared queue: ties between equal priorities
    pid: int
    id: int  # unique within ``pid``
    seen: float  # the last time its thread looked at the queue, on the limiter's clock

    @property
    def order(self) -> tuple[int, int]:
        return (-self.priority, self.seq)


@dataclass
class _State:
    tat: float | None = None  # theoretical arrival time of the next conforming request
    last: float | None = None  # the last grant or hold (a later reading means a new boot)
    seq: int = 0
    waiters: list[_Waiter] = field(default_factory=list)  # sorted by ``order``

    def add(self, w: _Waiter) -> None:
        bisect.insort(self.waiters, w, key=lambda x: x.order)

    def find(self, pid: int, wid: int) -> _Waiter | None:
        return next((w for w in self.waiters if w.pid == pid and w.id == wid), None)

    def to_json(self) -> str:
        return json.dumps({
            "version": 1, "clock": "monotonic", "tat": self.tat, "last": self.last,
            "seq": self.seq,
            "waiters": [[w.priority, w.seq, w.pid, w.id, w.seen] for w in self.waiters],
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> _State:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("version") != 1:
            raise ValueError("not a version-1 limiter state")
        waiters = [_Waiter(int(p), int(s), int(pid), int(i), float(seen))
                   for p, s, pid, i, seen in raw["waiters"]]
        waiters.sort(key=lambda x: x.order)
        return cls(
            tat=None if raw["tat"] is None else float(raw["tat"]),
            last=None if raw["last"] is None else float(raw["last"]),
            seq=int(raw["seq"]), waiters=waiters,
        )


class _MemoryStore:
    """The state of a limiter used by one process only."""

    shared = False

    def __init__(self) -> None:
        self._state = _State()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_State]:
        yield self._state  # the limiter's condition lock already serialises threads

    def peek(self) -> _State:
        return self._state


class _FileStore:
    """The state in a JSON file, read and rewritten under a cross-process file lock.

    Nothing is created until the first transaction, so building a limiter for a data
    directory that is never used for requests leaves no trace in it.
    """

    shared = True

    def __init__(self, path: Path):
        self.path = Path(path)
        # One lock object for the process (not per thread): the limiter's condition lock
        # already lets only one thread in at a time. An explicit mode skips filelock's probe
        # of the folder (see enrich/store/lake.py).
        self._lock = FileLock(str(self.path) + ".lock", thread_local=False, mode=0o644)
        self._made_dir = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_State]:
        if not self._made_dir:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._made_dir = True
        with self._lock.acquire(poll_interval=_LOCK_POLL):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                raw = os.pread(fd, max(os.fstat(fd).st_size, 1), 0)
                before, state = self._parse(raw)
                yield state
                after = state.to_json().encode()
                if after != before:
                    # In place, in one write from offset 0, padded with blanks over a longer
                    # old text (JSON ignores them): no new file and no rename per look, and
                    # the kernel finishes a one-page write even for a process being killed.
                    os.pwrite(fd, after.ljust(len(raw)), 0)
            finally:
                os.close(fd)

    def peek(self) -> _State:
        if not self.path.exists():
            return _State()
        with self.transaction() as state:
            return state

    def _parse(self, raw: bytes) -> tuple[bytes, _State]:
        text = raw.strip()
        if not text:
            return text, _State()
        try:
            return text, _State.from_json(text.decode("utf-8"))
        except (ValueError, KeyError, TypeError) as exc:
            # Only a hand edit or a torn multi-page write can do this: the worst a fresh
            # state costs is one request sent without waiting for its slot.
            log.warning("rate limiter state %s is unreadable (%s); starting afresh",
                        self.path, exc)
            return text, _State()


@dataclass(frozen=True)
class _Wait:
    until: float  # on the limiter's clock
    head: bool  # the head sleeps (its slot is due later); others wait to be woken or to poll


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class RateLimiter:
    """Thread-safe smooth rate limiter; ``acquire`` blocks until a request may be sent.

    With ``state`` (a file path) the schedule and the queue are shared with every process
    that builds a limiter on the same file; without it they live in this object.
    """

    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        burst: int = 1,
        headroom: float = 0.0,
        state: Path | str | None = None,
        poll: float = DEFAULT_POLL,
        stale_after: float | None = None,
    ):
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if headroom < 0:
            raise ValueError(f"headroom must not be negative, got {headroom}")
        if not poll > 0:
            raise ValueError(f"poll must be positive, got {poll}")
        self._clock = clock
        self._sleep = sleep
        self._burst = burst
        self._headroom = headroom
        self._poll = poll
        self._stale_after = max(10.0, 10 * poll) if stale_after is None else stale_after
        self._cond = threading.Condition(threading.Lock())
        self._store: _MemoryStore | _FileStore = (
            _FileStore(Path(state)) if state is not None else _MemoryStore())
        self._set_rate(per_minute)

    def _set_rate(self, per_minute: float) -> None:
        if not per_minute > 0:
            raise ValueError(f"per_minute must be positive, got {per_minute}")
        self._per_minute = float(per_minute)
        self._interval = 60.0 / self._per_minute * (1.0 + self._headroom)
        self._tolerance = (self._burst - 1) * self._interval
        self._margin = min(_EARLY, self._interval / 4)

    @property
    def per_minute(self) -> float:
        return self._per_minute

    @property
    def interval(self) -> float:
        """Seconds between grants at the steady rate (headroom included)."""
        return self._interval

    @property
    def state_path(self) -> Path | None:
        """The shared state file, or None for a limiter private to this process."""
        return self._store.path if isinstance(self._store, _FileStore) else None

    @property
    def waiting(self) -> int:
        """Requests currently blocked in ``acquire``: of this process, or of every live
        process sharing the state file."""
        with self._cond:
            state = self._store.peek()
            if not self._store.shared:
                return len(state.waiters)
            return sum(1 for w in state.waiters if _process_exists(w.pid))

    def set_rate(self, per_minute: float) -> None:
        """Change the rate; threads already waiting re-check their slot at their next wake.

        The rate is this process's setting: a grant made here reserves ``interval`` seconds
        of the shared schedule, whoever waits next.
        """
        with self._cond:
            self._set_rate(per_minute)
            self._cond.notify_all()

    def hold(self, seconds: float) -> float:
        """Grant nothing for ``seconds`` from now (at most ``MAX_HOLD_S``): to every thread
        and, with a state file, to every process sharing it. The provider answered 429, so the
        key's quota for the window is spent, by another consumer of the key (this limiter
        paces its own requests); whoever asks meanwhile would earn a 429 of their own. Waiters
        already queued keep their order and re-check their slot. A hold never brings the
        schedule forward. Returns the instant it ends, on the limiter's clock."""
        seconds = min(max(float(seconds), 0.0), MAX_HOLD_S)
        with self._cond:
            with self._store.transaction() as state:
                now = self._clock()
                until = now + seconds
                if state.tat is None or state.tat - self._tolerance < until:
                    state.tat = until + self._tolerance
                # Stamped with this clock too, so a hold written before a reboot is discarded
                # like a grant (``_step``), never waited out on the new boot's clock.
                state.last = now if state.last is None else max(state.last, now)
            self._cond.notify_all()
        return until

    def acquire(self, priority: int = 0) -> float:
        """Block until a request may be sent; return the grant instant on the limiter's clock.

        Higher ``priority`` waiters are served first; equal priorities in arrival order.
        """
        pid, wid = os.getpid(), next(_entry_ids)
        with self._cond:
            try:
                while True:
                    with self._store.transaction() as state:
                        # Read under the lock: ordered with every other grant.
                        granted, wait = self._step(state, self._clock(), priority, pid, wid)
                    if granted is not None:
                        self._cond.notify_all()
                        return granted
                    if wait is None:  # not the head, nothing shared: a local grant wakes us
                        self._cond.wait()
                        continue
                    # Measured from now, not from the look: writing the state took a while.
                    seconds = max(0.0, wait.until - self._clock())
                    if wait.head:
                        # Sleep without the lock so others can queue (and outrank us) meanwhile.
                        self._cond.release()
                        try:
                            self._sleep(seconds)
                        finally:
                            self._cond.acquire()
                    else:
                        self._cond.wait(seconds)
            except BaseException:
                with self._store.transaction() as state:
                    mine = state.find(pid, wid)
                    if mine is not None:
                        state.waiters.remove(mine)
                self._cond.notify_all()
                raise

    def _step(self, state: _State, now: float, priority: int, pid: int, wid: int
              ) -> tuple[float | None, _Wait | None]:
        """One look at the queue: grant the slot (its instant), or say until when to wait."""
        if state.last is not None and now < state.last:
            log.warning("rate limiter state was written before the clock restarted "
                        "(a reboot); starting afresh")
            state.tat, state.last, state.waiters = None, None, []
        mine = state.find(pid, wid)
        if mine is None:  # first look, or the state was reset under us
            state.seq += 1
            mine = _Waiter(priority, state.seq, pid, wid, now)
            state.add(mine)
        if now - mine.seen >= self._poll / 4:
            mine.seen = now  # not at every look: each change costs a write
        ahead = self._ahead(state, mine, now)
        due = now if state.tat is None else max(now, state.tat - self._tolerance)
        if ahead == 0 and self._store.shared and now < due <= now + self._margin:
            # The head of a shared queue looks a little early and waits out the last moment
            # holding the lock, so its grant is not late by the cost of taking the lock.
            self._sleep(due - now)
            now = max(due, self._clock())
        if ahead == 0 and now >= due:
            state.waiters.remove(mine)
            start = now if state.tat is None else max(state.tat, now)
            state.tat = start + self._interval
            state.last = now
            return now, None
        if ahead == 0:
            if not self._store.shared:
                return None, _Wait(due, head=True)
            # Look again just before the slot, and at least every ``poll`` to stay fresh.
            return None, _Wait(min(due - self._margin, now + self._poll), head=True)
        if not self._store.shared:
            return None, None
        # Our turn can come at ``due + ahead * interval`` at the earliest: look again half an
        # interval before it (sooner if the head is late, never longer than ``poll``).
        seconds = due + (ahead - 0.5) * self._interval - now
        seconds = min(max(seconds, min(self._interval / 4, 0.05)), self._poll)
        return None, _Wait(now + seconds, head=False)

    def _ahead(self, state: _State, mine: _Waiter, now: float) -> int:
        """Waiters that must be served before ``mine``; drops those of dead processes."""
        ahead = 0
        for w in list(state.waiters):
            if w is mine:
                break
            if w.pid == mine.pid:  # this process's threads are alive, and look when woken
                ahead += 1
            elif not _process_exists(w.pid):
                log.info("rate limiter: dropping a waiter of process %d, which has exited", w.pid)
                state.waiters.remove(w)
            elif now - self._stale_after <= w.seen <= now:
                ahead += 1
            # else: a stopped process (or a clock from before a reboot): pass it over
        return ahead

    def __repr__(self) -> str:
        where = f", state={str(self.state_path)!r}" if self.state_path else ""
        return (
            f"RateLimiter(per_minute={self._per_minute:g}, burst={self._burst}, "
            f"headroom={self._headroom:g}{where})"
        )


_registry: dict[str, RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(
    key: str,
    per_minute: float,
    *,
    headroom: float = DEFAULT_HEADROOM,
    state: Path | str | None = None,
) -> RateLimiter:
    """The one limiter of this process for ``key``, created on first use.

    Every caller with the same key shares it, whatever thread it runs on. A different
    ``per_minute`` for an existing key re-paces the shared limiter (settings changed).
    With ``state`` the limiter also shares its schedule with other processes (see
    ``shared_limiter``).
    """
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = RateLimiter(per_minute, headroom=headroom, state=state)
            _registry[key] = limiter
        elif limiter.per_minute != float(per_minute):
            limiter.set_rate(per_minute)
        return limiter


def state_path(data_dir: Path | str) -> Path:
    """Where the limiter of a data directory keeps its schedule (beside the other locks,
    outside the lake)."""
    return Path(data_dir).expanduser().resolve() / "locks" / STATE_FILE


def shared_limiter(
    data_dir: Path | str, per_minute: float, *, headroom: float = DEFAULT_HEADROOM
) -> RateLimiter:
    """The limiter every process using ``data_dir`` shares: one per data directory.

    In this process it is one object (threads share it); across processes the schedule
    and the priority queue live in ``<data_dir>/locks/ratelimit.json``, created on the first
    request.
    """
    path = state_path(data_dir)
    return limiter_for(f"state:{path}", per_minute, headroom=headroom, state=path)


def clear_limiters() -> None:
    """Forget every registered limiter (tests; a process normally keeps them for life)."""
    with _registry_lock:
        _registry.clear()
