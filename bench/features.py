"""Benchmark ``enrich.features.compute_features`` against a pandas groupby-rolling reference.

Builds synthetic daily bars in memory (a seeded numpy random walk per symbol, already in
(symbol, timeframe, ts) order, so neither side sorts), times both implementations on the same
bars (alternating, median of ``--repeat`` runs each; wall time and this process's CPU time),
checks that they agree on every row and column (nulls in the same places; values to 1e-9
relative, see ``compare``), and prints the speed-up. Usage::

    .venv/bin/python bench/features.py [--symbols 5000 --sessions 2520 --repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enrich.features import compute_features  # noqa: E402
from enrich.schemas import BARS, FEATURE_COLUMNS  # noqa: E402

TOLERANCE = 1e-9
PRICE_VALUED = {"ma20", "ma50", "ma200", "ema12", "ema26", "macd", "macd_signal", "atr14",
                "bb_upper", "bb_lower"}
TARGET = 10.0


def synthetic_bars(symbols: int, sessions: int, seed: int = 20240101) -> pl.DataFrame:
    """Daily bars for ``symbols`` × ``sessions``, in the BARS schema, symbol-major order."""
    rng = np.random.default_rng(seed)
    days = np.arange("2010-01-04", "2100-01-01", dtype="datetime64[D]")
    days = days[np.is_busday(days)][:sessions]
    if len(days) < sessions:
        raise ValueError(f"at most {len(days)} sessions")

    shape = (symbols, sessions)
    drift = rng.uniform(-0.0002, 0.0006, size=(symbols, 1))
    # Daily volatility 1%-3% (16%-48% a year), a typical equity range. (Much wilder walks, where
    # a price falls by orders of magnitude, push pandas' online rolling variance past 1e-9.)
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
# pandas reference: the same definitions, written the usual pandas way (groupby + rolling/ewm).


def pandas_reference(bars: pd.DataFrame) -> pd.DataFrame:
    keys = ["symbol", "timeframe", "ts"]
    if not _pandas_sorted(bars):
        bars = bars.sort_values(keys, kind="stable")
    df = bars.reset_index(drop=True)
    gid = df.groupby(["symbol", "timeframe"], sort=False).ngroup()
    pos = df.groupby(gid, sort=False).cumcount().to_numpy()

    def by_group(s: pd.Series):
        return s.groupby(gid, sort=False)

    def rolling(s: pd.Series, n: int, how: str, **kw) -> pd.Series:
        return getattr(by_group(s).rolling(n), how)(**kw).droplevel(0)

    def seeded_ema(x: pd.Series, n: int, alpha: float, first_row: int) -> pd.Series:
        seed_row = first_row + n - 1
        seed = rolling(x, n, "mean")
        start = np.where(pos == seed_row, seed, np.where(pos > seed_row, x, np.nan))
        start = pd.Series(start, index=df.index)
        return by_group(start).ewm(alpha=alpha, adjust=False).mean().droplevel(0)

    close, high, low, volume = df["close"], df["high"], df["low"], df["volume"]
    prev = by_group(close).shift(1)
    out = df[["symbol", "timeframe", "ts", "session"]].copy()
    out["_close"] = close  # kept for scaling the comparison, not a feature
    out["log_return"] = np.log(close / prev)
    for n in (20, 50, 200):
        out[f"ma{n}"] = rolling(close, n, "mean")
    out["volatility_20d"] = rolling(out["log_return"], 20, "std", ddof=1) * np.sqrt(252)
    out["ema12"] = seeded_ema(close, 12, 2 / 13, 0)
    out["ema26"] = seeded_ema(close, 26, 2 / 27, 0)
    out["macd"] = out["ema12"] - out["ema26"]
    out["macd_signal"] = seeded_ema(out["macd"], 9, 2 / 10, 25)

    change = close - prev
    avg_gain = seeded_ema(change.clip(lower=0), 14, 1 / 14, 1)
    avg_loss = seeded_ema((-change).clip(lower=0), 14, 1 / 14, 1)
    rsi = 100 - 100 / (1 + avg_gain / avg_loss)
    rsi = rsi.mask(avg_loss == 0, np.where(avg_gain > 0, 100.0, 50.0))
    out["rsi14"] = rsi

    true_range = pd.concat([high - low, (high - prev).abs(), (low - prev).abs()], axis=1).max(
        axis=1
    )
    out["atr14"] = seeded_ema(true_range, 14, 1 / 14, 0)

    std0 = rolling(close, 20, "std", ddof=0)
    out["bb_upper"] = out["ma20"] + 2 * std0
    out["bb_lower"] = out["ma20"] - 2 * std0

    vol_std = rolling(volume, 20, "std", ddof=1)
    z = (volume - rolling(volume, 20, "mean")) / vol_std
    out["volume_z20"] = z.mask(vol_std == 0)
    out["high_52w_dist"] = close / rolling(high, 252, "max") - 1
    out["low_52w_dist"] = close / rolling(low, 252, "min") - 1
    return out


def _pandas_sorted(df: pd.DataFrame) -> bool:
    sym, tf, ts = (df[c].to_numpy() for c in ("symbol", "timeframe", "ts"))
    same_sym = sym[1:] == sym[:-1]
    same_group = same_sym & (tf[1:] == tf[:-1])
    ok = (sym[1:] > sym[:-1]) | (same_sym & (tf[1:] > tf[:-1])) | (same_group & (ts[1:] > ts[:-1]))
    return bool(ok.all())


# ---------------------------------------------------------------------------------------------


def compare(ours: pl.DataFrame, reference: pd.DataFrame) -> None:
    """Raise AssertionError unless both agree on keys, null positions and values.

    Price-valued features must agree to 1e-9 of the bar's close (or of the value, if larger),
    the dimensionless ones to 1e-9 of max(1, |value|).
    """
    keys = ["symbol", "timeframe", "ts", "session"]
    theirs = pl.from_pandas(reference[keys])
    if not ours.select(keys).equals(theirs.cast(ours.select(keys).schema)):
        raise AssertionError("row keys or their order differ")
    close = reference["_close"].to_numpy()
    for name in FEATURE_COLUMNS:
        a = ours[name]
        if a.is_nan().any():
            raise AssertionError(f"{name}: NaN in compute_features output")
        a = a.to_numpy()  # nulls become NaN
        b = reference[name].to_numpy(dtype=np.float64, na_value=np.nan)
        null_a, null_b = np.isnan(a), np.isnan(b)
        if not (null_a == null_b).all():
            rows = np.flatnonzero(null_a != null_b)[:5]
            raise AssertionError(f"{name}: null positions differ, e.g. rows {rows.tolist()}")
        both = ~null_a
        floor = close[both] if name in PRICE_VALUED else 1.0
        err = np.abs(a[both] - b[both]) / np.maximum(floor, np.abs(b[both]))
        worst = float(err.max()) if err.size else 0.0
        if worst > TOLERANCE:
            raise AssertionError(f"{name}: max scaled difference {worst:.3g} > {TOLERANCE}")


def timed(fn, arg) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds (all threads of this process) and the result of ``fn(arg)``."""
    gc.collect()
    cpu, wall = _cpu_seconds(), time.perf_counter()
    result = fn(arg)
    return time.perf_counter() - wall, _cpu_seconds() - cpu, result


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=2520)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    bars = synthetic_bars(args.symbols, args.sessions)
    bars_pd = bars.to_pandas()
    print(
        f"bars: {args.symbols} symbols × {args.sessions} sessions = {bars.height:,} rows "
        f"(built in {time.perf_counter() - start:.1f} s); {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    # Alternate the two so that load from other processes falls on both alike.
    ours_runs, ref_runs = [], []
    ours = reference = None
    for i in range(args.repeat):
        ours = reference = None
        wall, cpu, ours = timed(compute_features, bars)
        ours_runs.append((wall, cpu))
        wall, cpu, reference = timed(pandas_reference, bars_pd)
        ref_runs.append((wall, cpu))
        print(
            f"run {i + 1}: compute_features {ours_runs[-1][0]:.2f} s "
            f"(CPU {ours_runs[-1][1]:.2f} s), pandas reference {ref_runs[-1][0]:.2f} s "
            f"(CPU {ref_runs[-1][1]:.2f} s), load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )

    compare(ours, reference)
    print(f"outputs agree on all {bars.height:,} rows × {len(FEATURE_COLUMNS)} features (1e-9)")
    ours_s = statistics.median(w for w, _ in ours_runs)
    ref_s = statistics.median(w for w, _ in ref_runs)
    ours_cpu = statistics.median(c for _, c in ours_runs)
    ref_cpu = statistics.median(c for _, c in ref_runs)
    print(f"CPU time (median): compute_features {ours_cpu:.2f} s, pandas reference {ref_cpu:.2f} s")
    print(
        f"compute_features: {ours_s:.2f} s, pandas reference: {ref_s:.2f} s, "
        f"speed-up: {ref_s / ours_s:.1f}×  (target ≥ {TARGET:.0f}×)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
