"""Benchmark the rate limiter shared by a data directory against a plan limit enforced by the
loopback Massive fake.

The fake (``tests.fakes.massive_server``) answers 429 once ``R`` requests arrived within any
sliding 60 s window. Clients run in processes of their own, as against the real API, each
with a ``MassiveProvider.from_settings`` on one temporary data directory (so its limiter is
the one of ``<data_dir>/locks/``) and ``--threads`` workers making one-request calls. Two
scenarios, each repeated (``--repeats``) and reported as medians:

- **1 process** makes all ``--requests``;
- **2 processes** make half each, one at priority 0 (the daily refresh), one at -1 (a
  backfill).

Timing starts when every client is ready (imports done) and stops at the last response. The
reference is the ideal schedule, ``N / R`` minutes; a run passes when it finishes within 1 % of
it with zero 429 answers. The first request goes out at t = 0 and grants are spaced
``(1 + headroom) 60 / R`` apart, so a perfect run of ``N`` requests takes
``(N - 1)(1 + headroom) / R`` minutes plus one round trip: 0.9999 of the ideal at N = 100 with
the default 1 % headroom. With two processes "high done at" is the arrival rank of the
priority-0 process's last request: ``N / 2`` (or one more, if the backfill's first request got
the first slot) when priorities hold across processes, near ``N`` when they do not.

``--compare`` adds the same scenarios with ``pyrate-limiter`` v4 (its ``SQLiteBucket`` with
the file lock, ``Rate(1, interval)`` for smooth pacing; it has no priorities) and with one
private limiter per process (the limiter before it was shared: the in-process reference with
one process, twice the plan with two).

``--wrap`` adds two runs of ``1.1 R`` requests from two processes, which cross the 60 s
window (more than a minute each), with and without the limiter's headroom: exact ``60 / R``
spacing sits right at the window's edge, so arrival jitter can draw a 429 there; the default
1 % headroom absorbs it.
Usage::

    PYTHONPATH=. .venv/bin/python bench/ratelimit.py [--rate 600 --requests 100 --threads 5]
                                                     [--repeats 3] [--compare] [--wrap]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enrich.config import Settings  # noqa: E402
from enrich.errors import ProviderError  # noqa: E402
from enrich.providers.massive.provider import MassiveProvider  # noqa: E402
from enrich.providers.ratelimit import DEFAULT_HEADROOM, RateLimiter, state_path  # noqa: E402
from tests.fakes.massive_server import FakeMassive  # noqa: E402

TOLERANCE = 0.01
DAY = dt.date(2025, 5, 30)
HIGH, LOW = "AAPL", "MSFT"  # the symbol each process of the processes scenario asks for
LIMITERS = ("shared", "pyrate", "private", "none")


class PyrateLimiter:
    """pyrate-limiter v4 behind the ``RateLimiter`` interface the provider uses.

    A ``SQLiteBucket`` with its file lock is the library's way to share a limit between
    processes; ``Rate(1, interval)`` keeps the pacing smooth (``Rate(R, minute)`` would let
    ``R`` requests out at once). ``priority`` is ignored: the library has none.
    """

    def __init__(self, per_minute: float, db: Path, headroom: float = DEFAULT_HEADROOM):
        from pyrate_limiter import Limiter, Rate, SQLiteBucket

        self.per_minute = per_minute
        self.interval = 60.0 / per_minute * (1 + headroom)
        db.parent.mkdir(parents=True, exist_ok=True)
        bucket = SQLiteBucket.init_from_file(
            [Rate(1, round(self.interval * 1000))], table="massive", db_path=str(db),
            use_file_lock=True)
        self._limiter = Limiter(bucket, buffer_ms=0)

    def acquire(self, priority: int = 0) -> float:
        self._limiter.try_acquire("massive", blocking=True)
        return time.monotonic()

    def set_rate(self, per_minute: float) -> None:
        raise NotImplementedError("a pyrate-limiter bucket's rates are fixed when it is built")

    def close(self) -> None:
        self._limiter.close()


def make_limiter(kind: str, rate: float, data_dir: Path, headroom: float = DEFAULT_HEADROOM):
    if kind == "shared":
        return RateLimiter(rate, headroom=headroom, state=state_path(data_dir))
    if kind == "pyrate":
        return PyrateLimiter(rate, data_dir / "locks" / "pyrate.sqlite", headroom)
    if kind == "private":
        return RateLimiter(rate, headroom=headroom)
    raise ValueError(kind)


@dataclass
class Outcome:
    requests: int
    elapsed: float
    ideal: float
    rejected: int  # 429 answers seen by the server
    errors: int  # calls that raised (any ProviderError)
    max_per_window: int  # most arrivals the server saw within any 60 s
    high_done_at: int | None = None  # processes: arrival rank of the priority-0 process's last

    @property
    def ratio(self) -> float:
        """Elapsed over ideal: 1.00 is the plan's full rate, below 1 the first-request bonus."""
        return self.elapsed / self.ideal

    @property
    def ok(self) -> bool:
        return abs(self.ratio - 1) <= TOLERANCE and self.rejected == 0 and self.errors == 0


def max_in_window(times: list[float], width: float = 60.0) -> int:
    times = sorted(times)
    best, hi = 0, 0
    for lo, start in enumerate(times):
        while hi < len(times) and times[hi] < start + width:
            hi += 1
        best = max(best, hi - lo)
    return best


def call_all(provider: MassiveProvider, symbols: list[str], threads: int) -> int:
    """Make one bars call per symbol on ``threads`` workers; return how many raised."""
    work: queue.Queue[str] = queue.Queue()
    for s in symbols:
        work.put(s)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            try:
                symbol = work.get_nowait()
            except queue.Empty:
                return
            try:
                provider.bars(symbol, "1d", DAY, DAY)
            except ProviderError as exc:
                with lock:
                    errors.append(exc)

    pool = [threading.Thread(target=worker, name=f"bench-{k}") for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return len(errors)


def run(rate: float, n: int, threads: int, kind: str = "shared", processes: int = 1,
        headroom: float = DEFAULT_HEADROOM) -> Outcome:
    """``n`` requests from ``processes`` client processes of ``threads`` threads each.

    The clients run in processes of their own even for one, as they would against the real
    API: the fake server's threads then never hold the clients' GIL, which would delay a
    limiter's wake-ups by up to Python's 5 ms switch interval and measure the fake, not the
    limiter. With two, the first asks at priority -1 (a backfill), the second at 0.
    """
    with tempfile.TemporaryDirectory() as tmp, \
            FakeMassive(rate_limit_per_min=int(rate), rate_limit_retry_after=True,
                        symbols=(HIGH, LOW), today=dt.date(2025, 6, 2)) as fake:
        roles = [(HIGH, 0)] if processes == 1 else [(LOW, -1), (HIGH, 0)]
        children = []
        try:
            for symbol, priority in roles:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child",
                       "--limiter", kind, "--data-dir", tmp, "--base-url", fake.base_url,
                       "--key", fake.api_key, "--rate", str(rate),
                       "--requests", str(n // len(roles)), "--threads", str(threads),
                       "--priority", str(priority), "--symbol", symbol,
                       "--headroom", str(headroom)]
                children.append(subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                                 stdout=subprocess.PIPE, text=True, cwd=ROOT))
            for c in children:
                if c.stdout.readline().strip() != "ready":
                    raise RuntimeError("a client process did not start")
            started = time.monotonic()  # CLOCK_MONOTONIC: the children's clock too
            for c in children:
                c.stdin.write("go\n")
                c.stdin.flush()
            results = [json.loads(c.communicate(timeout=900)[0]) for c in children]
        finally:
            for c in children:
                if c.poll() is None:
                    c.kill()
                    c.wait()
        elapsed = max(r["finished"] for r in results) - started
        seen = fake.requests
        o = Outcome(
            requests=len(seen), elapsed=elapsed, ideal=60.0 * (n // len(roles) * len(roles)) / rate,
            rejected=sum(1 for s in seen if s.status == 429),
            errors=sum(r["errors"] for r in results),
            max_per_window=max_in_window([s.at for s in seen if s.status != 429]),
        )
        if processes > 1:
            order = [s.path for s in sorted(seen, key=lambda s: s.at)]
            o.high_done_at = max(i for i, p in enumerate(order, 1) if f"/{HIGH}/" in p)
        return o


def child(args: argparse.Namespace) -> int:
    """One client process: build the provider, wait for go, call, report."""
    settings = Settings(data_dir=Path(args.data_dir), provider="massive", api_key=args.key,
                        base_url=args.base_url, rate_limit_per_min=args.rate)
    kw = {}
    if args.limiter == "none":
        kw["limiter"] = None
    elif args.limiter != "shared" or args.headroom != DEFAULT_HEADROOM:
        kw["limiter"] = make_limiter(args.limiter, args.rate, Path(args.data_dir), args.headroom)
    # else: from_settings gives the limiter of the data directory, as in production.
    provider = MassiveProvider.from_settings(settings, **kw).with_priority(args.priority)
    print("ready", flush=True)
    sys.stdin.readline()
    errors = call_all(provider, [args.symbol] * args.requests, args.threads)
    finished = time.monotonic()
    print(json.dumps({"finished": finished, "errors": errors}), flush=True)
    return 0


def median_outcome(runs: list[Outcome]) -> Outcome:
    """The run whose ratio is the median (odd counts; the lower middle otherwise)."""
    ranked = sorted(runs, key=lambda o: o.ratio)
    return ranked[(len(ranked) - 1) // 2]


def report(label: str, rate: float, n: int, threads: int, headroom: float,
           runs: list[Outcome]) -> None:
    o = median_outcome(runs)
    ratios = ", ".join(f"{r.ratio:.4f}" for r in runs)
    print(f"{label}: N={n} requests at R={rate:g}/min, {threads} threads, "
          f"headroom {headroom:.0%}, {len(runs)} runs")
    print(f"  elapsed      {o.elapsed:8.3f} s   (median run)")
    print(f"  ideal N/R    {o.ideal:8.3f} s")
    print(f"  ratio        {o.ratio:8.4f}   (elapsed / ideal, median; target within "
          f"±{TOLERANCE:.0%}; runs: {ratios})")
    print(f"  429 answers  {max(r.rejected for r in runs):8d}   (worst run)")
    print(f"  errors       {max(r.errors for r in runs):8d}   (worst run)")
    print(f"  max in 60 s  {max(r.max_per_window for r in runs):8d}   "
          f"(server-side arrivals, worst run; plan allows {rate:g})")
    if o.high_done_at is not None:
        print(f"  high done at {statistics.median(r.high_done_at for r in runs):8g}   "
              f"(arrival rank of the priority-0 process's last request; {n // 2} or "
              f"{n // 2 + 1} with priorities)")
    print(f"  => {'PASS' if o.ok else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=600, help="plan limit R, requests/minute")
    ap.add_argument("--requests", type=int, default=100, help="N requests")
    ap.add_argument("--threads", type=int, default=5, help="worker threads per process")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM,
                    help="the limiter's headroom (production: 1 %%)")
    ap.add_argument("--compare", action="store_true",
                    help="also pyrate-limiter and one private limiter per process")
    ap.add_argument("--wrap", action="store_true",
                    help="also cross the 60 s window with and without headroom")
    # The processes scenario's children:
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--limiter", choices=LIMITERS, default="shared", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--priority", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--symbol", default=HIGH, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    rate, n, threads, reps = args.rate, args.requests, args.threads, args.repeats
    kinds = ["shared", "pyrate"] if args.compare else ["shared"]
    ok = True
    for processes in (1, 2):
        for kind in kinds + (["private"] if args.compare else []):
            runs = [run(rate, n, threads, kind, processes, args.headroom) for _ in range(reps)]
            where = "1 process" if processes == 1 else f"{processes} processes"
            report(f"{where}, {kind} limiter", rate, n, threads, args.headroom, runs)
            ok = ok and (kind != "shared" or median_outcome(runs).ok)
            print()
    if args.wrap:
        wrap_n = int(rate * 1.1)
        for headroom in (0.0, DEFAULT_HEADROOM):
            o = run(rate, wrap_n, threads, processes=2, headroom=headroom)
            report("window crossing, 2 processes", rate, wrap_n, threads, headroom, [o])
            if headroom:
                ok = ok and o.rejected == 0
            print()
    # The unpaced reference: the same calls with no limiter. Its time is the client and
    # server overhead the paced run hides inside its spacing; past R requests it draws 429s.
    bare = run(rate, n, threads, kind="none", headroom=0.0)
    print(f"reference, no limiter: {bare.elapsed:.3f} s for the same {n} calls, "
          f"{bare.rejected} answered 429, {bare.max_per_window} arrivals in the busiest 60 s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
