"""Benchmark: what a daily refresh costs in requests, and in CPU, by each path.

Part 1, requests (what a user pays for). Against the loopback Massive fake with a market of
``max(sizes) + 23`` tickers and 100-row pages, a universe of N symbols is enriched on Friday
(a month of history), then refreshed after Monday's close twice from the same Friday store:
universe-wide (the engine's plan: grouped daily, market-wide windows) and per symbol (the
reference: every symbol its own requests, as before). Prints, per N, the requests each refresh
made (option chains apart, then with them) and the time they take at 5 requests/min (the
free plan), with the ratio.

Part 2, CPU. A universe-wide refresh of N sample symbols (default 5,000) after Monday's close,
against the per-symbol path on a copy of the same Friday store, in the same run, alternating;
prints wall time, the machine's busy CPU time (all cores, /proc/stat: run it on a quiet
machine), of which the run's own process (planning, universe-wide requests, the catalog rows
its workers hand back), and symbols/s, medians.

Part 3, where a symbol's time goes. The same universe-wide Monday refresh of N sample symbols
(default 300) in one thread of a process with one polars thread and what a worker of Part 2
loads before its first symbol (``enrich.pipeline.worker_boot``), each step the engine takes
timed around its call in CPU time of that process (its polars threads included; the run's
flushes of catalog rows, ~3 %, fall into whichever step they overlap): ms per symbol and calls
per symbol, steps inside other steps marked as such; then the share of the Parquet files alone
(every write, and every decode of a file the lake's cache does not hold). The steps' sum is
what Part 2's workers spend per symbol; Part 2 adds the run's own process (universe-wide
requests, catalog rows).

Part 4, the steady state. Parts 2 and 3 hold one option chain a symbol (the Friday seed's);
after a year of daily refreshes a symbol holds ~250, in a dozen month files. The same Monday
refresh of N sample symbols (default 300, one thread as Part 3) from that seed and from a copy
holding a year of daily chains (the Friday chain re-dated to every session before it, footers
as the lake writes them), alternating: CPU ms per symbol, medians.

    PYTHONPATH=. .venv/bin/python bench/refresh.py [--sizes 50,500,5000] [--cpu 5000]
                                                   [--repeat 3] [--steps 300] [--held 300]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enrich.checks import quality_run, restatements  # noqa: E402
from enrich.config import load_settings  # noqa: E402
from enrich.pipeline import engine as engine_module  # noqa: E402
from enrich.pipeline.engine import Engine  # noqa: E402
from enrich.pipeline.run_model import RunParams  # noqa: E402
from enrich.providers.massive.provider import MassiveProvider  # noqa: E402
from enrich.providers.retry import RetryPolicy  # noqa: E402
from enrich.providers.sample.provider import SampleProvider  # noqa: E402
from enrich.quant import snapshots, vol_summary  # noqa: E402
from enrich.store import lake as lake_module  # noqa: E402
from enrich.store.store import Store  # noqa: E402
from enrich.store.universe import add_symbols  # noqa: E402
from tests.fakes.massive_server import FakeMassive, market_tickers  # noqa: E402

FRIDAY = dt.datetime(2026, 11, 20, 23, 0, tzinfo=dt.UTC)
MONDAY = dt.datetime(2026, 11, 23, 23, 0, tzinfo=dt.UTC)
FREE_PLAN_PER_MIN = 5.0


def _store(root: Path, name: str, symbols, years: int = 1) -> tuple[Store, object]:
    settings = load_settings({"ENRICH_DATA_DIR": str(root / name),
                              "ENRICH_HISTORY_YEARS": str(years),
                              "ENRICH_MAX_CONCURRENT_SYMBOLS": "8"}, dotenv_path=None)
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [(s, "stocks", None) for s in symbols])
    return store, settings


def _massive(fake: FakeMassive, today: dt.date) -> MassiveProvider:
    return MassiveProvider(httpx.Client(timeout=60), fake.api_key, fake.base_url, None,
                           today=lambda: today, owns_client=True,
                           retry=RetryPolicy(max_retries=3, sleep=lambda s: None))


def _hours(requests: int) -> str:
    minutes = requests / FREE_PLAN_PER_MIN
    return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def requests_by_path(root: Path, sizes: list[int]) -> None:
    market = market_tickers(max(sizes) + 23)
    print(f"Part 1: requests of a Monday refresh, loopback fake market of {len(market)} "
          "tickers, 100-row pages")
    print(f"{'symbols':>8}  {'path':<14} {'requests':>9} {'+ chains':>9}  "
          f"{'at 5/min':>10}  {'ratio':>6}")
    for n in sizes:
        universe = market[:n]
        store, settings = _store(root, f"fake-{n}", universe)
        with FakeMassive(symbols=market, today=MONDAY.date(), page_size=100,
                         news_every=20) as fake:
            t0 = time.perf_counter()
            with _massive(fake, FRIDAY.date()) as p:
                Engine(store, p, settings, clock=lambda: FRIDAY).run(
                    RunParams(lookback_days=30))
            seed_s = time.perf_counter() - t0
            copy = root / f"fake-{n}-each"
            shutil.copytree(root / f"fake-{n}", copy)
            counts = {}
            for label, path, data in (("universe-wide", True, root / f"fake-{n}"),
                                      ("per symbol", False, copy)):
                s2 = settings.with_(data_dir=data)
                before = len(fake.requests)
                with _massive(fake, MONDAY.date()) as p:
                    summary = Engine(Store.from_settings(s2), p, s2,
                                     clock=lambda: MONDAY).run(RunParams(universe_wide=path))
                assert summary.failed == 0, summary.errors_by_class
                seen = fake.requests[before:]
                chains = sum(1 for r in seen if r.path.startswith("/v3/snapshot/options/"))
                counts[label] = (len(seen) - chains, len(seen))
            wide, each = counts["universe-wide"], counts["per symbol"]
            for label, (bare, total) in counts.items():
                ratio = f"{each[1] / total:5.1f}x" if label == "universe-wide" else ""
                print(f"{n:>8}  {label:<14} {bare:>9} {total:>9}  {_hours(total):>10}  "
                      f"{ratio:>6}")
            print(f"{'':>8}  (Friday seed: {seed_s:.0f} s; without option chains the "
                  f"universe-wide refresh is {bare_ratio(wide, each):.0f}x cheaper)")


def bare_ratio(wide: tuple[int, int], each: tuple[int, int]) -> float:
    return each[0] / max(wide[0], 1)


def _cpu() -> float:
    """CPU seconds the whole machine spent busy (every core; /proc/stat): a run's worker
    processes are forked by the forkserver, not by this process, so its own rusage misses
    them. Measure on a quiet machine."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_by_path(root: Path, n: int, repeat: int) -> None:
    symbols = [f"S{i:04d}" for i in range(n)]
    print(f"\nPart 2: CPU of a Monday refresh of {n} sample symbols (1 year held), "
          f"median of {repeat}, alternating")
    seed, settings = _store(root, "seed", symbols)
    t0 = time.perf_counter()
    Engine(seed, SampleProvider(clock=lambda: FRIDAY), settings,
           clock=lambda: FRIDAY).run()
    print(f"  Friday seed: {time.perf_counter() - t0:.0f} s")
    results: dict[str, list[tuple[float, float, int, float]]] = {"universe-wide": [],
                                                           "per symbol": []}
    for i in range(repeat):
        for label, path in (("universe-wide", True), ("per symbol", False)):
            data = root / f"cpu-{label[:4]}-{i}"
            shutil.copytree(root / "seed", data)
            s2 = settings.with_(data_dir=data)
            eng = Engine(Store.from_settings(s2), SampleProvider(clock=lambda: MONDAY), s2,
                         clock=lambda: MONDAY)
            c0, w0, own0 = _cpu(), time.perf_counter(), time.process_time()
            summary = eng.run(RunParams(universe_wide=path))
            wall, cpu = time.perf_counter() - w0, _cpu() - c0
            own = time.process_time() - own0
            assert summary.failed == 0 and summary.ok == n, summary.errors_by_class
            results[label].append((wall, cpu, summary.requests, own))
    for label, rows in results.items():
        wall = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        own = statistics.median(r[3] for r in rows)
        print(f"  {label:<14} wall {wall:6.1f} s  cpu {cpu:6.1f} s (the run's own process "
              f"{own:.1f} s)  {n / wall:6.1f} symbols/s  requests {rows[0][2]}  "
              f"(walls {', '.join(f'{r[0]:.1f}' for r in rows)})")
    w_wide = statistics.median(r[0] for r in results["universe-wide"])
    w_each = statistics.median(r[0] for r in results["per symbol"])
    print(f"  universe-wide wall / per-symbol wall: {w_wide / w_each:.2f} "
          f"(goal: universe-wide under 60 s)")


# Part 3's steps: (label, the object whose attribute is timed, the attribute, inside which step).
STEPS: list[tuple[str, object, str, str]] = [
    ("a symbol's whole enrichment", Engine, "enrich_symbol", ""),
    ("option chain: the provider's chain", SampleProvider, "option_chain", "option snapshot"),
    ("option snapshot (chain, reads, pricing)", Engine, "_option_snapshot", ""),
    ("option chain: pricing (IV, greeks)", snapshots, "price_chain", "option snapshot"),
    ("volatility summary (read, summarize, write)", Engine, "_summarize_options", ""),
    ("volatility summary: summarize", vol_summary, "summarize", "volatility summary"),
    ("lake upserts (every dataset)", lake_module.Lake, "upsert", "one in the summary"),
    ("features file (replace)", lake_module.Lake, "replace_symbol", "features step"),
    ("parquet write + fsync (every file)", lake_module, "write_parquet_atomic",
     "upserts, replace"),
    # The lake decodes (``decode_file``) only a file its cache does not hold.
    ("parquet decode (a file not in the cache)", lake_module, "decode_file",
     "upserts, reads"),
    ("features step (rebase, compute, write)", Engine, "derive_step", ""),
    ("features: compute_features", engine_module, "compute_features", "features step"),
    ("validation of fetched rows", engine_module, "check", ""),
    ("restatement detection", restatements, "detect", ""),
    ("quality checks", quality_run, "after_fetch", ""),
    ("lake reads (every dataset)", lake_module.Lake, "read", "several"),
]


def steps_of_a_symbol(root: Path, n: int) -> None:
    import enrich.pipeline.worker_boot  # noqa: F401  - warm as a worker is (scipy, kernels)

    symbols = [f"S{i:04d}" for i in range(n)]
    print(f"\nPart 3: where a symbol's time goes: a Monday refresh of {n} sample symbols "
          "(1 year held), universe-wide, one thread")
    seed, settings = _store(root, "steps", symbols)
    Engine(seed, SampleProvider(clock=lambda: FRIDAY), settings, clock=lambda: FRIDAY).run()
    spent: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def timed(label: str, fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.process_time() - t0
                calls[label] += 1
        return call

    engine = Engine(seed, SampleProvider(clock=lambda: MONDAY), settings, clock=lambda: MONDAY)
    engine.process_min_symbols = n + 1  # threads: every step in this process
    with contextlib.ExitStack() as stack:
        for label, owner, name, _ in STEPS:
            original = getattr(owner, name)
            stack.callback(setattr, owner, name, original)
            setattr(owner, name, timed(label, original))
        w0, c0 = time.perf_counter(), time.process_time()
        summary = engine.run(RunParams(universe_wide=True), max_workers=1)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    assert summary.failed == 0 and summary.ok == n, summary.errors_by_class
    print(f"  run: {wall:.1f} s wall, {cpu:.1f} s CPU, {cpu / n * 1000:.1f} ms CPU a symbol "
          f"(the run's own steps included)")
    print(f"  {'step (CPU)':<46} {'ms/symbol':>9} {'calls':>6}  inside")
    for label, _, _, inside in STEPS:
        print(f"  {label:<46} {spent[label] / n * 1000:9.2f} {calls[label] / n:6.2f}  {inside}")
    files = spent["parquet write + fsync (every file)"] + spent[
        "parquet decode (a file not in the cache)"]
    print(f"  Parquet files alone (writes and decodes): {files / n * 1000:.1f} ms a symbol, "
          f"{files / spent[STEPS[0][0]]:.0%} of its enrichment (one file per symbol x dataset: "
          "a daily refresh decodes and re-encodes each file it adds a row to)")


def hold_a_year_of_chains(data: Path) -> int:
    """Give every symbol of the lake at ``data`` a daily chain for each XNYS session of the
    year before its Friday chain (that chain re-dated, its expirations moved alike), written
    as the lake writes month files. Returns the sessions added."""
    from enrich import calendars

    lake = lake_module.Lake(data / "lake")
    friday = FRIDAY.date()
    days = [d for d in calendars.sessions("XNYS", friday - dt.timedelta(days=361), friday)
            if d < friday]
    for symbol in lake.symbols("options_iv"):
        base = lake.read("options_iv", [symbol]).filter(pl.col("as_of") == friday)
        moved = [base.with_columns(as_of=pl.lit(d), **{
            c: pl.col(c) + (d - friday) for c in ("expiration", "snapshot_at", "quote_at",
                                                  "trade_at")}) for d in days]
        lake.upsert("options_iv", pl.concat(moved))
    return len(days)


def steady_state(root: Path, n: int, repeat: int) -> None:
    symbols = [f"S{i:04d}" for i in range(n)]
    print(f"\nPart 4: the steady state: a Monday refresh of {n} sample symbols (1 year of bars "
          "held), universe-wide, one thread, by the option chains held")
    seed, settings = _store(root, "held-1", symbols)
    Engine(seed, SampleProvider(clock=lambda: FRIDAY), settings, clock=lambda: FRIDAY).run()
    shutil.copytree(root / "held-1", root / "held-year")
    added = hold_a_year_of_chains(root / "held-year")
    cpu: dict[str, list[float]] = {"held-1": [], "held-year": []}
    for i in range(repeat):
        for label in cpu:
            data = root / f"{label}-{i}"
            shutil.copytree(root / label, data)
            s2 = settings.with_(data_dir=data)
            engine = Engine(Store.from_settings(s2), SampleProvider(clock=lambda: MONDAY), s2,
                            clock=lambda: MONDAY)
            engine.process_min_symbols = n + 1
            c0 = time.process_time()
            summary = engine.run(RunParams(universe_wide=True), max_workers=1)
            cpu[label].append((time.process_time() - c0) / n * 1000)
            assert summary.failed == 0 and summary.ok == n, summary.errors_by_class
            shutil.rmtree(data)
    one, year = (statistics.median(cpu[k]) for k in ("held-1", "held-year"))
    print(f"  one chain held:           {one:6.1f} ms CPU a symbol")
    print(f"  a year of chains held:    {year:6.1f} ms CPU a symbol ({added + 1} sessions; "
          f"{year / one:.2f}x the first)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="50,500,5000")
    ap.add_argument("--cpu", type=int, default=5000, help="sample symbols for part 2 (0: skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300,
                    help="sample symbols for part 3 (0: skip)")
    ap.add_argument("--held", type=int, default=300,
                    help="sample symbols for part 4 (0: skip)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        if sizes:
            requests_by_path(root, sizes)
        if args.cpu:
            cpu_by_path(root, args.cpu, args.repeat)
        if os.environ.get("POLARS_MAX_THREADS") == "1":
            if args.steps:
                steps_of_a_symbol(root, args.steps)
            if args.held:
                steady_state(root, args.held, args.repeat)
        elif args.steps or args.held:  # polars takes its thread count when imported: a
            sys.stdout.flush()  # process of its own
            subprocess.run([sys.executable, __file__, "--sizes", "", "--cpu", "0",
                            "--steps", str(args.steps), "--held", str(args.held),
                            "--repeat", str(args.repeat)], check=True,
                           env={**os.environ, "POLARS_MAX_THREADS": "1"})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
