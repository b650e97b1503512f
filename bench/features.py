"""Benchmark ``enrich.quant.features.compute_features`` against TA-Lib on the same bars.

The reference is what a practitioner would run instead: a plain Python loop over the symbols
calling TA-Lib's C functions (``ta-lib`` wheels bundle the C library) on numpy views of each
symbol's columns, one function per indicator. It is handed the rows where each symbol starts,
returns bare numpy arrays and builds no frame, so it does less than ``compute_features``
(which checks and splits its input and returns a polars frame with nulls): the ratios below
are conservative.

Two calls are timed, each alternating with the reference (so that load from other processes
falls on both alike) and reported as medians:

- the whole universe: synthetic daily bars (a seeded random walk per symbol, already in
  (symbol, timeframe, ts) order, so neither side sorts) for ``--symbols`` symbols;
- the engine's call: one symbol's bars as the lake hands them over (read back from Parquet),
  ``--calls`` calls per timed batch; then again in a fresh process with
  ``POLARS_MAX_THREADS=1``, as in the engine's worker processes
  (``enrich/pipeline/worker_boot.py``);
  each also timed with the symbol's dividends (a quarterly payer's 40), which the engine
  passes for ``tr_close`` and TA-Lib has no counterpart for: its extra cost is printed.

Before timing, both results are compared on every row: equal null positions and values to
1e-9 (relative to the bar's close for prices, to max(1, |value|) otherwise) on every column
whose definition TA-Lib shares; the columns that differ by design are named and measured.
Usage::

    PYTHONPATH=. .venv/bin/python bench/features.py [--symbols 1000 5000] [--sessions 2520]
        [--repeat 5] [--calls 100] [--rounds 15]
"""

from __future__ import annotations

import argparse
import gc
import io
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import talib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enrich.quant.features import _log_ratios, compute_features  # noqa: E402
from enrich.schemas import BARS, FEATURE_COLUMNS  # noqa: E402

TOLERANCE = 1e-9
PRICE_VALUED = {"ma20", "ma50", "ma200", "ema12", "ema26", "macd", "macd_signal", "atr14",
                "bb_upper", "bb_lower", "tr_close"}
# Columns whose TA-Lib counterpart is defined differently (see DIFFERENCES); not asserted.
BY_DESIGN = {"atr14"}
GOAL, STRETCH = 1.0, 2.0
SAMPLE_SD = math.sqrt(20 / 19)  # TA-Lib's STDDEV is the population deviation
WEEK_BARS = 260  # weekday sessions in 52 weeks (the synthetic bars have no holidays)


def synthetic_bars(symbols: int, sessions: int, seed: int = 20240101) -> pl.DataFrame:
    """Daily bars for ``symbols`` × ``sessions``, in the BARS schema, symbol-major order."""
    rng = np.random.default_rng(seed)
    days = np.arange("2010-01-04", "2100-01-01", dtype="datetime64[D]")
    days = days[np.is_busday(days)][:sessions]
    if len(days) < sessions:
        raise ValueError(f"at most {len(days)} sessions")

    shape = (symbols, sessions)
    drift = rng.uniform(-0.0002, 0.0006, size=(symbols, 1))
    # Daily volatility 1%-3% (16%-48% a year), a typical equity range.
    vol = rng.uniform(0.01, 0.03, size=(symbols, 1))
    start = rng.uniform(5.0, 500.0, size=(symbols, 1))
    close = start * np.exp(np.cumsum(drift + vol * rng.standard_normal(shape), axis=1))
    gap = np.exp(0.3 * vol * rng.standard_normal(shape))
    open_ = np.concatenate([start, close[:, :-1]], axis=1) * gap
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    high = top * (1 + vol * np.abs(rng.standard_normal(shape)))
    low = bottom * (1 - 0.5 * vol * np.abs(rng.standard_normal(shape)))
    volume = np.round(rng.lognormal(13.0, 0.6, size=shape))
    del top, bottom, gap

    symbol_ids = np.repeat(np.arange(symbols, dtype=np.uint32), sessions)
    names = pl.Series("symbol", [f"S{i:05d}" for i in range(symbols)])
    session = np.tile(days, symbols)
    frame = pl.DataFrame(
        {
            "symbol": names.gather(symbol_ids),
            "timeframe": pl.repeat("1d", symbols * sessions, eager=True),
            "ts": (session.astype("datetime64[us]") + np.timedelta64(14 * 60 + 30, "m")),
            "session": session,
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": volume.ravel(),
        }
    )
    return frame.with_columns(
        pl.col("ts").dt.replace_time_zone("UTC"),
        ((pl.col("high") + pl.col("low") + pl.col("close")) / 3).alias("vwap"),
        (pl.col("volume") / 100).cast(pl.Int64).alias("trades"),
        pl.lit(None, dtype=pl.Date).alias("adjusted_asof"),
    ).select(BARS.columns)


# ---------------------------------------------------------------------------------------------
# The TA-Lib reference.


def symbol_bounds(bars: pl.DataFrame) -> list[int]:
    """The first row of each symbol of symbol-major ``bars``, and the row count at the end."""
    lengths = bars.get_column("symbol").rle().struct.field("len").to_numpy()
    return [0, *np.cumsum(lengths).tolist()]


def talib_features(split: tuple[pl.DataFrame, list[int]]) -> list[dict[str, np.ndarray]]:
    """The features of each symbol of ``bars`` (rows ``bounds[i] .. bounds[i + 1] - 1``), by
    TA-Lib, as numpy arrays. The split is given: finding it is not the reference's work."""
    bars, bounds = split
    high, low, close, volume = (bars.get_column(c).to_numpy() for c in
                                ("high", "low", "close", "volume"))
    return [
        _talib_symbol(high[a:b], low[a:b], close[a:b], volume[a:b])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def talib_frame(split: tuple[pl.DataFrame, list[int]]) -> pl.DataFrame:
    """``talib_features`` framed as ``compute_features`` returns them (the keys and one null-
    able column per feature, in one buffer), as the engine would need them."""
    bars, _ = split
    pieces, n = talib_features(split), bars.height
    flat = np.empty(len(FEATURE_COLUMNS) * n)
    for i, name in enumerate(FEATURE_COLUMNS):
        np.concatenate([piece[name] for piece in pieces], out=flat[i * n : (i + 1) * n])
    values = pl.Series(flat, nan_to_null=True)
    symbol, *keys = (bars.get_column(c) for c in ("symbol", "timeframe", "ts", "session"))
    return symbol.to_frame().hstack(
        [*keys, *(values.slice(i * n, n).alias(c) for i, c in enumerate(FEATURE_COLUMNS))]
    )


def _previous(x: np.ndarray) -> np.ndarray:
    """``x`` one row later: row k holds row k - 1's value (NaN on row 0)."""
    out = np.empty(x.size)
    out[0] = np.nan
    out[1:] = x[:-1]
    return out


def _talib_symbol(high, low, close, volume) -> dict[str, np.ndarray]:
    log_return = np.empty(close.size)
    log_return[0] = np.nan
    np.log(close[1:] / close[:-1], out=log_return[1:])
    ema12, ema26 = talib.EMA(close, 12), talib.EMA(close, 26)
    macd = ema12 - ema26
    upper, _, lower = talib.BBANDS(close, 20, 2.0, 2.0)
    # The 52 weeks before a bar of these weekday sessions hold 260 of them; the window is
    # null until the history covers all 52 weeks (from row 260, TA-Lib's MAX from row 259).
    high_52w, low_52w = talib.MAX(high, WEEK_BARS), talib.MIN(low, WEEK_BARS)
    high_52w[:WEEK_BARS] = low_52w[:WEEK_BARS] = np.nan
    return {
        "log_return": log_return,
        "ma20": talib.SMA(close, 20),
        "ma50": talib.SMA(close, 50),
        "ma200": talib.SMA(close, 200),
        "volatility_20d": talib.STDDEV(log_return, 20) * (SAMPLE_SD * math.sqrt(252)),
        "ema12": ema12,
        "ema26": ema26,
        "macd": macd,
        "macd_signal": talib.EMA(macd, 9),  # TA-Lib skips the leading NaNs: seeded at row 33
        "rsi14": talib.RSI(close, 14),
        "atr14": talib.ATR(high, low, close, 14),
        "bb_upper": upper,
        "bb_lower": lower,
        # Against the 20 bars before: TA-Lib's windows ending on the previous row.
        "volume_z20": (volume - _previous(talib.SMA(volume, 20)))
        / (_previous(talib.STDDEV(volume, 20)) * SAMPLE_SD),
        "high_52w_dist": close / high_52w - 1,
        "low_52w_dist": close / low_52w - 1,
        "tr_close": close.copy(),  # no dividends given: the close
    }


DIFFERENCES = {
    "atr14": "TA-Lib has no true range on a symbol's first bar, so its ATR starts a row later "
             "(row 14, seeded with the TRs of rows 1-14) than ours (row 13, rows 0-13, row 0's "
             "TR being high - low); the seeds' difference then decays by 13/14 a row",
    "rsi14": "on flat windows (average gain = average loss = 0) TA-Lib gives 0, ours 50 "
             "(neutral); these bars have none, so rsi14 is asserted equal here",
    "high_52w_dist": "ours covers the bars of the last 364 days (a time window); on these "
                     "weekday sessions that is TA-Lib's MAX over 260 rows, null before row 260 "
                     "(the history must cover the 52 weeks), and is asserted equal",
    "volume_z20": "ours compares a bar with the 20 before it: TA-Lib's SMA and STDDEV of the "
                  "previous row, asserted equal",
    "macd": "TA-Lib's MACD() seeds its fast EMA at row 14 (to start with the slow one) and nulls "
            "all three outputs before row 33; the reference uses EMA(12) - EMA(26) and EMA(9) of "
            "that instead, which is our definition, and is asserted equal",
}


# ---------------------------------------------------------------------------------------------


def compare(
    ours: pl.DataFrame, pieces: list[dict[str, np.ndarray]], close: np.ndarray
) -> dict[str, str]:
    """Raise AssertionError unless both agree; describe the columns that differ by design.

    Price-valued features must agree to 1e-9 of the bar's close (or of the value, if larger),
    the dimensionless ones to 1e-9 of max(1, |value|), and nulls must be TA-Lib's NaNs.
    """
    notes: dict[str, str] = {}
    for name in FEATURE_COLUMNS:
        a = ours.get_column(name)
        if a.is_nan().any():
            raise AssertionError(f"{name}: NaN in compute_features output")
        a = a.to_numpy()  # nulls become NaN
        b = np.concatenate([p[name] for p in pieces])
        both = ~np.isnan(a) & ~np.isnan(b)
        floor = close[both] if name in PRICE_VALUED else 1.0
        err = np.abs(a[both] - b[both]) / np.maximum(floor, np.abs(b[both]))
        if name in BY_DESIGN:
            notes[name] = _by_design(name, a, b, err, both, pieces)
            continue
        if not (np.isnan(a) == np.isnan(b)).all():
            rows = np.flatnonzero(np.isnan(a) != np.isnan(b))[:5]
            raise AssertionError(f"{name}: null positions differ, e.g. rows {rows.tolist()}")
        worst = float(err.max()) if err.size else 0.0
        if worst > TOLERANCE:
            raise AssertionError(f"{name}: max scaled difference {worst:.3g} > {TOLERANCE}")
    return notes


def _by_design(name, a, b, err, both, pieces) -> str:
    """Where ``name`` first agrees to 1e-9 in every symbol, and how far apart it starts."""
    bad = np.zeros(a.size, dtype=bool)
    bad[both] = err > TOLERANCE
    bad |= np.isnan(a) != np.isnan(b)
    offset, last_bad = 0, -1
    for piece in pieces:
        size = piece[name].size
        rows = np.flatnonzero(bad[offset : offset + size])
        if rows.size:
            last_bad = max(last_bad, int(rows[-1]))
        offset += size
    return (f"differs in each symbol's first rows (largest scaled difference "
            f"{float(err.max()):.2g}); equal to 1e-9 from row {last_bad + 1} on")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def alternate(fns: dict, arg, rounds: int, calls: int = 1) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds per call of each function, run in alternation."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            cpu, wall = _cpu_seconds(), time.perf_counter()
            for _ in range(calls):
                result = fn(arg)
            wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
            runs[name].append((wall / calls, cpu / calls))
            del result
    return {name: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
            for name, r in runs.items()}


def _verdict(ratio: float) -> str:
    return f"{ratio:.2f}× TA-Lib's speed  (goal ≥ {GOAL:.0f}×, stretch {STRETCH:.0f}×)"


def whole_universe(symbols: int, sessions: int, repeat: int) -> float:
    start = time.perf_counter()
    bars = synthetic_bars(symbols, sessions)
    print(f"\nwhole universe: {symbols:,} symbols × {sessions:,} sessions = {bars.height:,} rows "
          f"(built in {time.perf_counter() - start:.1f} s)", flush=True)
    ours = compute_features(bars)
    split = (bars, symbol_bounds(bars))
    notes = compare(ours, talib_features(split), bars.get_column("close").to_numpy())
    print(f"  results agree on all {bars.height:,} rows (1e-9) in every column but "
          f"{', '.join(sorted(BY_DESIGN))}")
    for name, note in notes.items():
        print(f"  {name} (by design): {note}")
    del ours
    return _timed(split, repeat, 1, "s")


def _timed(split, rounds: int, calls: int, unit: str) -> float:
    """Time compute_features, the bare TA-Lib loop and the framed one, in alternation."""
    timings = alternate({"compute_features": lambda s: compute_features(s[0]),
                         "TA-Lib": talib_features, "TA-Lib framed": talib_frame},
                        split, rounds, calls)
    scale, fmt = (1.0, "{:.3f} s") if unit == "s" else (1e6, "{:.0f} µs")
    ours_wall, ours_cpu = timings["compute_features"]
    for name, (wall, cpu) in timings.items():
        print(f"  {name:17s} {fmt.format(wall * scale)} (CPU {fmt.format(cpu * scale)})"
              + ("" if name == "compute_features" else
                 f"   speed ratio {wall / ours_wall:.2f}× (CPU {cpu / ours_cpu:.2f}×)"))
    batches = f"{rounds} alternating runs" if calls == 1 else (
        f"{rounds} alternating batches of {calls} calls, per call")
    print(f"  medians of {batches}; TA-Lib framed also builds the frame compute_features returns")
    ratio = timings["TA-Lib"][0] / ours_wall
    print(f"  => {_verdict(ratio)} (against the bare loop)", flush=True)
    return ratio


def one_symbol_bars(sessions: int) -> pl.DataFrame:
    """One symbol's bars as the engine reads them: a frame read back from Parquet."""
    buffer = io.BytesIO()
    synthetic_bars(1, sessions).write_parquet(buffer)
    buffer.seek(0)
    return pl.read_parquet(buffer)


def per_symbol(sessions: int, calls: int, rounds: int) -> float:
    bars = one_symbol_bars(sessions)
    threads = os.environ.get("POLARS_MAX_THREADS")
    setting = f"POLARS_MAX_THREADS={threads}" if threads else f"{pl.thread_pool_size()} threads"
    print(f"\nper symbol (the engine's call): {bars.height:,} rows, polars {setting}", flush=True)
    first = time.perf_counter()
    ours = compute_features(bars)
    first = time.perf_counter() - first
    split = (bars, [0, bars.height])
    compare(ours, talib_features(split), bars.get_column("close").to_numpy())
    print(f"  first call in this process {first:.2f} s (imports numba, loads the compiled "
          f"kernel from its cache)")
    ratio = _timed(split, rounds, calls, "µs")
    _pieces(bars, rounds, calls)
    _with_dividends(bars, rounds, calls)
    return ratio


def _pieces(bars: pl.DataFrame, rounds: int, calls: int) -> None:
    """What any ``compute_features`` returning this frame pays, piece by piece, timed in
    alternation with the whole call and TA-Lib's loop: the columns handed to the compiled
    kernel as numpy, the kernel alone (``enrich.quant.feature_kernel.fill``), and the polars
    frame built from its output (one nullable Series over the buffer, a named slice per
    feature, the keys beside them). The inputs include the log returns, which the kernel
    takes computed (numpy's vectorised log). The rest of the whole call is its checks and glue."""
    from enrich.quant import feature_kernel

    n = bars.height
    keys = [bars.get_column(c) for c in ("symbol", "timeframe", "ts", "session")]

    def inputs(frame: pl.DataFrame) -> list[np.ndarray]:
        arrays = [frame.get_column("ts").to_numpy().view(np.int64)]
        high, low, close, volume = (frame.get_column(c).to_numpy() for c in
                                    ("high", "low", "close", "volume"))
        log_ratio = _log_ratios(close)  # the log returns, which the kernel takes computed
        arrays += [high, low, close, log_ratio, volume]
        arrays += [np.ones(n, dtype=np.bool_), np.zeros(n), np.full(n, math.sqrt(252))]
        for array in arrays:  # the kernel's one compiled signature: read-only arrays
            array.setflags(write=False)
        return arrays

    prepared = inputs(bars)
    starts = np.array([0, n])
    starts.setflags(write=False)

    def kernel(_) -> np.ndarray:
        values = np.empty((len(FEATURE_COLUMNS), n))
        feature_kernel.fill(*prepared, starts, values)
        return values

    values = kernel(None)

    def frame(_) -> pl.DataFrame:
        flat = pl.Series(values.ravel(), nan_to_null=True)
        return keys[0].to_frame().hstack(
            [*keys[1:], *(flat.slice(i * n, n).alias(c) for i, c in enumerate(FEATURE_COLUMNS))])

    split = (bars, [0, n])
    timings = alternate({"compute_features": compute_features, "TA-Lib": lambda b: talib_features(
        split), "inputs": inputs, "kernel": kernel, "frame": frame}, bars, rounds, calls)
    whole, talib_s = timings["compute_features"][0], timings["TA-Lib"][0]
    least = sum(timings[k][0] for k in ("inputs", "kernel", "frame"))
    print("  where compute_features' time goes (medians of alternating batches, µs a call):")
    for name in ("inputs", "kernel", "frame"):
        print(f"    {name:8s} {timings[name][0] * 1e6:6.0f}")
    print(f"    checks and glue (the rest of the whole call): {(whole - least) * 1e6:.0f} of "
          f"{whole * 1e6:.0f}")
    print(f"  the three pieces alone: {least * 1e6:.0f} µs, {talib_s / least:.2f}× TA-Lib's "
          f"{talib_s * 1e6:.0f} µs in the same batches: the most a frame built this way could "
          "reach", flush=True)


def quarterly_dividends(bars: pl.DataFrame) -> pl.DataFrame:
    """A quarterly payer's cash dividends over one symbol's bars, as the engine passes them
    (``dividends_on_basis``: symbol, ex_date, cash_amount): one every 63 sessions."""
    ex_dates = bars.get_column("session").gather_every(63, offset=20)
    return pl.DataFrame({"symbol": [bars.get_column("symbol")[0]] * ex_dates.len(),
                         "ex_date": ex_dates, "cash_amount": [0.25] * ex_dates.len()})


def _with_dividends(bars: pl.DataFrame, rounds: int, calls: int) -> None:
    """The engine's call passes the symbol's dividends (for tr_close), which TA-Lib has no
    counterpart for: its extra cost, against the same call without them."""
    dividends = quarterly_dividends(bars)
    timings = alternate({"without": compute_features,
                         "with": lambda b: compute_features(b, dividends=dividends)},
                        bars, rounds, calls)
    (wall, cpu), (base, _) = timings["with"], timings["without"]
    print(f"  with the symbol's {dividends.height} dividends, as the engine calls it: "
          f"{wall * 1e6:.0f} µs (CPU {cpu * 1e6:.0f} µs), {(wall - base) * 1e6:+.0f} µs over "
          f"none (medians of {rounds} alternating batches)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--sessions", type=int, default=2520)
    parser.add_argument("--repeat", type=int, default=5, help="whole-universe runs of each")
    parser.add_argument("--calls", type=int, default=100, help="per-symbol calls per batch")
    parser.add_argument("--rounds", type=int, default=15, help="per-symbol batches of each")
    parser.add_argument("--per-symbol-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.per_symbol_only:
        print(f"RATIO {per_symbol(args.sessions, args.calls, args.rounds):.4f}")
        return 0
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"TA-Lib {talib.__version__}, polars {pl.__version__}")
    print("\ncolumns defined differently from TA-Lib's functions:")
    for name, why in DIFFERENCES.items():
        print(f"  {name}: {why}")
    ratios = {"per symbol": per_symbol(args.sessions, args.calls, args.rounds)}
    # The engine's worker processes run with one polars thread (enrich/pipeline/worker_boot.py).
    child = subprocess.run(
        [sys.executable, __file__, "--per-symbol-only", "--sessions", str(args.sessions),
         "--calls", str(args.calls), "--rounds", str(args.rounds)],
        env={**os.environ, "POLARS_MAX_THREADS": "1"}, check=True, capture_output=True,
        text=True,
    )
    *lines, last = child.stdout.strip().splitlines()
    print("\n".join(lines), flush=True)
    ratios["per symbol, POLARS_MAX_THREADS=1"] = float(last.split()[1])
    for symbols in args.symbols:
        ratios[f"whole universe, {symbols:,} symbols"] = whole_universe(
            symbols, args.sessions, args.repeat
        )
    print(f"\nsummary (TA-Lib loop time / compute_features time, medians; load average "
          f"{os.getloadavg()[0]:.1f}):")
    for name, ratio in ratios.items():
        print(f"  {name:36s} {_verdict(ratio)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
