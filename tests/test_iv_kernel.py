"""The compiled solver against what the vectorised numpy solver returned before it
(``tests/golden/iv_before_kernel.parquet``, written by ``tests/golden/make_iv_golden.py`` at
commit f62721f): the same nulls, and IVs within 1e-10 (bit for bit on the machine that wrote
it: the kernel calls scipy's own ndtr), on sample-provider chains of four rate regimes, a wide
European grid and a listed-style American grid."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from enrich import calendars
from enrich.providers.sample.provider import SampleProvider
from enrich.quant.american import american_iv_greeks, early_exercise_premium
from enrich.quant.bsm import price_and_greeks
from enrich.quant.iv import NullReason, compute_iv_greeks
from enrich.quant.snapshots import price_chain
from enrich.schemas import DIVIDENDS, SPLITS
from enrich.symbols import DEMO_UNIVERSE

GOLDEN = Path(__file__).parent / "golden" / "iv_before_kernel.parquet"
IV_AGREE = 1e-10
# Sessions with near-zero, middling, high and recent rates.
DAYS = (dt.date(2012, 6, 18), dt.date(2019, 3, 15), dt.date(2023, 10, 16),
        dt.date(2025, 6, 18))
SYMBOLS = 8


def priced_chains() -> pl.DataFrame:
    """``price_chain`` on the first ``SYMBOLS`` optionable sample symbols' chains of ``DAYS``,
    each snapshot taken after its session's close."""
    out = []
    for day in DAYS:
        now = calendars.session_close_utc("XNYS", day) + dt.timedelta(hours=2)
        p = SampleProvider(clock=lambda now=now: now)
        curves = p.treasury_yields(day - dt.timedelta(days=10), day)
        taken = 0
        for sym in (s.symbol for s in DEMO_UNIVERSE):
            chain = p.option_chain(sym, day)
            if chain.is_empty() or taken == SYMBOLS:
                continue
            taken += 1
            out.append(price_chain(
                chain, curves=curves, dividends=DIVIDENDS.empty(), splits=SPLITS.empty(),
                fallback_rate=0.04, session_open=calendars.session_open_utc("XNYS", day),
                session_close=calendars.session_close_utc("XNYS", day), snapshot_at=now))
    return pl.concat(out)


def european_grid(n: int = 6000, seed: int = 11) -> dict[str, np.ndarray]:
    """BSM prices on a wide grid (moneyness 0.5-2, 1 day-3 years, vol 1-300 %), with bad
    inputs sprinkled in (NaN, zero, expired, above the upper bound, below intrinsic)."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(5.0, 500.0, n)
    k = s / np.exp(rng.uniform(math.log(0.5), math.log(2.0), n))
    t = np.exp(rng.uniform(math.log(1 / 365), math.log(3.0), n))
    sigma = np.exp(rng.uniform(math.log(0.01), math.log(3.0), n))
    r = rng.uniform(-0.01, 0.06, n)
    q = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0.0, 0.05, n))
    is_call = rng.random(n) < 0.5
    price = price_and_greeks(s, k, t, r, q, sigma, is_call)["price"]
    bad = rng.integers(0, 60, n)
    price = np.where(bad == 0, np.nan, price)
    price = np.where(bad == 1, 0.0, price)
    t = np.where(bad == 2, 0.0, t)
    price = np.where(bad == 3, np.where(is_call, s, k) * 1.01, price)
    price = np.where(bad == 4, price * 0.5, price)
    return {"price": price, "s": s, "k": k, "t": t, "r": r, "q": q, "is_call": is_call}


def american_grid(n: int = 3000, seed: int = 13) -> dict[str, np.ndarray]:
    """American prices as listed (r 0-5.5 %, q 0 or 0-3 %, 1 week-1 year, strikes within
    2.5 standard deviations, vol 12-60 %) from BSM plus the 101-step premium, some at the
    value of exercising now."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(20.0, 400.0, n)
    t = np.exp(rng.uniform(math.log(7 / 365), math.log(1.0), n))
    sigma = rng.uniform(0.12, 0.6, n)
    r = rng.uniform(0.0, 0.055, n)
    q = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0.0, 0.03, n))
    is_call = rng.random(n) < 0.5
    fwd = s * np.exp((r - q) * t)
    k = fwd * np.exp(rng.uniform(-2.5, 2.5, n) * sigma * np.sqrt(t))
    euro = price_and_greeks(s, k, t, r, q, sigma, is_call)["price"]
    eep = early_exercise_premium(s, k, t, r, q, sigma, is_call)
    now = np.where(is_call, s - k, k - s)
    price = np.maximum(euro + eep, now)
    price = np.where(rng.random(n) < 0.02, np.maximum(now, 0.01), price)
    return {"price": price, "s": s, "k": k, "t": t, "r": r, "q": q, "is_call": is_call}


@pytest.fixture(scope="module")
def golden() -> pl.DataFrame:
    return pl.read_parquet(GOLDEN)


def _agree(new: np.ndarray, old: np.ndarray, tol: float) -> None:
    assert np.array_equal(np.isnan(new), np.isnan(old))
    both = ~np.isnan(old)
    assert both.sum() > 0
    assert np.max(np.abs(new[both] - old[both])) <= tol


def test_european_grid_matches_the_numpy_solver(golden):
    old = golden.filter(pl.col("part") == "european")
    g = european_grid()
    res = compute_iv_greeks(**g)
    assert np.array_equal(res["reason"], old["reason"].to_numpy())
    _agree(res["iv"], old["iv"].to_numpy(), IV_AGREE)
    _agree(res["delta"], old["delta"].to_numpy(), 1e-9)
    codes = set(res["reason"].tolist())
    assert {NullReason.NONE, NullReason.MISSING_INPUT, NullReason.EXPIRED,
            NullReason.AT_OR_ABOVE_UPPER_BOUND, NullReason.BELOW_INTRINSIC} <= codes


def test_american_grid_matches_the_numpy_solver(golden):
    old = golden.filter(pl.col("part") == "american")
    res = american_iv_greeks(**american_grid())
    assert np.array_equal(res["reason"], old["reason"].to_numpy())
    _agree(res["iv"], old["iv"].to_numpy(), IV_AGREE)
    _agree(res["eep"], old["eep"].to_numpy(), 1e-9)  # dollars, on prices of 20-400
    assert NullReason.EARLY_EXERCISE in set(res["reason"].tolist())


def test_sample_chains_match_the_numpy_solver(golden):
    old = golden.filter(pl.col("part") == "chain")
    new = priced_chains()
    joined = old.join(new, on=["symbol", "as_of", "contract"], how="full", suffix="_new")
    assert joined.height == old.height == new.height
    assert joined["iv_null_reason"].equals(joined["iv_null_reason_new"])
    for col, tol in (("iv", IV_AGREE), ("dividend_yield", 1e-10), ("delta", 1e-9)):
        _agree(joined[f"{col}_new"].fill_null(np.nan).to_numpy(),
               joined[col].fill_null(np.nan).to_numpy(), tol)
