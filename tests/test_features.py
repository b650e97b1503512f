"""compute_features: hand-computed values on tiny frames, grouping and ordering, and agreement
with an independent loop-by-loop implementation on random walks."""

from __future__ import annotations

import datetime as dt
import math
import statistics

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from enrich.errors import ValidationError
from enrich.quant.features import compute_features, dividends_on_basis
from enrich.schemas import BARS, DIVIDENDS, FEATURE_COLUMNS, FEATURES, SPLITS

START = dt.datetime(2024, 1, 1, 14, 30, tzinfo=dt.UTC)
PRICE_VALUED = {"ma20", "ma50", "ma200", "ema12", "ema26", "macd", "macd_signal", "atr14",
                "bb_upper", "bb_lower"}


def make_bars(
    symbol: str,
    closes,
    *,
    highs=None,
    lows=None,
    volumes=None,
    timeframe: str = "1d",
    step: dt.timedelta = dt.timedelta(days=1),
) -> pl.DataFrame:
    """Bars in the BARS schema; high/low default to the close, volume to 1000 + row."""
    n = len(closes)
    ts = [START + i * step for i in range(n)]
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "timeframe": [timeframe] * n,
            "ts": ts,
            "session": [t.date() for t in ts],
            "open": list(map(float, closes)),
            "high": list(map(float, closes if highs is None else highs)),
            "low": list(map(float, closes if lows is None else lows)),
            "close": list(map(float, closes)),
            "volume": [1000.0 + i for i in range(n)] if volumes is None else volumes,
            "vwap": [None] * n,
            "trades": [None] * n,
            "adjusted_asof": [None] * n,
        },
        schema=BARS.schema,
    )


def random_walk(symbol: str, n: int, seed: int, **kwargs) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, n)))
    high = close * (1 + np.abs(rng.normal(0, 0.01, n)))
    low = close * (1 - np.abs(rng.normal(0, 0.01, n)))
    volume = np.round(rng.lognormal(12, 0.5, n))
    return make_bars(symbol, close, highs=high, lows=low, volumes=volume.tolist(), **kwargs)


def column(frame: pl.DataFrame, name: str) -> list[float | None]:
    return frame[name].to_list()


def nulls_then_values(values: list[float | None], first: int) -> bool:
    return all(v is None for v in values[:first]) and all(v is not None for v in values[first:])


# --- shape -------------------------------------------------------------------------------------


def test_output_has_the_features_schema_one_row_per_bar_sorted():
    bars = pl.concat([random_walk("MSFT", 30, 1), random_walk("AAPL", 40, 2)])
    out = compute_features(bars)
    assert out.schema == pl.Schema(FEATURES.schema)
    assert out.columns == ["symbol", "timeframe", "ts", "session", *FEATURE_COLUMNS]
    assert out.height == bars.height
    assert out.equals(out.sort("symbol", "timeframe", "ts"))
    assert out["symbol"].to_list() == ["AAPL"] * 40 + ["MSFT"] * 30
    assert_frame_equal(
        out.select("symbol", "timeframe", "ts", "session"),
        bars.sort("symbol", "ts").select("symbol", "timeframe", "ts", "session"),
    )


def test_empty_input_returns_empty_features_frame():
    assert_frame_equal(compute_features(BARS.empty()), FEATURES.empty())


def test_nulls_are_nulls_never_nan():
    out = compute_features(random_walk("X", 300, 3))
    for name in FEATURE_COLUMNS:
        assert not out[name].is_nan().any(), name


# --- hand-computed values ----------------------------------------------------------------------


def test_log_return_and_simple_moving_averages_on_25_rows():
    closes = [float(k) for k in range(1, 26)]  # close on row k is k + 1
    out = compute_features(make_bars("X", closes))

    log_return = column(out, "log_return")
    assert log_return[0] is None
    assert log_return[1] == pytest.approx(math.log(2 / 1), abs=0, rel=1e-15)
    assert log_return[24] == pytest.approx(math.log(25 / 24), abs=0, rel=1e-15)

    ma20 = column(out, "ma20")
    assert nulls_then_values(ma20, 19)
    assert ma20[19] == pytest.approx(10.5)  # mean of 1 .. 20
    assert ma20[24] == pytest.approx(15.5)  # mean of 6 .. 25
    assert out["ma50"].null_count() == 25
    assert out["ma200"].null_count() == 25


def test_long_moving_averages_fill_at_their_window():
    closes = [float(k) for k in range(1, 211)]
    out = compute_features(make_bars("X", closes))
    assert nulls_then_values(column(out, "ma50"), 49)
    assert nulls_then_values(column(out, "ma200"), 199)
    assert out["ma50"][49] == pytest.approx(25.5)
    assert out["ma200"][199] == pytest.approx(100.5)
    assert out["ma200"][209] == pytest.approx(110.5)


def test_volatility_is_annualised_sample_std_of_the_last_20_log_returns():
    closes = [100, 101, 99, 102, 104, 103, 101, 105, 108, 107, 106, 109, 111, 110, 108, 112, 115,
              113, 114, 118, 117, 120, 119]
    out = compute_features(make_bars("X", closes))
    vol = column(out, "volatility_20d")
    assert nulls_then_values(vol, 20)
    returns = [math.log(closes[k] / closes[k - 1]) for k in range(1, len(closes))]
    for row in (20, 21, 22):
        window = returns[row - 20 : row]  # the log returns of rows row-19 .. row
        expected = statistics.stdev(window) * math.sqrt(252)
        assert vol[row] == pytest.approx(expected, rel=1e-12)


def _returns_std(closes: list[float], row: int) -> float:
    returns = [math.log(closes[k] / closes[k - 1]) for k in range(row - 19, row + 1)]
    return statistics.stdev(returns)


@pytest.mark.parametrize(("symbol", "asset_class", "timeframe", "step", "per_year"), [
    # Crypto trades 365 days a year; forex's UTC-day bars are six a week (Sunday's short).
    ("X:BTCUSD", None, "1d", dt.timedelta(days=1), 365),
    ("BTCUSD", "crypto", "1d", dt.timedelta(days=1), 365),
    ("C:EURUSD", None, "1d", dt.timedelta(days=1), 312),
    ("I:SPX", None, "1d", dt.timedelta(days=1), 252),
    ("SPY", "etfs", "1d", dt.timedelta(days=1), 252),
    # Hourly bars annualise by their bars a year: the trading hours of a year.
    ("AAPL", "stocks", "1h", dt.timedelta(hours=1), 252 * 6.5),
    ("X:BTCUSD", "crypto", "1h", dt.timedelta(hours=1), 365 * 24),
    ("C:EURUSD", "fx", "1h", dt.timedelta(hours=1), 52 * 120),
    ("AAPL", "stocks", "5m", dt.timedelta(minutes=5), 252 * 78),
])
def test_volatility_annualises_by_the_bars_a_year_of_class_and_timeframe(
        symbol, asset_class, timeframe, step, per_year):
    closes = [100 * math.exp(0.01 * math.sin(k) + 0.002 * k) for k in range(25)]
    out = compute_features(make_bars(symbol, closes, timeframe=timeframe, step=step),
                           asset_class=asset_class)
    vol = column(out, "volatility_20d")
    for row in (20, 24):
        assert vol[row] == pytest.approx(_returns_std(closes, row) * math.sqrt(per_year),
                                         rel=1e-12)


def test_each_symbol_of_a_many_symbol_call_uses_its_own_class():
    closes = [100 * math.exp(0.01 * math.sin(k)) for k in range(22)]
    bars = pl.concat([make_bars("AAA", closes), make_bars("BBB", closes)])
    out = compute_features(bars, asset_class={"AAA": "crypto", "BBB": "stocks"})
    vol = {s: out.filter(pl.col("symbol") == s)["volatility_20d"][21] for s in ("AAA", "BBB")}
    assert vol["AAA"] == pytest.approx(_returns_std(closes, 21) * math.sqrt(365), rel=1e-12)
    assert vol["BBB"] == pytest.approx(_returns_std(closes, 21) * math.sqrt(252), rel=1e-12)


def test_an_unknown_timeframe_is_refused():
    with pytest.raises(ValidationError, match="timeframe"):
        compute_features(make_bars("X", [1.0, 2.0], timeframe="1w"))


def test_bollinger_bands_use_the_population_std():
    closes = [float(k) for k in range(1, 26)]
    out = compute_features(make_bars("X", closes))
    # 20 consecutive integers: population variance (20**2 - 1) / 12 = 33.25.
    assert nulls_then_values(column(out, "bb_upper"), 19)
    assert nulls_then_values(column(out, "bb_lower"), 19)
    assert out["bb_upper"][19] == pytest.approx(10.5 + 2 * math.sqrt(33.25), rel=1e-12)
    assert out["bb_lower"][19] == pytest.approx(10.5 - 2 * math.sqrt(33.25), rel=1e-12)
    assert out["bb_upper"][24] == pytest.approx(15.5 + 2 * math.sqrt(33.25), rel=1e-12)


def test_ema_and_macd_are_seeded_with_simple_means():
    # On a straight line an EMA seeded with the SMA lags it by exactly (1 - alpha) / alpha,
    # which for alpha = 2/(n+1) is the SMA's own lag (n - 1) / 2.
    closes = [float(k) for k in range(1, 41)]
    out = compute_features(make_bars("X", closes))
    ema12, ema26 = column(out, "ema12"), column(out, "ema26")
    assert nulls_then_values(ema12, 11)
    assert nulls_then_values(ema26, 25)
    assert ema12[11] == pytest.approx(6.5, rel=1e-12)  # mean of 1 .. 12
    assert ema12[12] == pytest.approx(2 / 13 * 13 + 11 / 13 * 6.5, rel=1e-12)
    for row in range(11, 40):
        assert ema12[row] == pytest.approx(row + 1 - 5.5, rel=1e-12)
    for row in range(25, 40):
        assert ema26[row] == pytest.approx(row + 1 - 12.5, rel=1e-12)

    macd, signal = column(out, "macd"), column(out, "macd_signal")
    assert nulls_then_values(macd, 25)
    assert nulls_then_values(signal, 33)
    assert macd[25:] == pytest.approx([7.0] * 15, rel=1e-12)
    assert signal[33:] == pytest.approx([7.0] * 7, rel=1e-12)


def test_ema_recursion_after_the_seed():
    closes = [10.0] * 12 + [23.0, 10.0]
    out = compute_features(make_bars("X", closes))
    alpha = 2 / 13
    assert out["ema12"][11] == 10.0
    assert out["ema12"][12] == pytest.approx(10 + alpha * 13, rel=1e-14)
    assert out["ema12"][13] == pytest.approx((1 - alpha) * (10 + alpha * 13) + alpha * 10)


def test_macd_signal_seed_is_the_mean_of_the_first_nine_macd_values():
    closes = [100.0] * 26 + [101.0, 103.0, 99.0, 104.0, 110.0, 108.0, 107.0, 111.0, 115.0]
    out = compute_features(make_bars("X", closes))
    macd = column(out, "macd")
    assert out["macd_signal"][33] == pytest.approx(statistics.fmean(macd[25:34]), rel=1e-12)
    expected = 0.8 * out["macd_signal"][33] + 0.2 * macd[34]
    assert out["macd_signal"][34] == pytest.approx(expected, rel=1e-12)


def test_rsi14_wilder_smoothing():
    changes = [2, -1] * 7 + [3, -1.5]
    closes = [100.0]
    for d in changes:
        closes.append(closes[-1] + d)
    out = compute_features(make_bars("X", closes))
    rsi = column(out, "rsi14")
    assert nulls_then_values(rsi, 14)
    # Row 14: first averages over changes 1..14: gain 14/14 = 1, loss 7/14 = 0.5.
    assert rsi[14] == pytest.approx(100 - 100 / (1 + 1 / 0.5), rel=1e-12)
    # Row 15 (+3): gain (13 * 1 + 3) / 14, loss (13 * 0.5) / 14.
    gain, loss = 16 / 14, 6.5 / 14
    assert rsi[15] == pytest.approx(100 - 100 / (1 + gain / loss), rel=1e-12)
    # Row 16 (-1.5).
    gain, loss = 13 * gain / 14, (13 * loss + 1.5) / 14
    assert rsi[16] == pytest.approx(100 - 100 / (1 + gain / loss), rel=1e-12)


def test_rsi14_edge_cases_only_gains_only_losses_flat():
    up = compute_features(make_bars("X", [float(k) for k in range(1, 21)]))
    down = compute_features(make_bars("X", [float(k) for k in range(20, 0, -1)]))
    flat = compute_features(make_bars("X", [7.0] * 20))
    assert column(up, "rsi14")[14:] == [100.0] * 6
    assert column(down, "rsi14")[14:] == [0.0] * 6
    assert column(flat, "rsi14")[14:] == [50.0] * 6
    assert column(flat, "rsi14")[:14] == [None] * 14


def test_atr14_wilder_true_range():
    closes = [10.0] * 14 + [14.0, 9.0, 5.5]
    highs = [12.0] + [11.0] * 13 + [15.0, 14.5, 6.5]
    lows = [8.0] + [9.0] * 13 + [13.0, 8.0, 4.5]
    out = compute_features(make_bars("X", closes, highs=highs, lows=lows))
    atr = column(out, "atr14")
    assert nulls_then_values(atr, 13)
    # Row 0 has no previous close: TR = 12 - 8 = 4; rows 1..13 TR = 2.
    assert atr[13] == pytest.approx((4 + 13 * 2) / 14, rel=1e-12)
    # Row 14: gap up, TR = |15 - 10| = 5.
    expected = (13 * atr[13] + 5) / 14
    assert atr[14] == pytest.approx(expected, rel=1e-12)
    # Row 15: wide bar, TR = 14.5 - 8 = 6.5.
    expected = (13 * expected + 6.5) / 14
    assert atr[15] == pytest.approx(expected, rel=1e-12)
    # Row 16: gap down, TR = |4.5 - 9| = 4.5 (h - l is 2).
    expected = (13 * expected + 4.5) / 14
    assert atr[16] == pytest.approx(expected, rel=1e-12)


def test_volume_z20_compares_a_bar_with_the_20_before_it():
    volumes = [float(k) for k in range(1, 21)] + [30.0, 10.5]
    out = compute_features(make_bars("X", [10.0] * 22, volumes=volumes))
    z = column(out, "volume_z20")
    assert nulls_then_values(z, 20)
    # Row 20 against volumes 1..20 (rows 0..19): mean 10.5, sample variance 35.
    assert z[20] == pytest.approx((30 - 10.5) / math.sqrt(35), rel=1e-12)
    window = volumes[1:21]  # row 21 against rows 1..20
    assert z[21] == pytest.approx((10.5 - statistics.fmean(window)) / statistics.stdev(window),
                                  rel=1e-12)


def test_volume_z20_is_not_capped_by_its_own_bar():
    # With the bar inside its own window |z| <= 19 / sqrt(20) ~ 4.25 whatever the spike.
    volumes = [1000.0 + (k % 2) for k in range(20)] + [1e9]
    z = column(compute_features(make_bars("X", [10.0] * 21, volumes=volumes)), "volume_z20")
    assert z[20] > 1e6


def test_volume_z20_matches_pandas_over_the_previous_20_bars():
    pd = pytest.importorskip("pandas")
    bars = random_walk("X", 400, 7)
    volume = bars["volume"].to_list()
    volume[100] = None  # a missing volume nulls every z whose window (or bar) holds it
    volume[200:230] = [5e5] * 30  # a flat stretch: std 0, null
    bars = bars.with_columns(pl.Series("volume", volume, dtype=pl.Float64))
    got = compute_features(bars)["volume_z20"].to_numpy()  # nulls as NaN
    v = pd.Series(volume, dtype="float64")
    before = v.shift(1).rolling(20, min_periods=20)
    std = before.std(ddof=1)
    expected = ((v - before.mean()) / std.where(std > 0)).to_numpy()
    assert (np.isnan(got) == np.isnan(expected)).all()
    both = ~np.isnan(expected)
    assert both.sum() > 300
    scaled = np.abs(got[both] - expected[both]) / np.maximum(1.0, np.abs(expected[both]))
    assert scaled.max() <= 1e-9


def test_volume_z20_is_null_when_the_window_is_flat_or_has_a_null():
    volumes = [5.0, 9.0] + [7.0] * 25 + [8.0, 7.0]
    out = compute_features(make_bars("X", [10.0] * 29, volumes=volumes))
    z = column(out, "volume_z20")
    # Rows 20 and 21 still see a 5 or a 9; rows 22..27 see twenty 7s (the 8 too: its window
    # is flat); row 28 sees nineteen 7s and the 8.
    assert z[20] is not None and z[21] is not None
    assert z[22:28] == [None] * 6
    assert z[28] == pytest.approx((7 - 7.05) / statistics.stdev([7.0] * 19 + [8.0]), rel=1e-12)

    volumes = [float(k) for k in range(1, 31)]
    volumes[3] = None
    out = compute_features(make_bars("X", [10.0] * 30, volumes=volumes))
    z = column(out, "volume_z20")
    assert z[:24] == [None] * 24  # every window up to row 23 holds row 3
    assert all(v is not None for v in z[24:])
    assert out["ma20"][19] == 10.0  # a null volume touches nothing else


def test_52_week_distances_cover_364_calendar_days():
    n = 372  # a bar every calendar day (crypto)
    closes = [100.0 + k for k in range(n)]
    highs = [c + 1 for c in closes]
    lows = [c - 1 for c in closes]
    highs[3] = 1000.0
    lows[5] = 50.0
    out = compute_features(make_bars("X:BTCUSD", closes, highs=highs, lows=lows))
    high_dist, low_dist = column(out, "high_52w_dist"), column(out, "low_52w_dist")
    # Row k covers the bars after ts[k] - 364 days: from row 364 on, 364 rows, all held.
    assert nulls_then_values(high_dist, 364)
    assert nulls_then_values(low_dist, 364)
    # Row 364 covers rows 1..364, which hold the 1000 high and the 50 low.
    assert high_dist[364] == pytest.approx(464 / 1000 - 1, rel=1e-12)
    assert low_dist[364] == pytest.approx(464 / 50 - 1, rel=1e-12)
    # Row 367 covers rows 4..367: the spike high has left the window, the low has not.
    assert high_dist[367] == pytest.approx(467 / 468 - 1, rel=1e-12)
    assert low_dist[367] == pytest.approx(467 / 50 - 1, rel=1e-12)
    # Row 369 covers rows 6..369: the lowest low is now row 6's.
    assert low_dist[369] == pytest.approx(469 / 105 - 1, rel=1e-12)


def test_52_week_window_is_the_same_time_for_every_calendar():
    from enrich.calendars import sessions

    days = sessions("XNYS", dt.date(2022, 1, 3), dt.date(2023, 12, 29))
    n = len(days)
    closes = [100.0 + k for k in range(n)]
    highs = [c + 1 for c in closes]
    bars = make_bars("SPY", closes, highs=highs, lows=closes).with_columns(
        pl.Series("ts", [dt.datetime.combine(d, dt.time(5), dt.UTC) for d in days]),
        pl.Series("session", days))
    dist = column(compute_features(bars), "high_52w_dist")
    # 2023-01-03 is the first session 364 days or more after 2022-01-03; its window holds the
    # sessions after 2022-01-04 (250 of them: 52 weeks of XNYS sessions, not 252 rows).
    first = days.index(dt.date(2023, 1, 3))
    assert nulls_then_values(dist, first)
    inside = [d for d in days if dt.date(2022, 1, 4) < d <= dt.date(2023, 1, 3)]
    assert len(inside) == 250
    assert dist[first] == pytest.approx(closes[first] / highs[first] - 1, rel=1e-12)
    # Hourly bars: 364 days of hours before any value (no row count stands in for 52 weeks).
    hourly = compute_features(make_bars("SPY", closes * 20, timeframe="1h",
                                        step=dt.timedelta(hours=1)))
    assert nulls_then_values(column(hourly, "high_52w_dist"), 364 * 24)


def test_short_group_is_all_nulls_where_windows_do_not_fit():
    out = compute_features(make_bars("X", [10.0]))
    assert out.height == 1
    assert out.select(FEATURE_COLUMNS).row(0) == (None,) * (len(FEATURE_COLUMNS) - 1) + (10.0,)
    out = compute_features(make_bars("X", [10.0, 11.0, 12.0]))
    assert out["log_return"].null_count() == 1
    assert all(out[c].null_count() == 3 for c in FEATURE_COLUMNS
               if c not in ("log_return", "tr_close"))
    assert out["tr_close"].to_list() == [10.0, 11.0, 12.0]  # no dividend: the close


# --- total return ------------------------------------------------------------------------------


def _dividends(rows: list[tuple[str, dt.date, float]]) -> pl.DataFrame:
    return pl.DataFrame({"symbol": [r[0] for r in rows], "ex_date": [r[1] for r in rows],
                         "cash_amount": [r[2] for r in rows]},
                        schema={"symbol": pl.String, "ex_date": pl.Date,
                                "cash_amount": pl.Float64})


def test_tr_close_reinvests_cash_dividends_on_the_ex_date():
    closes = [100.0, 101.0, 99.0, 100.0, 102.0]
    bars = make_bars("KO", closes)
    ex = bars["session"][2]  # a 2.0 dividend goes ex on row 2 (the close drops by it)
    out = compute_features(bars, dividends=_dividends([("KO", ex, 2.0), ("PG", ex, 9.0)]))
    tr = column(out, "tr_close")
    assert tr[2:] == closes[2:]  # the last bar's close, and every bar after the ex-date
    factor = 99.0 / (99.0 + 2.0)
    assert tr[0] == pytest.approx(100.0 * factor, rel=1e-15)
    assert tr[1] == pytest.approx(101.0 * factor, rel=1e-15)
    # The total return of the ex-date's bar is its price move plus the dividend.
    assert tr[2] / tr[1] - 1 == pytest.approx((99.0 + 2.0) / 101.0 - 1, rel=1e-12)
    assert out["log_return"][2] == pytest.approx(math.log(99 / 101))  # price only
    # A dividend whose ex-date has no bar is credited to the next bar; one before the
    # history is not.
    gappy = bars.filter(pl.col("session") != bars["session"][3])  # no bar on row 3's day
    late = compute_features(gappy, dividends=_dividends([
        ("KO", bars["session"][0] - dt.timedelta(days=3), 5.0),
        ("KO", bars["session"][3], 1.0)]))
    # Credited to the next bar (close 102), reinvested at its close; the early one nowhere.
    assert column(late, "tr_close") == pytest.approx(
        [c * 102.0 / 103.0 for c in closes[:3]] + [102.0], rel=1e-15)


def test_dividends_are_put_on_the_split_adjusted_basis():
    divs = DIVIDENDS.empty().vstack(pl.DataFrame({
        "symbol": ["AAPL", "AAPL"], "ex_date": [dt.date(2020, 8, 7), dt.date(2020, 11, 6)],
        "cash_amount": [0.82, 0.205]}).pipe(lambda f: f.select(
            [pl.col(c) if c in f.columns else pl.lit(None, dtype=t).alias(c)
             for c, t in DIVIDENDS.schema.items()])))
    splits = SPLITS.empty().vstack(pl.DataFrame(
        {"symbol": ["AAPL"], "execution_date": [dt.date(2020, 8, 31)], "split_from": [1.0],
         "split_to": [4.0], "adjustment_type": ["forward_split"]}, schema=SPLITS.schema))
    out = dividends_on_basis(divs, splits)
    assert out["cash_amount"].to_list() == [0.205, 0.205]  # 0.82 per pre-split share / 4


# --- groups and ordering -----------------------------------------------------------------------


def test_interleaved_symbols_match_each_computed_alone():
    a = random_walk("AAA", 300, 11)
    b = random_walk("BBB", 280, 12)
    together = compute_features(pl.concat([a, b]).sort("ts", "symbol"))
    assert_frame_equal(together.filter(pl.col("symbol") == "AAA"), compute_features(a))
    assert_frame_equal(together.filter(pl.col("symbol") == "BBB"), compute_features(b))


def test_timeframes_of_one_symbol_are_separate_series():
    daily = random_walk("AAA", 60, 21)
    hourly = random_walk("AAA", 70, 22, timeframe="1h", step=dt.timedelta(hours=1))
    out = compute_features(pl.concat([hourly, daily]))
    assert_frame_equal(out.filter(pl.col("timeframe") == "1d"), compute_features(daily))
    assert_frame_equal(out.filter(pl.col("timeframe") == "1h"), compute_features(hourly))


def test_one_group_alone_is_exactly_its_slice_of_a_many_group_call():
    # Bars of one (symbol, timeframe), the engine's call, skip the per-group windows; the
    # result must still be bit-for-bit that group's rows of a call with several groups.
    volumes = [1e6] * 40 + [float(k) for k in range(260)]
    volumes[100] = None
    groups = [
        random_walk("AAA", 600, 51),
        # A flat stretch and a null volume.
        random_walk("BBB", 300, 52).with_columns(pl.Series("volume", volumes, pl.Float64)),
        random_walk("BBB", 260, 53, timeframe="1h", step=dt.timedelta(hours=1)),
        random_walk("CCC", 20, 54),  # too short for most windows
    ]
    together = compute_features(pl.concat(groups).sample(fraction=1.0, shuffle=True, seed=7))
    for bars in groups:
        symbol, timeframe = bars["symbol"][0], bars["timeframe"][0]
        part = together.filter((pl.col("symbol") == symbol) & (pl.col("timeframe") == timeframe))
        assert_frame_equal(compute_features(bars), part, check_exact=True)
        assert_frame_equal(compute_features(bars.reverse()), part, check_exact=True)


def test_one_group_finds_its_dividends_as_a_many_group_call_does():
    # The one-group call picks its symbol's dividends itself (no partition of the frame);
    # it must credit exactly what the many-group call credits, to the bit: dividends in any
    # order, three on one bar (Saturday's, Sunday's and Monday's ex-dates all go to Monday's
    # bar, summed in ex-date order: 0.1 + 1.3 + 3.3 is not 3.3 + 1.3 + 0.1 in floating
    # point, nor is the close's reinvestment factor), one before the history, other symbols'
    # and a null symbol's ignored.
    weekdays = pl.col("session").dt.weekday() <= 5
    aaa, bbb = (random_walk(s, 300, seed).filter(weekdays) for s, seed in (("AAA", 61),
                                                                           ("BBB", 62)))
    days = aaa["session"]
    saturday = next(d for d in days if d.weekday() == 4) + dt.timedelta(days=1)
    sunday, monday = saturday + dt.timedelta(days=1), saturday + dt.timedelta(days=2)
    rows = [("AAA", days[200], 0.4), ("BBB", days[100], 9.0), ("AAA", monday, 3.3),
            (None, days[50], 7.0), ("AAA", sunday, 1.3), ("AAA", saturday, 0.1),
            ("AAA", days[0] - dt.timedelta(days=5), 1.0), ("AAA", days[120], 0.5)]
    divs = _dividends(rows)
    together = compute_features(pl.concat([aaa, bbb]), dividends=divs)
    alone = compute_features(aaa, dividends=divs)
    assert_frame_equal(alone, together.filter(pl.col("symbol") == "AAA"), check_exact=True)
    assert column(alone, "tr_close") != column(compute_features(aaa), "tr_close")


def test_a_large_frame_is_bit_for_bit_each_symbol_alone_and_the_same_every_time():
    # Over 100,000 rows the groups are computed in several runs, on several threads: neither
    # may change a bit, whatever the scheduling.
    groups = [random_walk(f"S{i:02d}", 2_600, 100 + i) for i in range(40)]
    groups += [random_walk(f"T{i:02d}", n, 200 + i) for i, n in enumerate((1, 19, 251, 300))]
    bars = pl.concat(groups)
    assert bars.height > 100_000
    first, second = compute_features(bars), compute_features(bars)
    assert_frame_equal(first, second, check_exact=True)
    for group in groups[::7] + groups[-4:]:
        part = first.filter(pl.col("symbol") == group["symbol"][0])
        assert_frame_equal(compute_features(group), part, check_exact=True)


def test_unsorted_input_gives_the_sorted_result():
    bars = pl.concat([random_walk("AAA", 120, 31), random_walk("BBB", 90, 32)])
    expected = compute_features(bars)
    shuffled = bars.sample(fraction=1.0, shuffle=True, seed=5)
    assert not shuffled.equals(bars)
    assert_frame_equal(compute_features(shuffled), expected)


def test_null_price_is_refused():
    bars = make_bars("X", [1.0, 2.0, 3.0]).with_columns(
        close=pl.when(pl.col("close") == 2.0).then(None).otherwise(pl.col("close"))
    )
    with pytest.raises(ValidationError, match="null close"):
        compute_features(bars)


def test_duplicate_key_is_refused():
    bars = make_bars("X", [1.0, 2.0, 3.0])
    with pytest.raises(ValidationError, match="repeat"):
        compute_features(pl.concat([bars, bars.head(1)]))
    with pytest.raises(ValidationError, match="1 bars repeat"):
        compute_features(pl.concat([bars.head(2), bars.tail(2)]))  # adjacent, still in order


def test_missing_column_is_refused():
    with pytest.raises(ValidationError, match="volume"):
        compute_features(make_bars("X", [1.0]).drop("volume"))


# --- numerics ----------------------------------------------------------------------------------


def test_twenty_equal_closes_after_moves_have_bands_exactly_on_the_mean():
    # A window's spread is computed from deviations inside the window, so a flat stretch after
    # large moves has a standard deviation of exactly 0 (not a rounding residue whose square
    # root would open the bands).
    closes = [100.0 * 1.05 ** (k % 7) for k in range(60)] + [123.456] * 25
    out = compute_features(make_bars("X", closes))
    assert out["bb_upper"][-5:].to_list() == [123.456] * 5
    assert out["bb_lower"][-5:].to_list() == [123.456] * 5
    assert out["ma20"][-5:].to_list() == [123.456] * 5
    assert out["volatility_20d"][-3:].to_list() == [0.0] * 3  # 20 log returns of 0


def test_windows_do_not_drift_after_prices_fall_by_a_million():
    # Sums over a window are never carried along the whole history (a running sum would keep
    # the rounding error of the early, huge prices).
    rng = np.random.default_rng(61)
    closes = np.concatenate([1e6 * (1 + 0.01 * rng.standard_normal(2_000)),
                             1 + 0.01 * rng.standard_normal(3_000)])
    out = compute_features(make_bars("X", closes))
    for n in (20, 50, 200):
        expected = np.lib.stride_tricks.sliding_window_view(closes, n).mean(axis=1)
        got = out[f"ma{n}"].to_numpy()[n - 1 :]
        late = slice(2_000, None)  # windows of the small prices only
        assert np.abs(got[late] - expected[late]).max() <= 1e-12 * np.abs(expected[late]).max()


def test_a_zero_price_gives_infinities_as_ieee_arithmetic_says():
    closes = [10.0] * 370 + [0.0, 5.0]
    lows = [9.0] * 370 + [0.0, 4.0]
    out = compute_features(make_bars("X", closes, lows=lows))
    assert out["log_return"][-2:].to_list() == [-math.inf, math.inf]
    assert out["low_52w_dist"][-1] == math.inf  # 5 / 0 - 1
    assert out["high_52w_dist"][-2] == -1.0


def test_a_move_beyond_the_doubles_gives_an_infinite_log_return_without_a_warning():
    # 1e300 / 1e-300 overflows: the ratio is inf, so is its log (IEEE), and no numpy
    # overflow warning escapes (the suite turns warnings into errors).
    out = compute_features(make_bars("X", [1e-300] * 5 + [1e300] * 5))
    assert out["log_return"].to_list() == [None, 0.0, 0.0, 0.0, 0.0, math.inf, 0.0, 0.0,
                                           0.0, 0.0]


# --- independent reference ---------------------------------------------------------------------


def _seeded_ema(x: np.ndarray, n: int, first: int, step) -> np.ndarray:
    out = np.full(len(x), np.nan)
    seed_row = first + n - 1
    if len(x) <= seed_row:
        return out
    value = sum(x[first : seed_row + 1]) / n
    out[seed_row] = value
    for k in range(seed_row + 1, len(x)):
        value = step(value, x[k])
        out[k] = value
    return out


def _window(x: np.ndarray, n: int, fn) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for k in range(n - 1, len(x)):
        out[k] = fn(x[k - n + 1 : k + 1])
    return out


def reference_features(bars: pl.DataFrame) -> pl.DataFrame:
    """The docstring's definitions, one group and one row at a time."""
    pieces = []
    for _, group in bars.sort("symbol", "timeframe", "ts").group_by(
        "symbol", "timeframe", maintain_order=True
    ):
        c, h, lo, v = (group[name].to_numpy().astype(float) for name in ("close", "high", "low",
                                                                           "volume"))
        n = len(c)
        f: dict[str, np.ndarray] = {}
        f["log_return"] = np.array([np.nan] + [math.log(c[k] / c[k - 1]) for k in range(1, n)])
        for w in (20, 50, 200):
            f[f"ma{w}"] = _window(c, w, lambda s: sum(s) / len(s))
        f["volatility_20d"] = np.full(n, np.nan)
        per_year = {"1d": 252, "1h": 252 * 6.5}[group["timeframe"][0]]  # US stocks
        for k in range(20, n):
            f["volatility_20d"][k] = statistics.stdev(f["log_return"][k - 19 : k + 1]) * math.sqrt(
                per_year
            )

        def ema_step(alpha):
            return lambda prev, x: alpha * x + (1 - alpha) * prev

        def wilder_step(prev, x):
            return (prev * 13 + x) / 14

        f["ema12"] = _seeded_ema(c, 12, 0, ema_step(2 / 13))
        f["ema26"] = _seeded_ema(c, 26, 0, ema_step(2 / 27))
        f["macd"] = f["ema12"] - f["ema26"]
        f["macd_signal"] = _seeded_ema(f["macd"], 9, 25, ema_step(0.2))

        d = np.array([np.nan] + [c[k] - c[k - 1] for k in range(1, n)])
        avg_gain = _seeded_ema(np.maximum(d, 0), 14, 1, wilder_step)
        avg_loss = _seeded_ema(np.maximum(-d, 0), 14, 1, wilder_step)
        rsi = np.full(n, np.nan)
        for k in range(14, n):
            g, lo_ = avg_gain[k], avg_loss[k]
            rsi[k] = 100 - 100 / (1 + g / lo_) if lo_ > 0 else (100.0 if g > 0 else 50.0)
        f["rsi14"] = rsi

        tr = np.array(
            [h[0] - lo[0]]
            + [max(h[k] - lo[k], abs(h[k] - c[k - 1]), abs(lo[k] - c[k - 1])) for k in range(1, n)]
        )
        f["atr14"] = _seeded_ema(tr, 14, 0, wilder_step)

        std0 = _window(c, 20, lambda s: statistics.pstdev(s))
        f["bb_upper"] = f["ma20"] + 2 * std0
        f["bb_lower"] = f["ma20"] - 2 * std0

        def zscore(s):  # the last of 21 volumes against the 20 before it
            before = s[:-1]
            if np.isnan(s).any() or len(set(before)) == 1:
                return np.nan
            return (s[-1] - statistics.fmean(before)) / statistics.stdev(before)

        f["volume_z20"] = _window(v, 21, zscore)
        ts = group["ts"].to_list()
        year = dt.timedelta(days=364)
        high_52w, low_52w = np.full(n, np.nan), np.full(n, np.nan)
        for k in range(n):
            if ts[k] - ts[0] >= year:
                inside = [j for j in range(k + 1) if ts[j] > ts[k] - year]
                high_52w[k], low_52w[k] = max(h[inside]), min(lo[inside])
        f["high_52w_dist"] = c / high_52w - 1
        f["low_52w_dist"] = c / low_52w - 1
        f["tr_close"] = c.copy()

        keys = group.select("symbol", "timeframe", "ts", "session")
        values = pl.DataFrame({name: f[name] for name in FEATURE_COLUMNS}).fill_nan(None)
        pieces.append(pl.concat([keys, values], how="horizontal"))
    return pl.concat(pieces)


def test_matches_an_independent_implementation_on_random_walks():
    frames = [
        random_walk("AAA", 900, 41),
        random_walk("BBB", 700, 42),
        random_walk("CCC", 300, 43, timeframe="1h", step=dt.timedelta(hours=1)),
        random_walk("CCC", 600, 44),
        random_walk("DDD", 30, 45),  # too short for most windows
    ]
    # A stretch of flat prices and volumes (RSI 50, null z-scores) at the start of one symbol.
    flat = random_walk("EEE", 500, 46).with_row_index()
    flat = flat.with_columns(
        *(
            pl.when(pl.col("index") < 40).then(77.0).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        ),
        pl.when(pl.col("index") < 40).then(1e6).otherwise(pl.col("volume")).alias("volume"),
    ).drop("index")
    # Mixed scales: one symbol priced in the hundred-thousands, another in cents.
    big = random_walk("FFF", 400, 47).with_columns(pl.col("open", "high", "low", "close") * 5000)
    tiny = random_walk("GGG", 400, 48).with_columns(pl.col("open", "high", "low", "close") / 2000)
    bars = pl.concat([*frames, flat, big, tiny]).sample(fraction=1.0, shuffle=True, seed=9)
    assert bars.height > 3000

    got = compute_features(bars)
    expected = reference_features(bars)
    assert got.height == expected.height
    assert_frame_equal(
        got.select("symbol", "timeframe", "ts", "session"),
        expected.select("symbol", "timeframe", "ts", "session"),
    )
    assert column(got.filter(pl.col("symbol") == "EEE"), "rsi14")[14:40] == [50.0] * 26
    # Prices are compared relative to the bar's close (a MACD near zero still has to be right to
    # 1e-9 of the price), dimensionless features relative to max(1, |value|).
    close = bars.sort("symbol", "timeframe", "ts")["close"].to_numpy()
    for name in FEATURE_COLUMNS:
        a, b = got[name], expected[name]
        assert (a.is_null() == b.is_null()).all(), name
        both = a.is_not_null().to_numpy()
        a, b = a.to_numpy()[both], b.to_numpy()[both]
        floor = close[both] if name in PRICE_VALUED else 1.0
        scaled = np.abs(a - b) / np.maximum(floor, np.abs(b))
        assert scaled.max(initial=0.0) <= 1e-9, (name, scaled.max())


def test_a_value_the_arithmetic_leaves_undefined_is_null_not_nan():
    # Two zero closes in a row: log(0 / 0) is NaN, which the output holds as a null.
    closes = [10.0] * 30 + [0.0, 0.0, 5.0]
    out = compute_features(make_bars("X", closes, lows=[min(c, 9.0) for c in closes]))
    log_return = out["log_return"]
    assert log_return[31] is None  # 0 / 0
    assert log_return[30] == -math.inf and log_return[32] == math.inf
    for name in FEATURE_COLUMNS:
        assert not out[name].is_nan().any(), name
