"""Features computed from bars: returns, moving averages, volatility, EMA/MACD, RSI, ATR, bands,
and a total-return close.

``compute_features(bars, asset_class=None, dividends=None)`` is pure (frames in, frame out,
no I/O). It takes bars in the ``BARS`` schema for one or many symbols and timeframes and
returns the ``FEATURES`` schema: ``symbol, timeframe, ts, session`` followed by
``FEATURE_COLUMNS``, all ``Float64``, exactly one row per input bar, sorted by
``symbol, timeframe, ts``. ``asset_class`` (one class, or a class per symbol; default: what
each symbol's form says, ``X:`` crypto, ``C:`` fx, ``I:`` indices, else stocks) chooses the
conventions of ``enrich.conventions``: bars a year for annualising. ``dividends`` (symbol,
ex_date, cash_amount on the bars' share basis: ``dividends_on_basis``) feed ``tr_close``.

Every feature is computed per ``(symbol, timeframe)`` group, in ``ts`` order. Windows count
*rows* (bars) of the group: for daily bars "20" means 20 sessions, for hourly bars 20 bars;
only the 52-week window is in calendar time. "Row k" below is the 0-based position of a bar
inside its group. A window of n rows ending at row k covers rows k-n+1 .. k (the current bar
included). A feature is null when the group has too few rows for it; "null before row k"
means rows 0 .. k-1 are null and every later row has a value.

Series: every feature but ``tr_close`` is computed from the split-adjusted prices as stored
(price only: a dividend is a drop in the close like any other move); ``tr_close`` is the
split-adjusted close with cash dividends reinvested, for total returns.

Notation: ``c``, ``h``, ``l``, ``v`` are close, high, low, volume; ``c[-1]`` is the previous
close in the group. ``std0`` is the population standard deviation (ddof=0), ``std1`` the
sample standard deviation (ddof=1). ``EMA(x, alpha, seed at row s)`` is the recursion
``e[s] = seed``, ``e[k] = alpha * x[k] + (1 - alpha) * e[k-1]`` for k > s, null before s.

log_return
    ``ln(c / c[-1])``. Null on row 0.
ma20, ma50, ma200
    Simple mean of the last 20 / 50 / 200 closes. Null before row 19 / 49 / 199.
volatility_20d
    ``std1`` of the last 20 log returns, annualised by ``* sqrt(bars a year)`` of the
    symbol's class and the group's timeframe (``Convention.bars_per_year``: daily bars 252
    for US listings and indices, 365 for crypto, 312 for forex's six UTC-day bars a week;
    intraday bars the class's trading time a year over the bar's length, e.g. 1,638 hourly
    stock bars, 8,760 hourly crypto bars). Null before row 20 (the first log return is on
    row 1, so 20 of them exist from row 20).
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
    ``(v - mean(w)) / std1(w)`` where ``w`` are the volumes of the 20 bars *before* this one
    (rows k-20 .. k-1): a spike is measured against what came before it, unbounded (with the
    bar inside its own window, |z| could never exceed 19/sqrt(20) ~ 4.25). Null before row
    20, when this volume or any in ``w`` is null (index bars carry none), and when the 20
    volumes of ``w`` are all equal (std == 0; detected exactly, so rounding in the rolling
    std can never yield a huge z).
high_52w_dist, low_52w_dist
    ``c / max(h) - 1`` and ``c / min(l) - 1`` over the bars of the last 52 weeks: those whose
    ``ts`` lies in ``(ts[k] - 364 days, ts[k]]``, whatever the calendar (252 XNYS sessions,
    364 crypto days) or timeframe. Null while that window reaches before the group's first
    bar (``ts[k] - ts[0] < 364 days``).
tr_close
    The total-return close: ``c[k] * prod(c[j] / (c[j] + D[j]))`` over the later rows j on
    which a cash dividend ``D[j]`` goes ex (a dividend is credited to the first bar of its
    ex-date's session or later, and reinvested at that bar's close). Equal to ``c`` on the last
    bar, and everywhere when no dividend is given; ``tr_close[k] / tr_close[k-1] - 1`` is the
    total return of bar k. Never null.

Prices (close, high, low) must be non-null and ``(symbol, timeframe, ts)`` unique; otherwise
``ValidationError`` is raised. Volume may be null (only volume_z20 uses it). Arithmetic is
IEEE double: a zero price gives an infinite log return or distance, as the formulas say. A
value the arithmetic leaves undefined (NaN: from a NaN price, 0 / 0, inf - inf) is null, like
every value a formula does not define: the output holds no NaN.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import numpy as np
import polars as pl

from enrich import conventions
from enrich.errors import ValidationError
from enrich.schemas import FEATURE_COLUMNS, FEATURES

__all__ = ["compute_features", "dividends_on_basis", "load_kernel"]

_ORDER: list[str] = ["symbol", "timeframe", "ts"]
_KEYS: list[str] = [*_ORDER, "session"]
_PRICES: tuple[str, ...] = ("high", "low", "close")
_NEEDED: tuple[str, ...] = (*_KEYS, *_PRICES, "volume")
_NON_NULL: tuple[str, ...] = (*_ORDER, *_PRICES)
_DTYPES: dict[str, pl.DataType] = {  # instances (a schema may hold classes: pl.String)
    **{c: t() if isinstance(t, type) else t for c, t in FEATURES.schema.items() if c in _KEYS},
    **{c: pl.Float64() for c in (*_PRICES, "volume")},
}
_GID = "_group"
_ROWS_PER_RUN = 100_000  # the rows computed at once, see _features


def compute_features(bars: pl.DataFrame, *, asset_class: str | Mapping[str, str] | None = None,
                     dividends: pl.DataFrame | None = None) -> pl.DataFrame:
    """Return the FEATURES frame for ``bars`` (see the module docstring for every column).

    The numbers come from one compiled pass per (symbol, timeframe) group
    (``enrich.quant.feature_kernel``); polars only checks, orders and frames them.
    """
    columns = _columns(bars)
    _check(columns)
    height = bars.height
    if height == 0:
        return FEATURES.empty()
    if _one_group(columns):
        # The usual case, one lake file: already in ts order, which the kernel checks.
        features = _features(columns, np.array([0, height]), asset_class, dividends)
        if features is not None:
            return features
        frame = pl.DataFrame(list(columns.values())).sort("ts")
        _refuse_repeats(height - frame.get_column("ts").n_unique())
        starts = np.array([0, height])
    else:
        frame = _sorted_with_group_id(pl.DataFrame(list(columns.values())))
        starts = _group_starts(frame.get_column(_GID).to_numpy())
    features = _features(dict(zip(frame.columns, frame.get_columns(), strict=True)), starts,
                         asset_class, dividends)
    assert features is not None  # sorted, without repeats
    return features


def dividends_on_basis(dividends: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    """Cash dividends (as declared, per then-current share) on the share basis of bars
    adjusted for every split in ``splits``: each amount times ``split_from / split_to`` of
    every split executed after its ex-date. Columns: symbol, ex_date, cash_amount."""
    # Columns picked and nulls looked for without a query (each costs ~0.2 ms; a symbol's
    # dividends are a few dozen rows, usually without a null).
    out = pl.DataFrame([dividends.get_column(c) for c in ("symbol", "ex_date", "cash_amount")])
    if any(s.null_count() for s in out.get_columns()):
        out = out.drop_nulls()
    if out.is_empty() or splits.is_empty():
        return out
    for e, s_from, s_to, sym in splits.select("execution_date", "split_from", "split_to",
                                               "symbol").iter_rows():
        if s_from and s_to:
            later = (pl.col("symbol") == sym) & (pl.col("ex_date") < e)
            out = out.with_columns(pl.when(later).then(pl.col("cash_amount") * (s_from / s_to))
                                   .otherwise(pl.col("cash_amount")).alias("cash_amount"))
    return out


def _columns(bars: pl.DataFrame) -> dict[str, pl.Series]:
    """The columns features need, by name, with FEATURES' types (cast if not)."""
    dtypes = dict(zip(bars.columns, bars.dtypes, strict=True))
    missing = [c for c in _NEEDED if c not in dtypes]
    if missing:
        raise ValidationError(f"features: bars lack columns {missing}", causes=missing)
    columns = {c: bars.get_column(c) for c in _NEEDED}
    if all(_same_type(dtypes[c], t) for c, t in _DTYPES.items()):
        return columns
    return {c: columns[c].cast(t) for c, t in _DTYPES.items()}


def _same_type(dtype: pl.DataType, expected: pl.DataType) -> bool:
    """``dtype == expected``, by class first: polars compares types in Python (~1 µs each),
    a class test is ~50 ns, and only a datetime's unit and zone need comparing."""
    return type(dtype) is type(expected) and (
        not isinstance(expected, pl.Datetime) or dtype == expected)


def _features(columns: Mapping[str, pl.Series], starts: np.ndarray,
              asset_class: str | Mapping[str, str] | None = None,
              dividends: pl.DataFrame | None = None) -> pl.DataFrame | None:
    """The keys and the features of the groups ``starts[g] .. starts[g + 1] - 1`` of the
    bars' ``columns`` (by name); None if ``ts`` does not increase within a group.

    A large frame is computed in runs of whole groups, on polars' threads: the kernel
    releases the GIL, and each group's numbers are its own whichever run computes them, so
    runs change the speed, never a bit. Each run has buffers of its own of at most
    ~15 MB, which the allocator reuses from one call to the next (one buffer for a whole
    universe would be fresh memory, page-faulted in, on every call); the feature columns of
    such a frame are in as many chunks as there were runs.
    """
    height = int(starts[-1])
    volume = columns["volume"]
    inputs = [columns["ts"].to_numpy().view(np.int64)]
    inputs += [columns[c].to_numpy() for c in _PRICES]
    inputs.append(volume.to_numpy())  # nulls become NaN
    inputs.append(
        volume.is_not_null().to_numpy()
        if volume.null_count()
        else np.ones(height, dtype=np.bool_)
    )
    inputs.append(_dividend_rows(columns, starts, dividends))
    inputs.append(_annual_rows(columns, starts, asset_class))
    symbol, *keys = (columns[c] for c in _KEYS)
    if starts.size == 2:
        # One group, the engine's call: one run, and each column a slice of it.
        part = _run(inputs, starts)
        if part is None:
            return None
        flat, n = _flat(part), height
        return symbol.to_frame().hstack([
            *keys, *(flat.slice(i * n, n).alias(name) for i, name in enumerate(FEATURE_COLUMNS))
        ])
    runs = _runs(np.array(starts, dtype=np.int64))
    if len(runs) > 1 and (threads := min(pl.thread_pool_size(), len(runs))) > 1:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(lambda run: _run(inputs, run), runs))
    else:
        parts = [_run(inputs, run) for run in runs]
    done = [part for part in parts if part is not None]
    if len(done) < len(parts):
        return None
    features: list[list[pl.Series]] = [[] for _ in FEATURE_COLUMNS]
    for values in done:
        flat, n = _flat(values), values.shape[1]
        for i, chunks in enumerate(features):
            chunks.append(flat.slice(i * n, n))
    return symbol.to_frame().hstack([
        *keys,
        *(
            (chunks[0] if len(chunks) == 1 else pl.concat(chunks, rechunk=False)).alias(name)
            for name, chunks in zip(FEATURE_COLUMNS, features, strict=True)
        ),
    ])


def _flat(values: np.ndarray) -> pl.Series:
    """A run's feature columns, one after the other, as one Series over ``values`` (no
    copy), null where the kernel wrote NaN; each column is a slice of it."""
    return pl.Series(values.ravel(), nan_to_null=True)


def _group_keys(columns: Mapping[str, pl.Series], starts: np.ndarray, name: str) -> list:
    """The value of column ``name`` on the first row of each group."""
    column = columns[name]
    if starts.size == 2:  # one group: a gather costs ~0.1 ms, indexing ~0.3 µs
        return [column[0]]
    return column.gather(starts[:-1]).to_list()


def _annual_rows(columns: Mapping[str, pl.Series], starts: np.ndarray,
                 asset_class: str | Mapping[str, str] | None) -> np.ndarray:
    """Each row's annualisation factor: sqrt(bars a year) of its group's class and
    timeframe (``enrich.conventions``)."""
    symbols = _group_keys(columns, starts, "symbol")
    timeframes = _group_keys(columns, starts, "timeframe")
    factors = np.empty(len(symbols))
    for g, (sym, tf) in enumerate(zip(symbols, timeframes, strict=True)):
        if isinstance(asset_class, str):
            cls = asset_class
        elif asset_class is not None and sym in asset_class:
            cls = asset_class[sym]
        else:
            cls = conventions.asset_class_of(sym)
        factors[g] = _annual_factor(cls, tf)
    if factors.size == 1:
        return np.full(int(starts[-1]), factors[0])
    return np.repeat(factors, np.diff(starts))


@functools.cache
def _annual_factor(asset_class: str, timeframe: str) -> float:
    """sqrt(bars a year) of a class and timeframe (a few µs to derive; a universe has few)."""
    try:
        return math.sqrt(conventions.convention(asset_class).bars_per_year(timeframe))
    except ValueError as exc:
        raise ValidationError(f"features: {exc}", causes=[str(exc)]) from None


def _dividend_rows(columns: Mapping[str, pl.Series], starts: np.ndarray,
                   dividends: pl.DataFrame | None) -> np.ndarray:
    """The cash dividend going ex on each row: on the first bar of a group whose session is
    on or after the ex-date (0 elsewhere; none before a group's first bar)."""
    out = np.zeros(int(starts[-1]))
    if dividends is None or dividends.is_empty():
        return out
    by_symbol: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if starts.size == 2:
        # One group, the engine's call: its symbol's rows picked in numpy and placed by the
        # kernel, one call (a partition and a sort are polars queries, ~0.3 ms together; a
        # numpy sort, search and add.at ~50 µs in calls).
        (sym,) = _group_keys(columns, starts, "symbol")
        mine = (dividends.get_column("symbol") == sym).to_numpy().astype(np.bool_)  # null: no
        ex = dividends.get_column("ex_date").to_numpy()[mine].astype("datetime64[D]")
        amount = dividends.get_column("cash_amount").to_numpy()[mine].astype(np.float64)
        sessions = columns["session"].to_numpy().astype("datetime64[D]")
        _kernel().place_dividends(sessions.view(np.int64), ex.view(np.int64), amount, out)
        return out
    else:
        for (sym,), part in dividends.partition_by("symbol", as_dict=True).items():
            part = part.sort("ex_date")
            by_symbol[sym] = (part["ex_date"].to_numpy().astype("datetime64[D]"),
                              part["cash_amount"].to_numpy().astype(np.float64))
    if not by_symbol:
        return out
    sessions = columns["session"].to_numpy().astype("datetime64[D]")
    for g, sym in enumerate(_group_keys(columns, starts, "symbol")):
        if sym not in by_symbol:
            continue
        a, b = int(starts[g]), int(starts[g + 1])
        ex, amount = by_symbol[sym]
        pos = np.searchsorted(sessions[a:b], ex, "left")
        keep = (pos < b - a) & (ex >= sessions[a])
        np.add.at(out, a + pos[keep], amount[keep])
    return out


def _runs(starts: np.ndarray) -> list[np.ndarray]:
    """``starts`` cut into runs of whole groups of at most ``_ROWS_PER_RUN`` rows (or one
    group), each the starts of its groups and the row after its last."""
    if starts[-1] <= _ROWS_PER_RUN:
        return [starts]
    cuts, group, groups = [0], 0, starts.size - 1
    while group < groups:
        last = int(np.searchsorted(starts, starts[group] + _ROWS_PER_RUN, side="right")) - 1
        group = min(max(last, group + 1), groups)
        cuts.append(group)
    return [starts[a : b + 1] for a, b in itertools.pairwise(cuts)]


def _run(inputs: list[np.ndarray], starts: np.ndarray) -> np.ndarray | None:
    """The features of the groups of one run, ``(features, rows)``, NaN where null."""
    for array in inputs:  # one compiled signature, whatever the caller handed over
        array.setflags(write=False)
    first, end = starts[0], starts[-1]
    local = starts - first
    local.setflags(write=False)
    ts, high, low, close, *rest = (a[first:end] for a in inputs)
    values = np.empty((len(FEATURE_COLUMNS), end - first))
    if _kernel().fill(ts, high, low, close, _log_ratios(close), *rest, local, values):
        return None
    return values


def _log_ratios(close: np.ndarray) -> np.ndarray:
    """``ln(close[k] / close[k - 1])`` from row 1 (row 0: 0), in numpy's vectorised log (the
    same bits for a row whatever the array around it, on a given machine: numpy picks its
    SIMD code by CPU). IEEE: a zero price gives an infinity, 0 / 0 a NaN, a ratio beyond
    the doubles an infinity, without a warning."""
    out = np.empty(close.size)
    if close.size:
        out[0] = 0.0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            np.divide(close[1:], close[:-1], out=out[1:])
            np.log(out[1:], out=out[1:])
    out.setflags(write=False)
    return out


def load_kernel() -> None:
    """Load the compiled kernel now rather than on the first computation (~1 s: numba, then
    the machine code from numba's cache next to the module, compiled there on first use).

    For a process that forks workers: they inherit it loaded (``enrich.pipeline.worker_boot``).
    """
    ticks = np.zeros(1, dtype=np.int64)
    prices = np.ones(1)
    inputs = [ticks, prices, prices, prices, prices, np.ones(1, dtype=np.bool_),
              np.zeros(1), prices]
    _run(inputs, np.array([0, 1], dtype=np.int64))


@functools.cache
def _kernel() -> ModuleType:
    """``enrich.quant.feature_kernel``, imported on the first computation: loading numba and the
    compiled kernel takes ~1 s, which a process that computes no features need not pay."""
    from enrich.quant import feature_kernel

    return feature_kernel


def _check(columns: Mapping[str, pl.Series]) -> None:
    nulls = {c: n for c in _NON_NULL if (n := columns[c].null_count())}
    if nulls:
        causes = [f"{n} null {c}" for c, n in nulls.items()]
        raise ValidationError(
            f"features: bars have null values ({', '.join(causes)})",
            rejected=max(nulls.values()),
            causes=causes,
        )


def _one_group(columns: Mapping[str, pl.Series]) -> bool:
    """Whether all rows share one (symbol, timeframe): the engine's call, one symbol's bars."""
    for name in ("symbol", "timeframe"):
        keys = columns[name]
        # Equal ends of a sorted column: one value (and a sortedness test is cheaper than a
        # comparison with the first value).
        if keys[0] != keys[-1] or not keys.is_sorted():
            return False
    return True


def _sorted_with_group_id(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` in (symbol, timeframe, ts) order, with an integer id per (symbol, timeframe)
    (its runs are the kernel's groups).

    Input that is already in order (the usual case: one lake file per symbol) is not
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


def _group_starts(group_id: np.ndarray) -> np.ndarray:
    """The first row of each run of equal ids, and the row count at the end."""
    changes = np.flatnonzero(group_id[1:] != group_id[:-1]) + 1
    return np.concatenate(([0], changes, [group_id.size]))
