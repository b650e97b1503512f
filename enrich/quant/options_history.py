"""Options IV history: which contracts to follow on each session, and their implied volatility.

A history is built per underlying and session (``enrich.backfill.jobs`` does the fetching):

1. the contracts listed on the session (``provider.option_contracts(underlying, as_of)``);
2. ``choose_contracts`` keeps the chosen expirations (given dates, or the next ``monthly``
   monthly expirations after the session) and the strikes within a moneyness band
   ``lo <= strike / close <= hi`` of the underlying's **as-traded** close that session;
3. each chosen contract's daily bars (``provider.option_bars``), fetched once for the
   sessions it was chosen on;
4. ``history_iv`` solves implied volatility and greeks from each option close
   (``enrich.quant.snapshots.solve``: ACT/365 time; ``r`` the session's Treasury curve to the
   expiry, ``enrich.quant.rates``; ``q`` the trailing twelve months' regular dividends on the
   session's share basis, ``enrich.quant.dividend_yield``; American exercise unless the listing
   says European, ``enrich.quant.american``) and returns ``options_iv`` rows with
   ``source = 'computed'`` and ``price_source = 'close'``.

As-traded prices. Stored bars are split-adjusted (``adjusted_asof`` says as of when), while
an option's strike and price are those of its own day. ``as_traded_closes`` undoes the splits
executed after each session, so a strike is compared with the price it was listed against.

Nulls. ``iv`` is null with ``iv_null_reason`` set where it cannot be stated: the solver's
reasons (``enrich.quant.iv.NullReason`` labels, e.g. ``below_intrinsic``,
``time_value_below_resolution``), and two of ours: ``no_trade`` (the contract has no bar that
session) and ``no_underlying_close`` (no stored bar of the underlying that session).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl

from enrich import columns
from enrich.quant.snapshots import CLOSE, flag_adjusted, solve
from enrich.schemas import OPTIONS_IV, UTC_TS, conform

DEFAULT_MONEYNESS = (0.8, 1.2)
DEFAULT_MONTHLY = 3  # monthly expirations followed when none are given

# What ``choose_contracts`` returns (and ``backfill_contracts`` stores).
PAIR_SCHEMA = {
    "symbol": pl.String,  # the underlying
    "as_of": pl.Date,
    "contract": pl.String,
    "expiration": pl.Date,
    "strike": pl.Float64,
    "contract_type": pl.String,
    "underlying_price": pl.Float64,  # as-traded close the band was measured on
    "exercise_style": pl.String,  # american | european (null: not given, taken as american)
}


def third_friday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)


def is_monthly(expiration: dt.date) -> bool:
    """The standard monthly expiration: the third Friday, or the Thursday before it when that
    Friday is an exchange holiday (Good Friday)."""
    return 0 <= (third_friday(expiration.year, expiration.month) - expiration).days <= 1


def monthly_horizon(as_of: dt.date, n: int) -> dt.date:
    """The ``n``-th standard monthly expiration after ``as_of`` (its third Friday): a listing
    reaching that far holds every monthly ``choose_contracts`` can pick (on the Thursday
    before a third Friday, which may be the month's expiration, the count starts a month on:
    one more monthly listed, none missed)."""
    month = as_of.year * 12 + as_of.month - 1
    if third_friday(as_of.year, as_of.month) - dt.timedelta(days=1) <= as_of:
        month += 1
    month += n - 1
    return third_friday(month // 12, month % 12 + 1)


def as_traded_closes(bars: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    """``session, close`` on each session's own share basis.

    A stored close is on the basis of every split executed up to its ``adjusted_asof``; the
    splits executed after the session (and up to that date) are undone: the close is
    multiplied by ``split_to / split_from`` of each. Bars without ``adjusted_asof`` are taken
    as already as traded.
    """
    # numpy over the columns (``enrich.columns``): the engine asks one session's close,
    # where each polars query would cost more than the arithmetic. A null date compares
    # false, as polars' null condition takes the ``otherwise`` branch.
    session, _ = columns.values(bars.get_column("session"))
    asof, _ = columns.values(bars.get_column("adjusted_asof"))
    factor = np.ones(bars.height)
    for e, s_from, s_to in zip(*(splits.get_column(c).to_list() for c in (
            "execution_date", "split_from", "split_to")), strict=True):
        if not s_from or not s_to or e is None:
            continue
        day = columns.day(e)
        factor = factor * np.where((session < day) & (asof >= day), s_to / s_from, 1.0)
    close, missing = columns.values(bars.get_column("close"))
    adjusted = pl.Series("close", close * factor)  # a NaN close or ratio stays NaN
    if missing.any():  # null where the close is
        adjusted = adjusted.zip_with(pl.Series(~missing), pl.Series([None], dtype=pl.Float64)
                                     .new_from_index(0, bars.height))
    out = pl.DataFrame([bars.get_column("session"), adjusted])
    if bars.height > 1 and not (np.diff(session) > 0).all():  # else in order, no repeat
        out = out.unique("session", keep="last").sort("session")
    return out


def choose_contracts(
    listed: pl.DataFrame, underlying: str, as_of: dt.date, close: float | None, *,
    expirations: Sequence[dt.date] = (), monthly: int = DEFAULT_MONTHLY,
    moneyness: tuple[float, float] = DEFAULT_MONEYNESS,
) -> pl.DataFrame:
    """The contracts of ``listed`` followed on ``as_of`` (``PAIR_SCHEMA``).

    ``listed`` has ``contract, expiration, strike, contract_type`` and the contract's terms
    (what ``option_contracts`` returns). Expirations after ``as_of`` only: the given ones, or
    else the first ``monthly`` monthly ones (``is_monthly``). Strikes with
    ``moneyness[0] <= strike / close <= moneyness[1]``; nothing without a positive close.
    Adjusted contracts (``enrich.quant.snapshots.flag_adjusted``) are not followed: their IV would
    not be stated anyway.
    """
    if listed.is_empty() or close is None or not close > 0:
        return pl.DataFrame(schema=PAIR_SCHEMA)
    lo, hi = moneyness
    if "exercise_style" not in listed.columns:
        listed = listed.with_columns(exercise_style=pl.lit(None, pl.String))
    live = flag_adjusted(listed.with_columns(symbol=pl.lit(underlying))).filter(
        pl.col("expiration") > as_of, pl.col("contract_type").is_in(["call", "put"]),
        ~pl.col("adjusted"))
    if expirations:
        wanted = sorted(set(expirations))
    else:
        dates = live["expiration"].unique().sort().to_list()
        wanted = [e for e in dates if is_monthly(e)][:monthly]
    chosen = live.filter(
        pl.col("expiration").is_in(wanted),
        (pl.col("strike") / close).is_between(lo, hi),
    )
    return chosen.select(
        pl.lit(underlying, pl.String).alias("symbol"),
        pl.lit(as_of, pl.Date).alias("as_of"),
        pl.col("contract").cast(pl.String),
        pl.col("expiration").cast(pl.Date),
        pl.col("strike").cast(pl.Float64),
        pl.col("contract_type").cast(pl.String),
        pl.lit(float(close), pl.Float64).alias("underlying_price"),
        pl.col("exercise_style").cast(pl.String),
    ).unique("contract", keep="first").sort("expiration", "strike", "contract_type")


def history_iv(
    pairs: pl.DataFrame, option_bars: pl.DataFrame, closes: pl.DataFrame,
    dividends: pl.DataFrame, splits: pl.DataFrame, curves: pl.DataFrame, fallback_rate: float,
) -> pl.DataFrame:
    """``options_iv`` rows (``source='computed'``) for every (as_of, contract) of ``pairs``.

    ``option_bars`` are the contracts' daily bars (``symbol`` is the OCC ticker, ``close``
    the option price, ``volume`` the session's); ``closes`` are the underlying's as-traded
    ``session, close``; ``dividends`` and ``splits`` its stored ones (for ``q``); ``curves``
    the stored Treasury curves (``r``, with ``fallback_rate`` where none). A pair without an
    option bar gets ``no_trade``, one without an underlying close ``no_underlying_close``.
    """
    if pairs.is_empty():
        return OPTIONS_IV.empty()
    prices = option_bars.select(
        pl.col("symbol").alias("contract"), pl.col("session").alias("as_of"),
        pl.col("close").alias("option_price"),
        (pl.col("volume") if "volume" in option_bars.columns else pl.lit(None))
        .cast(pl.Float64).alias("volume"),
    ).unique(["contract", "as_of"], keep="last")
    spot = closes.select(pl.col("session").alias("as_of"), pl.col("close").alias("_spot"))
    frame = (
        pairs.drop("underlying_price", strict=False)
        .join(prices, on=["contract", "as_of"], how="left")
        .join(spot, on="as_of", how="left")
        .rename({"_spot": "underlying_price"})
        .with_columns(
            trade_price=pl.col("option_price"),
            trade_at=pl.lit(None, UTC_TS),  # a daily close: the time of the last trade is unknown
            price_source=pl.when(pl.col("option_price").is_not_null()).then(pl.lit(CLOSE)),
            adjusted=pl.lit(False),
            source=pl.lit("computed"),
        )
    )
    solved = solve(conform(frame, OPTIONS_IV), curves=curves, dividends=dividends,
                   splits=splits, fallback_rate=fallback_rate, parity=False)
    solved = solved.with_columns(
        iv_null_reason=pl.when(pl.col("underlying_price").is_null())
        .then(pl.lit("no_underlying_close"))
        .when(pl.col("option_price").is_null()).then(pl.lit("no_trade"))
        .otherwise(pl.col("iv_null_reason")),
    )
    return solved.sort("as_of", "contract")
