"""Option-chain step per symbol, as the refresh runs it: the sample provider's chain
(``option_chain``), its pricing (``snapshots.price_chain``: rates, parity yields, American
IV and greeks) and the volatility summary (``vol_summary.summarize``).

    python bench/chains.py [--repeats 5] [--day 2025-06-18]

Every optionable demo symbol's chain of ``--day`` (snapshot after the close), each step timed
in CPU ms per chain; the steps alternate chain by chain, ``--repeats`` rounds, medians. One
thread. Before the compiled solver (commit f62721f) ``price_chain`` took ~40-50 ms per chain
of this size on this machine. Before the per-chain glue moved from ~20 small polars queries
to numpy (``enrich.columns``; the commit after 8ae5d48) ``price_chain`` took ~11.6 ms and
``summarize`` ~2.8 ms; after it ~5.0 and ~1.1 ms (this bench, the two alternated, load ~5 on
2 CPUs), of which the compiled solver is ~2.7 ms. Also the kernel's cold compile time (an
empty numba cache, in a subprocess) and its load time from the cache.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "POLARS_MAX_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enrich import calendars  # noqa: E402
from enrich.providers.sample.provider import SampleProvider  # noqa: E402
from enrich.quant import snapshots, vol_summary  # noqa: E402
from enrich.quant.american import load_kernel  # noqa: E402
from enrich.schemas import DIVIDENDS, SPLITS  # noqa: E402
from enrich.symbols import DEMO_UNIVERSE  # noqa: E402

_COMPILE = ("import time; t = time.perf_counter(); from enrich.quant.american import load_kernel; "
            "load_kernel(); print(time.perf_counter() - t)")


def compile_seconds(cache_dir: str) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _COMPILE], env=env, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--day", type=dt.date.fromisoformat, default=dt.date(2025, 6, 18))
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as cache:
        cold = compile_seconds(cache)
        warm = compile_seconds(cache)
    print(f"kernel: cold compile {cold:.1f} s (empty numba cache), load from cache {warm:.2f} s")

    day = args.day
    now = calendars.session_close_utc("XNYS", day) + dt.timedelta(hours=2)
    p = SampleProvider(clock=lambda: now)
    curves = p.treasury_yields(day - dt.timedelta(days=10), day)
    symbols = [s.symbol for s in DEMO_UNIVERSE if not p.option_chain(s.symbol, day).is_empty()]
    load_kernel()
    kw = {"curves": curves, "dividends": DIVIDENDS.empty(), "splits": SPLITS.empty(),
          "fallback_rate": 0.04, "session_open": calendars.session_open_utc("XNYS", day),
          "session_close": calendars.session_close_utc("XNYS", day), "snapshot_at": now}
    times: dict[str, list[float]] = {"chain": [], "price_chain": [], "summarize": []}
    rows = 0
    for _ in range(args.repeats):
        for sym in symbols:
            c0 = time.process_time()
            chain = p.option_chain(sym, day)
            c1 = time.process_time()
            priced = snapshots.price_chain(chain, **kw)
            c2 = time.process_time()
            vol_summary.summarize(priced)
            c3 = time.process_time()
            times["chain"].append(c1 - c0)
            times["price_chain"].append(c2 - c1)
            times["summarize"].append(c3 - c2)
            rows += chain.height
    per = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{len(symbols)} chains of {day} ({rows / len(times['chain']):.0f} contracts on "
          f"average), {args.repeats} rounds; CPU ms per chain, medians; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for step, ms in per.items():
        print(f"  {step:<12} {ms:6.1f} ms")
    print(f"  {'all':<12} {sum(per.values()):6.1f} ms   (price_chain before the compiled "
          "solver: ~40-50 ms; before numpy glue: ~11.6 ms, summarize ~2.8 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
