"""Features computed from bars: returns, moving averages, volatility, EMA/MACD, RSI, ATR, bands.

``compute_features(bars)`` is pure (frame in, frame out, no I/O). It takes bars in the
``BARS`` schema for one or many symbols and timeframes and returns the ``FEATURES`` schema:
``symbol, timeframe, ts, session`` followed by ``FEATURE_COLUMNS``, all ``Float64``, exactly
one row per input bar, sorted by ``symbol, timeframe, ts``.

Every feature is computed per ``(symbol, timeframe)`` group, in ``ts`` order. Windows count
*rows* (bars) of the group, not calendar days: for daily bars "20" means 20 sessions, for
hourly bars 20 hours. "Row k" below is the 0-based position of a bar inside its group. A
window of n rows ending at row k covers rows k-n+1 .. k (the current bar included). A feature
is null when the group has too few rows for it; "null before row k" means rows 0 .. k-1 are
null and every later row has a value.

Notation: ``c``, ``h``, ``l``, ``v`` are close, high, low, volume; ``c[-1]`` is the previous
close in the group. ``std0`` is the population standard deviation (ddof=0), ``std1`` the
sample standard deviation (ddof=1). ``EMA(x, alpha, seed at row s)`` is the recursion
``e[s] = seed``, ``e[k] = alpha * x[k] + (1 - alpha) * e[k-1]`` for k > s, null before s.

log_return
    ``ln(c / c[-1])``. Null on row 0.
ma20, ma50, ma200
    Simple mean of the last 20 / 50 / 200 closes. Null before row 19 / 49 / 199.
volatility_20d
    ``std1`` of the last 20 log returns, annualised by ``* sqrt(252)`` (252 bars per year:
    meaningful as an annual figure for daily bars). Null before row 20 (the first log return
    is on row 1, so 20 of them exist from row 20).
ema12, ema26
    ``EMA(c, alpha = 2/(n+1), seed at row n-1)`` with n = 12 / 26, seeded with the simple mean
    of the first n closes. Null before row 11 / 25.
macd
    ``ema12 - ema26``. Null before row 25.
macd_signal
    ``EMA(macd, alpha = 2/10, seed at row 33)``, seeded with the simple mean of the first 9
    macd values (rows 25 .. 33). Null before row 33.
rsi14
    Wilder's RSI. Changes ``d = c - c[-1]`` (from row 1); ``gain = max(d, 0)``,
    ``loss = max(-d, 0)``. ``avg_gain = EMA(gain, alpha = 1/14, seed at row 14)`` seeded with
    the simple mean of the first 14 gains (rows 1 .. 14), i.e. Wilder's smoothing
    ``avg[k] = (13 * avg[k-1] + gain[k]) / 14``; ``avg_loss`` likewise. Then
    ``rsi14 = 100 - 100 / (1 + avg_gain / avg_loss)``, computed as the equal
    ``100 * avg_gain / (avg_gain + avg_loss)``: 100 when ``avg_loss == 0 < avg_gain``, and 50
    when both are 0 (a flat price is neutral). Null before row 14.
atr14
    Wilder's average true range. ``TR = max(h - l, |h - c[-1]|, |l - c[-1]|)`` and, on row 0
    (no previous close), ``TR = h - l``. ``atr14 = EMA(TR, alpha = 1/14, seed at row 13)``
    seeded with the simple mean of the first 14 TRs (rows 0 .. 13), i.e.
    ``atr[k] = (13 * atr[k-1] + TR[k]) / 14``. Null before row 13.
bb_upper, bb_lower
    Bollinger bands ``ma20 +/- 2 * std0(last 20 closes)``: the population deviation (ddof=0),
    Bollinger's own convention. Null before row 19.
volume_z20
    ``(v - mean(last 20 v)) / std1(last 20 v)``, the current bar included in both. Null before
    row 19, when any volume in the window is null, and when the 20 volumes are all equal
    (std == 0; detected exactly, so rounding in the rolling std can never yield a huge z).
high_52w_dist, low_52w_dist
    ``c / max(last 252 highs) - 1`` and ``c / min(last 252 lows) - 1`` (252 bars: 52 weeks of
    daily sessions). Null before row 251.

Prices (close, high, low) must be non-null and ``(symbol, timeframe, ts)`` unique; otherwise
``ValidationError`` is raised. Volume may be null (only volume_z20 uses it). Arithmetic is
IEEE double: a zero price gives an infinite log return or distance, as the formulas say.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import polars as pl

from enrich.errors import ValidationError
from enrich.schemas import FEATURES

__all__ = ["compute_features"]

_ORDER: list[str] = ["symbol", "timeframe", "ts"]
_KEYS: tuple[str, ...] = (*_ORDER, "session")
_NEEDED: tuple[str, ...] = (*_KEYS, "high", "low", "close", "volume")
_NON_NULL: tuple[str, ...] = (*_ORDER, "high", "low", "close")

_GID = "_group"  # helper columns start with "_" and are dropped by the final select
_ROW = "_row"

TRADING_DAYS_PER_YEAR = 252

# The steps run as one lazy query (one collect, not one per step) with only the optimisation
# an eager ``select`` makes, expression simplification, and on the in-memory engine: the same
# kernels on whole columns, so the same numbers as eager steps. (The default engine may split
# columns into morsels, which changed the last bits of rolling means.)
_OPTIMIZATIONS = pl.QueryOptFlags.none(simplify_expression=True)


def compute_features(bars: pl.DataFrame) -> pl.DataFrame:
    """Return the FEATURES frame for ``bars`` (see the module docstring for every column)."""
    missing = [c for c in _NEEDED if c not in bars.columns]
    if missing:
        raise ValidationError(f"features: bars lack columns {missing}", causes=missing)
    frame = bars.select(
        pl.col("symbol").cast(pl.String),
        pl.col("timeframe").cast(pl.String),
        pl.col("ts").cast(FEATURES.schema["ts"]),
        pl.col("session").cast(pl.Date),
        *(pl.col(c).cast(pl.Float64) for c in ("high", "low", "close", "volume")),
    )
    _check(frame)
    if frame.height == 0:
        return FEATURES.empty()
    grouped = not _one_group(frame)
    frame = _sorted_with_group_id(frame) if grouped else _sorted_one_group(frame)

    query = frame.lazy()
    for step in _steps(grouped):
        query = query.select(step)
    return query.collect(engine="in-memory", optimizations=_OPTIMIZATIONS)


@functools.cache
def _steps(grouped: bool) -> tuple[tuple[pl.Expr, ...], ...]:
    """The selects that add the features and their helpers, the last one FEATURES' columns.

    polars evaluates the expressions of one select in parallel, so the steps are as few and as
    wide as the dependencies allow. With several (symbol, timeframe) groups, ``per_group``
    runs an operation per group (``.over``); with one group (the engine's per-symbol call) it
    runs on the whole column: the same numbers without the window machinery. Built once per
    case, since building the expressions costs about as much as running them on one symbol.
    """
    close, high, low, volume = pl.col("close"), pl.col("high"), pl.col("low"), pl.col("volume")
    prev_close, row = pl.col("_prev_close"), pl.col(_ROW)
    change = close - prev_close
    changes = pl.col("_volume_changes")
    ema12, ema26 = pl.col("ema12"), pl.col("ema26")
    ma20, std0 = pl.col("ma20"), pl.col("_close_std0")

    def per_group(expr: pl.Expr) -> pl.Expr:
        return expr.over(_GID) if grouped else expr

    def seed_input(x: pl.Expr, n: int, *, first_row: int) -> pl.Expr:
        return _seed_input(x, n, first_row=first_row, per_group=per_group)

    def ema(seeded: pl.Expr, *, alpha: float) -> pl.Expr:
        return per_group(seeded.ewm_mean(alpha=alpha, adjust=False))

    steps: list[tuple[dict[str, pl.Expr], list[str]]] = [
        ({_ROW: per_group(pl.int_range(pl.len())), "_prev_close": per_group(close.shift(1))}, []),
        (
            {
                "log_return": (close / prev_close).log(),
                "_gain": change.clip(lower_bound=0.0),
                "_loss": (-change).clip(lower_bound=0.0),
                # max(h - l, |h - c[-1]|, |l - c[-1]|) == max(h, c[-1]) - min(l, c[-1]), with
                # the same rounding; the horizontal max/min skip row 0's null c[-1], leaving
                # h - l.
                "_true_range": (
                    pl.max_horizontal(high, prev_close) - pl.min_horizontal(low, prev_close)
                ),
                # Running count of volume changes: the 20 volumes ending at row k are all equal
                # exactly when the count has not moved since row k - 19 (an exact std == 0
                # test).
                "_volume_changes": (volume != volume.shift(1)).fill_null(True).cum_sum(),
            },
            ["_prev_close"],
        ),
        (
            {
                "_ema12_in": seed_input(close, 12, first_row=0),
                "_ema26_in": seed_input(close, 26, first_row=0),
                "_gain_in": seed_input(pl.col("_gain"), 14, first_row=1),
                "_loss_in": seed_input(pl.col("_loss"), 14, first_row=1),
                "_true_range_in": seed_input(pl.col("_true_range"), 14, first_row=0),
            },
            ["_gain", "_loss", "_true_range"],
        ),
        (
            {
                "ema12": ema(pl.col("_ema12_in"), alpha=2 / 13),
                "ema26": ema(pl.col("_ema26_in"), alpha=2 / 27),
                "_avg_gain": ema(pl.col("_gain_in"), alpha=1 / 14),
                "_avg_loss": ema(pl.col("_loss_in"), alpha=1 / 14),
                "atr14": ema(pl.col("_true_range_in"), alpha=1 / 14),
                "ma20": per_group(close.rolling_mean(20)),
                "ma50": per_group(close.rolling_mean(50)),
                "ma200": per_group(close.rolling_mean(200)),
                "_close_std0": per_group(close.rolling_std(20, ddof=0)),
                # Row 0's null log return never falls in a window that is kept (rows >= 20);
                # filling it lets the rolling kernel take its faster no-null path.
                "_return_std1": per_group(pl.col("log_return").fill_null(0.0).rolling_std(20)),
                "_volume_mean": per_group(volume.rolling_mean(20)),
                "_volume_std1": per_group(volume.rolling_std(20, ddof=1)),
                # Only read where row >= 19, so the shifted count is from the same group.
                "_volume_flat": changes == changes.shift(19),
                # A maximum is exact whatever else the window held, so these two run over the
                # whole column (cheaper than per group); rows before 251 are masked below.
                "_high_252": high.rolling_max(252),
                "_low_252": low.rolling_min(252),
            },
            ["_ema12_in", "_ema26_in", "_gain_in", "_loss_in", "_true_range_in"]
            + ["_volume_changes", "high", "low"],
        ),
        (
            {
                "macd": ema12 - ema26,
                "_macd_in": seed_input(ema12 - ema26, 9, first_row=25),
                "rsi14": _rsi(pl.col("_avg_gain"), pl.col("_avg_loss")),
                "bb_upper": ma20 + 2 * std0,
                "bb_lower": ma20 - 2 * std0,
                "volatility_20d": pl.when(row >= 20).then(
                    pl.col("_return_std1") * math.sqrt(TRADING_DAYS_PER_YEAR)
                ),
            },
            ["_avg_gain", "_avg_loss", "_close_std0", "_return_std1"],
        ),
    ]
    last = {
        "macd_signal": ema(pl.col("_macd_in"), alpha=2 / 10),
        "volume_z20": pl.when(~pl.col("_volume_flat")).then(
            (volume - pl.col("_volume_mean")) / pl.col("_volume_std1")
        ),
        "high_52w_dist": pl.when(row >= 251).then(close / pl.col("_high_252") - 1),
        "low_52w_dist": pl.when(row >= 251).then(close / pl.col("_low_252") - 1),
    }
    outputs = tuple(
        last[name].alias(name) if name in last else pl.col(name) for name in FEATURES.columns
    )
    return (*(_step(new, drop) for new, drop in steps), outputs)


def _step(new: dict[str, pl.Expr], drop: list[str]) -> tuple[pl.Expr, ...]:
    """Keep every column but ``drop`` (helpers nothing later reads; ``new`` may) and add ``new``."""
    kept = pl.all().exclude(drop) if drop else pl.all()
    return (kept, *(expr.alias(name) for name, expr in new.items()))


def _seed_input(
    x: pl.Expr, n: int, *, first_row: int, per_group: Callable[[pl.Expr], pl.Expr]
) -> pl.Expr:
    """The input whose plain EMA is the EMA of ``x`` seeded with the mean of its first n values.

    ``x`` has values from row ``first_row`` of each group. The result is null before the seed
    row ``s = first_row + n - 1``, the seed on row ``s`` and ``x`` after it, so that
    ``ewm_mean(adjust=False)``, which starts from the first non-null value, gives exactly
    ``e[s] = seed, e[k] = alpha * x[k] + (1 - alpha) * e[k-1]``.
    """
    row = pl.col(_ROW)
    seed_row = first_row + n - 1
    seed = per_group(x.slice(first_row, n).mean())
    return pl.when(row == seed_row).then(seed).when(row > seed_row).then(x)


def _rsi(avg_gain: pl.Expr, avg_loss: pl.Expr) -> pl.Expr:
    # 100 - 100 / (1 + g / l) == 100 * g / (g + l): also 100 when l == 0 < g, no special case.
    moves = avg_gain + avg_loss
    return pl.when(moves == 0).then(50.0).otherwise(100 * avg_gain / moves)


def _check(frame: pl.DataFrame) -> None:
    nulls = {c: n for c in _NON_NULL if (n := frame[c].null_count())}
    if nulls:
        causes = [f"{n} null {c}" for c, n in nulls.items()]
        raise ValidationError(
            f"features: bars have null values ({', '.join(causes)})",
            rejected=max(nulls.values()),
            causes=causes,
        )


def _one_group(frame: pl.DataFrame) -> bool:
    """Whether all rows share one (symbol, timeframe): the engine's call, one symbol's bars."""
    for name in ("symbol", "timeframe"):
        keys = frame[name]
        # Several groups nearly always differ at the two ends, which needs no scan.
        if keys[0] != keys[-1] or not (keys == keys[0]).all():
            return False
    return True


def _sorted_one_group(frame: pl.DataFrame) -> pl.DataFrame:
    """A one-group ``frame`` in ``ts`` order; raises ``ValidationError`` if a ``ts`` repeats."""
    if not frame["ts"].is_sorted():
        frame = frame.sort("ts")
    _refuse_repeats(frame.height - frame["ts"].n_unique())
    return frame


def _sorted_with_group_id(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` in (symbol, timeframe, ts) order, with an integer id per (symbol, timeframe).

    Windows over a sorted integer key are several times faster than over the two string
    columns. Input that is already in order (the usual case: one lake file per symbol) is not
    re-sorted. Raises ``ValidationError`` if a (symbol, timeframe, ts) key repeats.
    """
    group_id = pl.struct("symbol", "timeframe").rle_id().alias(_GID)
    frame = frame.with_columns(group_id)
    if not _is_sorted(frame):
        frame = frame.sort(_ORDER).with_columns(group_id)
        _check_unique(frame)
    return frame.with_columns(pl.col(_GID).set_sorted())


def _is_sorted(frame: pl.DataFrame) -> bool:
    """Whether rows are in strict (symbol, timeframe, ts) order, given run ids in ``_GID``."""
    gid, ts = pl.col(_GID), pl.col("ts")
    run_start = (gid != gid.shift(1)).fill_null(True)
    if not frame.select((run_start | (ts > ts.shift(1))).all()).item():
        return False
    # Within runs ts increases; the runs themselves must be distinct keys in ascending order.
    firsts = frame.filter(run_start).select("symbol", "timeframe")
    sym, tf = pl.col("symbol"), pl.col("timeframe")
    ascending = (sym > sym.shift(1)) | ((sym == sym.shift(1)) & (tf > tf.shift(1)))
    return bool(firsts.select(ascending.fill_null(True).all()).item())


def _check_unique(frame: pl.DataFrame) -> None:
    """Raise if a sorted frame repeats a (symbol, timeframe, ts) key."""
    gid, ts = pl.col(_GID), pl.col("ts")
    _refuse_repeats(frame.select(((gid == gid.shift(1)) & (ts == ts.shift(1))).sum()).item())


def _refuse_repeats(count: int) -> None:
    if count:
        raise ValidationError(
            f"features: {count} bars repeat a (symbol, timeframe, ts) key",
            rejected=count,
            causes=[f"{count} duplicate keys"],
        )
