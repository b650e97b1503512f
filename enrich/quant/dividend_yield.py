"""The dividend yield ``q`` an option model takes, and how it was found.

Two methods, recorded per row in ``dividend_method``:

- ``trailing_12m`` (:func:`trailing_yield`): the regular cash dividends with an ex-date in
  ``(D - 1 year, D]``, each put on session ``D``'s share basis (divided by the ratio
  ``split_to / split_from`` of every split executed after its ex-date and on or before ``D``),
  over ``D``'s close on that same basis, as a continuous rate ``q = ln(1 + cash / close)``.
  Regular means ``distribution_type = 'recurring'`` (or no type given and a frequency that is
  not zero): special, supplemental, irregular and unclassified (``unknown``) distributions,
  and returns of capital, are one-offs the next twelve months will not repeat. ``none``
  (``q = 0``) when no regular dividend was paid.
- ``parity`` (:func:`parity_yield`): the forward implied by put–call parity where both sides
  quote, per expiration: ``F = K + e^{rt} (C - P)`` at the (up to three) strikes where the
  call and the put are closest in price, the median of those, and
  ``q = r - ln(F / S) / t``. American prices are first reduced to European ones by their
  early-exercise premium (``enrich.quant.american``), which the caller supplies. Expirations closer
  than ``PARITY_MIN_DAYS`` take the parity yield of the session's nearest expiration that has
  one (``enrich.quant.snapshots``): a cent of quote noise moves ``q`` by ``0.01 / (S t)``.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl

TRAILING = "trailing_12m"
PARITY = "parity"
NONE = "none"
PARITY_MIN_DAYS = 7
PARITY_STRIKES = 3
# A parity yield outside this range says more about stale quotes than about dividends (hard-
# to-borrow names show as a high q, which is right, and stays well inside).
PARITY_RANGE = (-0.5, 1.0)


def regular(dividends: pl.DataFrame) -> pl.DataFrame:
    """The regular cash dividends (``ex_date, cash_amount``) of ``dividends``."""
    kind = pl.col("distribution_type") if "distribution_type" in dividends.columns \
        else pl.lit(None, pl.String)
    freq = pl.col("frequency") if "frequency" in dividends.columns else pl.lit(None, pl.Int32)
    keep = (kind == "recurring") | (kind.is_null() & (freq.is_null() | (freq > 0)))
    return dividends.filter(keep & pl.col("ex_date").is_not_null()
                            & (pl.col("cash_amount") > 0))


def trailing_yield(dividends: pl.DataFrame, splits: pl.DataFrame, frame: pl.DataFrame, *,
                   date: str = "as_of", close: str = "underlying_price") -> pl.DataFrame:
    """``frame`` with ``dividend_yield`` and ``dividend_method`` (see the module docstring).

    ``dividends``: one symbol's stored rows (as declared: per share of their day). ``splits``:
    its stored splits. ``close``: the price on session ``date``'s own share basis. The yield
    is null where the close is missing or not positive. Row order is kept."""
    paid = regular(dividends).select("ex_date", pl.col("cash_amount").cast(pl.Float64))
    # Plain Python over the few (day, dividend, split) triples: a chain has one day, a symbol
    # a few dozen dividends, and polars' joins cost more than the arithmetic here.
    moves = _splits(splits)
    ex_dates, amounts = paid["ex_date"].to_list(), paid["cash_amount"].to_list()
    day_list = frame[date].to_list()
    on_day: dict[dt.date, float] = {}
    for day in set(day_list) - {None}:
        start = _year_before(day)
        total = 0.0
        for ex, amount in zip(ex_dates, amounts, strict=True):
            if not start < ex <= day:
                continue
            factor = 1.0
            for e, s_from, s_to in moves:
                factor = factor * (s_from / s_to if ex < e <= day else 1.0)
            total += amount * factor
        on_day[day] = total
    cash = pl.Series("_cash", [on_day.get(day, 0.0) for day in day_list], dtype=pl.Float64)
    price = pl.col(close).cast(pl.Float64)
    usable = ((price > 0) & pl.col(date).is_not_null()).fill_null(False)
    return frame.lazy().with_columns(cash).with_columns(
        dividend_yield=pl.when(usable).then((pl.col("_cash") / price).log1p()),
        dividend_method=pl.when(~usable).then(None)
        .when(pl.col("_cash") > 0).then(pl.lit(TRAILING)).otherwise(pl.lit(NONE)),
    ).drop("_cash").collect()


def _year_before(day: dt.date) -> dt.date:
    """``day`` a calendar year earlier (29 February to 28 February), as polars' ``-1y``."""
    try:
        return day.replace(year=day.year - 1)
    except ValueError:
        return day.replace(year=day.year - 1, day=28)


def _splits(splits: pl.DataFrame) -> list[tuple]:
    if splits.is_empty():
        return []
    rows = splits.select("execution_date", "split_from", "split_to").drop_nulls().rows()
    return [(e, float(f), float(t)) for e, f, t in rows if f > 0 and t > 0]


def parity_yield(spot: float, t: float, r: float, strikes: np.ndarray, call: np.ndarray,
                 put: np.ndarray) -> float | None:
    """The continuous yield implied by put–call parity for one expiration, or None.

    ``call`` and ``put`` are European-equivalent prices (NaN where that side has no usable
    quote) at ``strikes``; ``t`` in years, ``r`` continuous."""
    if not (spot > 0 and t * 365.0 >= PARITY_MIN_DAYS - 1e-9 and math.isfinite(r)):
        return None
    both = np.isfinite(call) & np.isfinite(put) & (strikes > 0)
    if not both.any():
        return None
    k, c, p = strikes[both], call[both], put[both]
    nearest = np.argsort(np.abs(c - p), kind="stable")[:PARITY_STRIKES]
    forwards = k[nearest] + math.exp(r * t) * (c[nearest] - p[nearest])
    forwards.sort()  # the median, without np.median's cost on three numbers
    mid = forwards.size // 2
    forward = float(forwards[mid] if forwards.size % 2 else (forwards[mid - 1] + forwards[mid]) / 2)
    if not forward > 0:
        return None
    q = r - math.log(forward / spot) / t
    lo, hi = PARITY_RANGE
    return q if lo < q < hi else None
