"""Benchmark the shared rate limiter against a plan limit enforced by the loopback Massive fake.

The fake (``tests.fakes.massive_server``) answers 429 once ``R`` requests arrived within any
sliding 60 s window. ``--threads`` workers share one ``MassiveProvider`` (one httpx client, one
``RateLimiter``) and make ``--requests`` one-request calls between them. The reference is the
ideal schedule, ``N / R`` minutes; the run passes when it finishes within 5 % of it with zero
429 answers. Note the first request goes out at t = 0, so a perfect run takes ``(N - 1) / R``
minutes plus one round trip: slightly under the ideal.

``--wrap`` adds two runs of ``1.1 R`` requests, which cross the 60 s window (more than a minute
each), with and without the limiter's headroom: exact ``60 / R`` spacing sits right at the
window's edge, so arrival jitter can draw a 429 there; the default 1 % headroom absorbs it.
Usage::

    .venv/bin/python bench/ratelimit.py [--rate 600 --requests 100 --threads 5] [--wrap]
"""

from __future__ import annotations

import argparse
import datetime as dt
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enrich.errors import ProviderError  # noqa: E402
from enrich.providers.massive import MassiveProvider  # noqa: E402
from enrich.ratelimit import DEFAULT_HEADROOM, RateLimiter  # noqa: E402
from tests.fakes.massive_server import FakeMassive  # noqa: E402

TOLERANCE = 0.05
SYMBOLS = ("AAPL", "MSFT", "SPY")
DAY = dt.date(2025, 5, 30)


@dataclass
class Outcome:
    requests: int
    elapsed: float
    ideal: float
    rejected: int  # 429 answers seen by the server
    errors: int  # calls that raised (any ProviderError)
    max_per_window: int  # most arrivals the server saw within any 60 s

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


def run(rate: float, n: int, threads: int, headroom: float, paced: bool = True) -> Outcome:
    with FakeMassive(rate_limit_per_min=int(rate), rate_limit_retry_after=True,
                     today=dt.date(2025, 6, 2)) as fake:
        limiter = RateLimiter(rate, headroom=headroom) if paced else None
        client = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=threads))
        provider = MassiveProvider(client, fake.api_key, fake.base_url, limiter,
                                   owns_client=True)
        work: queue.Queue[int] = queue.Queue()
        for i in range(n):
            work.put(i)
        errors: list[BaseException] = []
        lock = threading.Lock()

        def worker() -> None:
            while True:
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    provider.bars(SYMBOLS[i % len(SYMBOLS)], "1d", DAY, DAY)
                except ProviderError as exc:
                    with lock:
                        errors.append(exc)

        pool = [threading.Thread(target=worker, name=f"bench-{k}") for k in range(threads)]
        started = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - started
        provider.close()
        seen = fake.requests
        return Outcome(
            requests=len(seen),
            elapsed=elapsed,
            ideal=60.0 * n / rate,
            rejected=sum(1 for s in seen if s.status == 429),
            errors=len(errors),
            max_per_window=max_in_window([s.at for s in seen if s.status != 429]),
        )


def report(label: str, rate: float, n: int, threads: int, headroom: float,
           o: Outcome) -> None:
    print(f"{label}: N={n} requests at R={rate:g}/min, {threads} threads, "
          f"headroom {headroom:.0%}")
    print(f"  elapsed      {o.elapsed:8.3f} s")
    print(f"  ideal N/R    {o.ideal:8.3f} s")
    print(f"  ratio        {o.ratio:8.4f}   (elapsed / ideal; target within ±{TOLERANCE:.0%})")
    print(f"  efficiency   {1 / o.ratio:8.4f}   (ideal / elapsed)")
    print(f"  429 answers  {o.rejected:8d}")
    print(f"  errors       {o.errors:8d}")
    print(f"  max in 60 s  {o.max_per_window:8d}   (server-side arrivals; plan allows {rate:g})")
    print(f"  served       {o.requests:8d}")
    print(f"  => {'PASS' if o.ok else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=600, help="plan limit R, requests/minute")
    ap.add_argument("--requests", type=int, default=100, help="N requests")
    ap.add_argument("--threads", type=int, default=5)
    ap.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM)
    ap.add_argument("--wrap", action="store_true",
                    help="also cross the 60 s window with and without headroom")
    args = ap.parse_args(argv)

    main_run = run(args.rate, args.requests, args.threads, args.headroom)
    report("shared limiter", args.rate, args.requests, args.threads, args.headroom, main_run)
    ok = main_run.ok
    if args.wrap:
        n = int(args.rate * 1.1)
        for headroom in (0.0, DEFAULT_HEADROOM):
            print()
            o = run(args.rate, n, args.threads, headroom)
            report("window crossing", args.rate, n, args.threads, headroom, o)
            if headroom:
                ok = ok and o.ok
    # The unpaced reference: the same calls with no limiter. Its time is the client and
    # server overhead the paced run hides inside its spacing; past R requests it draws 429s.
    print()
    bare = run(args.rate, args.requests, args.threads, 0.0, paced=False)
    print(f"reference, no limiter: {bare.elapsed:.3f} s for the same {args.requests} calls, "
          f"{bare.rejected} answered 429, {bare.max_per_window} arrivals in the busiest 60 s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
