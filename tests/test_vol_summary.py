"""The volatility summary per symbol and session (enrich.quant.vol_summary)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from scipy.special import ndtri

from enrich.quant.vol_summary import summarize
from enrich.schemas import VOL_SUMMARY

D = dt.date
AS_OF = D(2025, 6, 2)


def smile(days: int, atm: float, slope: float = 0.0, curve: float = 0.0, **kw) -> list[dict]:
    """OTM-side rows of one expiry whose IV is ``atm + slope * (delta_call - 0.5) + curve *
    (delta_call - 0.5)^2`` at strikes placed at call deltas 0.05..0.95 (r = q = 0, spot 100),
    with both types at every strike (the ITM side carries a wrong IV: it must be ignored)."""
    t = days / 365
    rows = []
    for dc in np.arange(0.05, 0.951, 0.05):
        iv = atm + slope * (dc - 0.5) + curve * (dc - 0.5) ** 2
        d1 = ndtri(dc)
        k = 100.0 * math.exp(-d1 * iv * math.sqrt(t) + 0.5 * iv * iv * t)
        for kind in ("call", "put"):
            otm = (k >= 100.0) if kind == "call" else (k < 100.0)
            rows.append({"symbol": "XYZ", "as_of": AS_OF, "expiration": AS_OF +
                         dt.timedelta(days=days), "strike": k, "contract_type": kind,
                         "contract": f"{days}{kind}{dc:.2f}", "underlying_price": 100.0,
                         "iv": iv if otm else 0.99, "rate": 0.0, "dividend_yield": 0.0,
                         "volume": kw.get("volume", {}).get(kind, 1.0),
                         "open_interest": kw.get("oi", {}).get(kind, 10),
                         "adjusted": False, "source": "snapshot", "partial": False})
    return rows


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows).cast({"open_interest": pl.Int64})


def test_atm_is_read_at_30_days_in_total_variance():
    out = summarize(frame(smile(20, 0.20) + smile(40, 0.30) + smile(3, 0.9)))
    w = 0.04 * 20 / 365 + (0.09 * 40 / 365 - 0.04 * 20 / 365) * (10 / 20)
    row = out.row(0, named=True)
    assert row["atm_iv_30d"] == pytest.approx(math.sqrt(w / (30 / 365)), abs=1e-9)
    assert out.schema == VOL_SUMMARY.schema
    # The 3-day expiry is left out (under a week); two smiles used, 117 contracts with an IV.
    assert row["expirations"] == 3 and row["contracts"] == 3 * 38


def _at_forward(days: int, atm: float, slope: float) -> float:
    """The IV at the forward of a smile linear in call delta: there the call delta is
    N(sigma sqrt(t) / 2), just over 0.5 (a fixed point)."""
    from scipy.special import ndtr

    iv = atm
    for _ in range(50):
        iv = atm + slope * (ndtr(0.5 * iv * math.sqrt(days / 365)) - 0.5)
    return iv


def test_risk_reversal_and_butterfly_at_25_delta():
    # IV linear in call delta: the 25-delta call sits at call delta 0.25, the 25-delta put
    # at call delta 0.75.
    out = summarize(frame(smile(25, 0.25, slope=-0.2) + smile(35, 0.25, slope=-0.2)))
    row = out.row(0, named=True)
    w25, w35 = (_at_forward(d, 0.25, -0.2) ** 2 * d / 365 for d in (25, 35))
    atm = math.sqrt((w25 + (w35 - w25) / 2) / (30 / 365))
    # ATM between two strikes (5 delta apart), linear in log-moneyness: within 1e-4.
    assert row["atm_iv_30d"] == pytest.approx(atm, abs=1e-4)
    assert row["rr25_30d"] == pytest.approx(-0.2 * (0.25 - 0.75), abs=1e-9)
    assert row["bf25_30d"] == pytest.approx(0.25 - atm, abs=1e-4)
    curved = summarize(frame(smile(25, 0.25, curve=0.8) + smile(35, 0.25, curve=0.8)))
    assert curved["rr25_30d"][0] == pytest.approx(0.0, abs=1e-9)
    assert curved["bf25_30d"][0] == pytest.approx(0.8 * 0.0625, abs=1e-3)


def test_flat_beyond_the_last_expiry_within_a_week_else_null():
    assert summarize(frame(smile(35, 0.3)))["atm_iv_30d"][0] == pytest.approx(0.3, abs=1e-9)
    far = summarize(frame(smile(60, 0.3)))
    assert far["atm_iv_30d"][0] is None and far["rr25_30d"][0] is None


def test_put_call_volume_and_open_interest():
    rows = smile(30, 0.2, volume={"call": 2.0, "put": 3.0}, oi={"call": 10, "put": 5})
    adjusted = [{**r, "adjusted": True, "volume": 1000.0, "contract": "A" + r["contract"]}
                for r in rows[:4]]
    row = summarize(frame(rows + adjusted)).row(0, named=True)
    assert (row["call_volume"], row["put_volume"]) == (2.0 * 19, 3.0 * 19)
    assert (row["call_oi"], row["put_oi"]) == (190, 95)
    assert row["put_call_volume"] == pytest.approx(1.5) and row["put_call_oi"] == 0.5
    none = summarize(frame(rows).with_columns(pl.lit(None, pl.Float64).alias("volume"),
                                              pl.lit(None, pl.Int64).alias("open_interest")))
    assert none.select("call_volume", "put_call_volume", "put_oi", "put_call_oi").row(0) == (
        None, None, None, None)


def test_a_chain_of_adjusted_contracts_only_has_no_summary():
    # After a split a chain may list only adjusted (non-standard) contracts for a while: they
    # say nothing about the standard smile, so the session gets no row (it used to fail).
    adjusted = frame(smile(30, 0.2)).with_columns(pl.lit(True).alias("adjusted"))
    assert summarize(adjusted).is_empty()
    mixed = pl.concat([adjusted, frame(smile(30, 0.2)).with_columns(
        pl.lit("ABC").alias("symbol"))])
    assert summarize(mixed)["symbol"].to_list() == ["ABC"]


def test_one_row_per_symbol_and_session():
    a = frame(smile(30, 0.2))
    b = a.with_columns(pl.lit(D(2025, 6, 3)).alias("as_of"), pl.lit(True).alias("partial"))
    c = a.with_columns(pl.lit("ABC").alias("symbol"))
    out = summarize(pl.concat([b, a, c]))
    assert out.select("symbol", "as_of", "partial").rows() == [
        ("ABC", AS_OF, False), ("XYZ", AS_OF, False), ("XYZ", D(2025, 6, 3), True)]
    assert summarize(a.head(0)).is_empty()
