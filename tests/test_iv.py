from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from enrich.quant.bsm import price_and_greeks, to_market_units
from enrich.quant.iv import (
    GREEKS,
    NullReason,
    chain_iv,
    compute_iv_greeks,
    implied_vol,
    reason_labels,
    vol_resolution,
)
from enrich.schemas import OPTIONS_IV

TOL = 1e-8


def grid(r: float = 0.05):
    """The acceptance grid: moneyness s/k 0.5-2, 1 day-3 years, vol 1%-300%, calls and puts,
    q = 0 and q > 0; log-spaced so every corner is represented."""
    m = np.geomspace(0.5, 2.0, 25)
    t = np.geomspace(1 / 365, 3.0, 21)
    vol = np.geomspace(0.01, 3.0, 25)
    mm, tt, vv, cc, qq = np.meshgrid(m, t, vol, [True, False], [0.0, 0.03], indexing="ij")
    s = 100.0
    k = s / mm.ravel()
    tt, vv, cc, qq = tt.ravel(), vv.ravel(), cc.ravel(), qq.ravel()
    price = price_and_greeks(s, k, tt, r, qq, vv, cc)["price"]
    return {"price": price, "s": s, "k": k, "t": tt, "r": r, "q": qq, "is_call": cc}, vv


def standard_deviations(g, sigma):
    """|ln(F/K)| in units of sigma sqrt(t): how far from the forward a strike sits."""
    x = np.log(g["s"] / g["k"]) + (g["r"] - g["q"]) * g["t"]
    return np.abs(x) / (sigma * np.sqrt(g["t"])), x


@pytest.mark.parametrize("r", [0.05, 0.0])
def test_round_trip_grid(r):
    g, sigma = grid(r)
    res = compute_iv_greeks(**g)
    iv, reason = res["iv"], res["reason"]
    solved = reason == 0

    # Every volatility returned is right to 1e-8, and within the error model's own bound.
    err = np.abs(iv[solved] - sigma[solved])
    assert err.max() <= TOL
    claimed = vol_resolution(g["price"], g["s"], g["k"], g["t"], g["r"], g["q"], iv, g["is_call"])
    assert np.all(err <= claimed[solved])
    assert np.all(claimed[solved] <= TOL)

    # Every null is NaN with a reason, greeks included.
    assert np.all(np.isnan(iv[~solved]))
    assert np.all(reason[~solved] > 0)
    for name in GREEKS:
        assert np.all(np.isnan(res[name][~solved]))
        assert np.all(np.isfinite(res[name][solved]))

    # Wherever the price clearly carries the vol (criterion at the true sigma), it is solved;
    # wherever it clearly does not, it is null.
    truth = vol_resolution(g["price"], g["s"], g["k"], g["t"], g["r"], g["q"], sigma, g["is_call"])
    assert np.all(solved[truth <= TOL / 2])
    assert not np.any(solved[~(truth <= 2 * TOL)])

    # Nulls are few and sit in the corners: none within 4 standard deviations of the forward;
    # out-of-the-money ones only where the price has all but underflowed (beyond 30).
    z, x = standard_deviations(g, sigma)
    itm = np.where(g["is_call"], x > 0, x < 0)
    assert not np.any(~solved & (z <= 4.0))
    assert np.all(z[~solved & ~itm] > 30.0)
    assert np.all(g["price"][~solved & ~itm] < 1e-180)
    assert (~solved).mean() < 0.4  # ~35% on this log grid, all of it beyond 4 sd


def test_unresolvable_are_short_dated_low_vol_corners():
    g, sigma = grid()
    reason = implied_vol(**g).reason
    null = reason != 0
    total_vol = sigma * np.sqrt(g["t"])
    # Nulls have small total volatility relative to the grid (short expiry x low vol).
    assert np.median(total_vol[null]) < 0.2 * np.median(total_vol[~null])
    assert set(np.unique(reason[null])) <= {
        NullReason.NON_POSITIVE_INPUT, NullReason.TIME_VALUE_BELOW_RESOLUTION
    }


def test_random_round_trip_with_negative_rates_and_high_dividends():
    rng = np.random.default_rng(11)
    n = 200_000
    s = rng.uniform(1.0, 1000.0, n)
    k = s * np.exp(rng.uniform(-0.7, 0.7, n))
    t = np.exp(rng.uniform(math.log(1 / 365), math.log(3.0), n))
    sigma = np.exp(rng.uniform(math.log(0.01), math.log(3.0), n))
    r = rng.uniform(-0.01, 0.08, n)
    q = rng.uniform(0.0, 0.1, n)
    call = rng.random(n) < 0.5
    price = price_and_greeks(s, k, t, r, q, sigma, call)["price"]
    iv, reason = implied_vol(price, s, k, t, r, q, call)
    solved = reason == 0
    assert np.abs(iv[solved] - sigma[solved]).max() <= TOL
    assert solved.mean() > 0.6


def test_put_call_parity_gives_one_vol():
    k = np.linspace(60.0, 160.0, 41)
    args = dict(s=100.0, k=k, t=0.5, r=0.03, q=0.01)
    sigma = 0.25 + 0.1 * ((k - 100.0) / 100.0) ** 2  # a smile
    call = price_and_greeks(**args, sigma=sigma, is_call=True)["price"]
    put = price_and_greeks(**args, sigma=sigma, is_call=False)["price"]
    iv_call = implied_vol(call, **args, is_call=True).iv
    iv_put = implied_vol(put, **args, is_call=False).iv
    np.testing.assert_allclose(iv_call, sigma, rtol=0, atol=TOL)
    np.testing.assert_allclose(iv_put, iv_call, rtol=0, atol=TOL)


S, K, T, R, Q = 100.0, 90.0, 0.5, 0.05, 0.02
SP, KP = S * math.exp(-Q * T), K * math.exp(-R * T)
KP_110 = 110.0 * math.exp(-R * T)


@pytest.mark.parametrize(
    "price, is_call, s, k, t, expected",
    [
        (SP - KP - 0.01, True, S, K, T, NullReason.BELOW_INTRINSIC),
        (KP_110 - SP - 0.01, False, S, 110.0, T, NullReason.BELOW_INTRINSIC),
        (SP, True, S, K, T, NullReason.AT_OR_ABOVE_UPPER_BOUND),
        (SP + 5.0, True, S, K, T, NullReason.AT_OR_ABOVE_UPPER_BOUND),
        (KP, False, S, K, T, NullReason.AT_OR_ABOVE_UPPER_BOUND),
        (SP - KP, True, S, K, T, NullReason.TIME_VALUE_BELOW_RESOLUTION),  # no time value
        (0.0, True, S, K, T, NullReason.NON_POSITIVE_INPUT),
        (-1.0, False, S, K, T, NullReason.NON_POSITIVE_INPUT),
        (5.0, True, 0.0, K, T, NullReason.NON_POSITIVE_INPUT),
        (5.0, True, S, -1.0, T, NullReason.NON_POSITIVE_INPUT),
        (5.0, True, S, K, 0.0, NullReason.EXPIRED),
        (5.0, True, S, K, -0.1, NullReason.EXPIRED),
        (float("nan"), True, S, K, T, NullReason.MISSING_INPUT),
        (5.0, True, float("inf"), K, T, NullReason.MISSING_INPUT),
    ],
)
def test_prices_outside_bounds_are_null_with_reason(price, is_call, s, k, t, expected):
    res = compute_iv_greeks(price, s, k, t, R, Q, is_call)
    assert int(res["reason"]) == expected
    assert math.isnan(res["iv"]) and all(math.isnan(res[g]) for g in GREEKS)


@pytest.mark.parametrize("is_call", [True, False])
@pytest.mark.parametrize("t, sigma", [(3.0, 2.5), (3.0, 4.0), (0.5, 0.05), (7 / 365, 0.3)])
def test_near_the_bounds_is_solved(is_call, t, sigma):
    # High total vol: 5 cents under the upper bound; low: under a cent over intrinsic.
    price = float(price_and_greeks(S, K, t, R, Q, sigma, is_call)["price"])
    iv = implied_vol(price, S, K, t, R, Q, is_call).iv
    assert abs(iv - sigma) <= TOL


def test_nonfinite_rates_are_missing():
    iv, reason = implied_vol([5.0, 5.0], S, K, T, [float("nan"), R], [Q, float("inf")], True)
    assert list(reason) == [NullReason.MISSING_INPUT] * 2


@pytest.mark.parametrize("is_call", [True, False])
@pytest.mark.parametrize("s, k, t, sigma", [
    (100.0, 100.0, 0.5, 0.2),
    (100.0, 80.0, 1.0, 0.35),
    (100.0, 130.0, 0.1, 0.6),
    (50.0, 55.0, 2.0, 0.15),
    (100.0, 100.0, 10 / 365, 1.2),
])
def test_greeks_match_finite_differences(s, k, t, sigma, is_call):
    r, q = 0.04, 0.015
    price = float(price_and_greeks(s, k, t, r, q, sigma, is_call)["price"])
    res = compute_iv_greeks(price, s, k, t, r, q, is_call)
    vol = float(res["iv"])

    def v(**bump):
        a = {"s": s, "k": k, "t": t, "r": r, "q": q, "sigma": vol, "is_call": is_call}
        a.update(bump)
        return float(price_and_greeks(**a)["price"])

    hs, ht, hv, hr = 1e-3 * s, 1e-5, 1e-5, 1e-5
    fd = {
        "delta": (v(s=s + hs) - v(s=s - hs)) / (2 * hs),
        "gamma": (v(s=s + hs) - 2 * price + v(s=s - hs)) / hs**2,
        "vega": (v(sigma=vol + hv) - v(sigma=vol - hv)) / (2 * hv),
        "theta": -(v(t=t + ht) - v(t=t - ht)) / (2 * ht),  # theta = -dV/dt (t: time left)
        "rho": (v(r=r + hr) - v(r=r - hr)) / (2 * hr),
    }
    for name, value in fd.items():
        assert float(res[name]) == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_scalar_and_vector_agree():
    g, _ = grid()
    pick = np.random.default_rng(3).choice(g["price"].size, 400, replace=False)
    sub = {k: (v[pick] if isinstance(v, np.ndarray) else v) for k, v in g.items()}
    vec = compute_iv_greeks(**sub)
    for j in range(pick.size):
        one = compute_iv_greeks(
            sub["price"][j], sub["s"], sub["k"][j], sub["t"][j], sub["r"], sub["q"][j],
            sub["is_call"][j],
        )
        assert one["iv"].shape == ()
        assert int(one["reason"]) == vec["reason"][j]
        for name in ("iv", *GREEKS):
            np.testing.assert_array_equal(one[name], vec[name][j])


def test_broadcasting_keeps_shape():
    k = np.array([[90.0], [100.0], [110.0]])
    t = np.array([0.25, 0.5, 1.0, 2.0])
    price = price_and_greeks(100.0, k, t, 0.03, 0.0, 0.3, True)["price"]
    iv, reason = implied_vol(price, 100.0, k, t, 0.03, 0.0, True)
    assert iv.shape == reason.shape == (3, 4)
    np.testing.assert_allclose(iv, 0.3, rtol=0, atol=TOL)


def test_reason_labels():
    assert reason_labels([0, 4, 6]) == [None, "below_intrinsic", "time_value_below_resolution"]


def chain_frame() -> pl.DataFrame:
    as_of = dt.date(2025, 1, 2)
    expiry = dt.date(2025, 7, 3)
    t = (expiry - as_of).days / 365
    call = float(price_and_greeks(100.0, 105.0, t, 0.04, 0.01, 0.3, True)["price"])
    put = float(price_and_greeks(100.0, 95.0, t, 0.04, 0.01, 0.25, False)["price"])
    return pl.DataFrame({
        "contract": ["c", "p", "same_day", "no_price", "other", "deep"],
        "option_price": [call, put, 1.0, None, 2.0, 0.0],
        "underlying_price": [100.0] * 6,
        "strike": [105.0, 95.0, 100.0, 100.0, 100.0, 300.0],
        "expiration": [expiry, expiry, as_of, expiry, expiry, expiry],
        "as_of": [as_of] * 6,
        "contract_type": ["call", "put", "call", "call", "other", "call"],
        "dividend_yield": [0.01] * 6,
    })


def test_chain_iv_fills_columns():
    out = chain_iv(chain_frame(), r=0.04, q=pl.col("dividend_yield"))
    assert out["iv"][0] == pytest.approx(0.3, abs=TOL)
    assert out["iv"][1] == pytest.approx(0.25, abs=TOL)
    assert out["iv_null_reason"].to_list() == [
        None, None, "expired", "missing_input", "unknown_contract_type", "non_positive_input",
    ]
    assert out["source"].to_list() == ["computed"] * 6
    assert out.columns[:8] == chain_frame().columns
    for name in ("iv", *GREEKS):
        assert out[name].dtype == pl.Float64
        assert out[name].is_null().to_list() == [False, False, True, True, True, True]
    # Same numbers as the array API, with ACT/365 time, greeks in the lake's market units.
    t = (dt.date(2025, 7, 3) - dt.date(2025, 1, 2)).days / 365
    arr = to_market_units(
        compute_iv_greeks(out["option_price"][0], 100.0, 105.0, t, 0.04, 0.01, True))
    for name in ("iv", *GREEKS):
        assert out[name][0] == float(arr[name])
    assert out["vega"][0] == pytest.approx(
        float(compute_iv_greeks(out["option_price"][0], 100.0, 105.0, t, 0.04, 0.01,
                                True)["vega"]) / 100)


def test_chain_iv_accepts_a_number_for_q_and_replaces_old_columns():
    frame = chain_frame().with_columns(iv=pl.lit(9.9), source=pl.lit("provider"))
    out = chain_iv(frame, r=0.04, q=0.01)
    assert out.columns == frame.columns + ["delta", "gamma", "vega", "theta", "rho",
                                           "iv_null_reason"]
    assert out["iv"][0] == pytest.approx(0.3, abs=TOL)
    assert out["source"][0] == "computed"


def test_chain_iv_on_an_empty_lake_frame_keeps_the_schema():
    out = chain_iv(OPTIONS_IV.empty(), r=0.04)
    assert out.schema == OPTIONS_IV.empty().schema
