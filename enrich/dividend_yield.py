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
  early-exercise premium (``enrich.american``), which the caller supplies. Expirations closer
  than ``PARITY_MIN_DAYS`` take the parity yield of the session's nearest expiration that has
  one (``enrich.snapshots``): a cent of quote noise moves ``q`` by ``0.01 / (S t)``.
"""

from __future__ import annotations

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
    days = frame.select(pl.col(date).unique().drop_nulls().sort())
    if paid.is_empty() or days.is_empty():
        cash = days.with_columns(_cash=pl.lit(0.0))
    else:
        pairs = days.join(paid, how="cross").filter(
            (pl.col("ex_date") <= pl.col(date))
            & (pl.col("ex_date") > pl.col(date).dt.offset_by("-1y")))
        factor = pl.lit(1.0)
        for e, s_from, s_to in _splits(splits):
            moved = (pl.col("ex_date") < e) & (pl.lit(e) <= pl.col(date))
            factor = factor * pl.when(moved).then(s_from / s_to).otherwise(1.0)
        cash = pairs.group_by(date).agg((pl.col("cash_amount") * factor).sum().alias("_cash"))
        cash = days.join(cash, on=date, how="left").with_columns(pl.col("_cash").fill_null(0.0))
    price = pl.col(close).cast(pl.Float64)
    out = frame.join(cash, on=date, how="left", maintain_order="left")
    usable = ((price > 0) & pl.col(date).is_not_null()).fill_null(False)
    return out.with_columns(
        dividend_yield=pl.when(usable).then((pl.col("_cash").fill_null(0.0) / price).log1p()),
        dividend_method=pl.when(~usable).then(None)
        .when(pl.col("_cash").fill_null(0.0) > 0).then(pl.lit(TRAILING)).otherwise(pl.lit(NONE)),
    ).drop("_cash")


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
    forward = float(np.median(forwards))
    if not forward > 0:
        return None
    q = r - math.log(forward / spot) / t
    lo, hi = PARITY_RANGE
    return q if lo < q < hi else None
