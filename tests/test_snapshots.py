"""Chain snapshots: quotes first, adjusted contracts flagged, inputs recorded, partial sessions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from enrich import calendars
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.providers.sample.provider import SampleProvider
from enrich.quant import rates
from enrich.quant.american import american_price
from enrich.quant.snapshots import price_chain
from enrich.schemas import DIVIDENDS, OPTIONS_IV, SPLITS
from enrich.store.store import Store
from enrich.store.universe import ensure_demo_universe

D = dt.date
UTC = dt.UTC
AS_OF = D(2025, 6, 18)
OPEN = calendars.session_open_utc("XNYS", AS_OF)
CLOSE = calendars.session_close_utc("XNYS", AS_OF)
CURVE = rates.frame([{"date": AS_OF, **{c: 4.5 for c in rates.TENORS}}])


def contract(k: float, kind: str, exp: dt.date = D(2025, 7, 18), root: str = "XYZ") -> str:
    return f"O:{root}{exp:%y%m%d}{kind[0].upper()}{int(k * 1000):08d}"


def row(k: float, kind: str, **kw) -> dict:
    base = {"symbol": "XYZ", "as_of": AS_OF, "contract": contract(k, kind),
            "expiration": D(2025, 7, 18), "strike": k, "contract_type": kind,
            "underlying_price": 100.0, "bid": None, "ask": None, "quote_at": None,
            "trade_price": None, "trade_at": None, "shares_per_contract": 100.0,
            "exercise_style": "american", "snapshot_at": CLOSE}
    return {**base, **kw}


def priced(rows: list[dict], **kw) -> pl.DataFrame:
    chain = pl.DataFrame(rows, schema_overrides={
        k: OPTIONS_IV.schema[k] for k in ("quote_at", "trade_at", "snapshot_at", "bid", "ask",
                                           "trade_price", "deliverables")})
    kw = {"session_open": OPEN, "session_close": CLOSE, **kw}
    return price_chain(chain, curves=CURVE, dividends=DIVIDENDS.empty(),
                       splits=SPLITS.empty(), fallback_rate=0.04, **kw)


def test_the_quote_mid_first_then_this_sessions_last_trade_with_its_age():
    q_at, t_at = CLOSE - dt.timedelta(seconds=2), CLOSE - dt.timedelta(hours=3)
    out = priced([
        row(100, "call", bid=2.40, ask=2.60, quote_at=q_at, trade_price=2.0, trade_at=t_at),
        # No bid: the last trade, three hours old.
        row(105, "call", bid=0.0, ask=0.9, quote_at=q_at, trade_price=0.80, trade_at=t_at),
        # A spread wider than half the mid (and 10 cents): the trade.
        row(110, "call", bid=0.10, ask=0.90, quote_at=q_at, trade_price=0.35, trade_at=t_at),
        # A crossed quote, and a trade from yesterday: no price.
        row(95, "put", bid=1.2, ask=1.1, quote_at=q_at, trade_price=1.0,
            trade_at=OPEN - dt.timedelta(hours=20)),
        # A quote left from yesterday: stale, so the trade.
        row(90, "put", bid=0.5, ask=0.6, quote_at=OPEN - dt.timedelta(hours=20),
            trade_price=0.52, trade_at=t_at),
        # A narrow absolute spread on a cheap option is sane (10 cents).
        row(120, "call", bid=0.01, ask=0.08, quote_at=q_at),
    ])
    got = {r["strike"]: r for r in out.iter_rows(named=True)}
    assert got[100]["price_source"] == "mid" and got[100]["option_price"] == pytest.approx(2.5)
    assert got[100]["price_age_s"] == 2.0
    for k, price in ((105, 0.80), (110, 0.35), (90, 0.52)):
        assert (got[k]["price_source"], got[k]["option_price"]) == ("last_trade", price), k
        assert got[k]["price_age_s"] == 3 * 3600
    assert got[95]["price_source"] is None and got[95]["iv"] is None
    assert got[95]["iv_null_reason"] == "no_price" and got[95]["option_price"] is None
    assert got[120]["price_source"] == "mid"
    assert got[100]["iv"] is not None and (got[100]["bid"], got[100]["ask"]) == (2.40, 2.60)


def test_adjusted_contracts_are_stored_flagged_and_left_out_of_iv():
    q = {"bid": 2.4, "ask": 2.6, "quote_at": CLOSE}
    out = priced([
        row(100, "call", **q),
        row(100, "put", **q, shares_per_contract=150.0),  # after a 3-for-2 split
        row(105, "call", **q, deliverables='[{"amount": 44, "type": "equity", '
                                           '"underlying": "VMW"}]'),
        row(110, "call", **q, contract=contract(110, "call", root="XYZ1")),  # adjusted root
    ])
    assert out["adjusted"].to_list() == [False, True, True, True]
    assert out["iv"].is_null().to_list() == [False, True, True, True]
    assert out["iv_null_reason"].to_list() == [None] + ["adjusted_contract"] * 3
    assert out["shares_per_contract"].to_list() == [100.0, 150.0, 100.0, 100.0]


def test_a_chain_records_its_inputs_and_recovers_sigma_with_parity():
    """A chain quoted at American prices (sigma 25 %, q 2 %, the curve's rate): the IVs come
    back, q is implied by parity per expiry (the shortest takes its neighbour's), the rate is
    the curve's; the contract terms pass through."""
    rows = []
    for exp in (D(2025, 6, 20), D(2025, 7, 18), D(2025, 9, 19)):
        t = (exp - AS_OF).days / 365
        r = float(rates.rate_to(CURVE, [AS_OF], np.array([t]), 0.04)[0][0])
        for k in np.arange(80.0, 121.0, 5.0):
            for kind in ("call", "put"):
                p = float(american_price(100.0, k, t, r, 0.02, 0.25, kind == "call"))
                rows.append(row(k, kind, contract=contract(k, kind, exp), expiration=exp,
                                bid=p, ask=p, quote_at=CLOSE, provider_iv=0.26))
    out = priced(rows)
    solved = out.filter(pl.col("iv").is_not_null())
    # Two days out, strikes 10-20 % in the money carry no time value to read a volatility
    # from: puts at the value of exercise, calls at their lower bound (to the last bit).
    assert solved.height > 0.8 * out.height
    assert set(out.filter(pl.col("iv").is_null())["iv_null_reason"]) <= {
        "time_value_below_resolution", "early_exercise", "below_intrinsic"}
    otm = solved.filter(pl.when(pl.col("contract_type") == "call")
                        .then(pl.col("strike") >= 100).otherwise(pl.col("strike") < 100))
    assert (otm["iv"] - 0.25).abs().max() < 1e-6
    assert (solved["iv"] - 0.25).abs().max() < 1e-4
    assert set(out["dividend_method"]) == {"parity"}
    assert (out["dividend_yield"] - 0.02).abs().max() < 1e-6
    assert set(out["rate_source"]) == {"treasury"} and set(out["iv_model"]) == {"american"}
    assert set(out["provider_iv"]) == {0.26} and set(out["source"]) == {"snapshot"}
    assert not out["partial"].any()


def test_a_snapshot_during_the_session_is_partial():
    noon = OPEN + dt.timedelta(hours=3)
    out = priced([row(100, "call", bid=2.4, ask=2.6, quote_at=noon, snapshot_at=None)],
                 snapshot_at=noon)
    assert out["partial"].to_list() == [True] and out["snapshot_at"].to_list() == [noon]


def test_an_intraday_snapshot_is_stored_under_its_session_then_replaced_after_the_close(
        settings):
    """Run at noon: the chain is stored under today's session, partial, and today does not
    count as held; the run after the close takes the final chain in its place."""
    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    day = D(2026, 11, 24)
    noon = dt.datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
    evening = dt.datetime(2026, 11, 24, 22, 0, tzinfo=UTC)
    for at in (noon, evening):
        Engine(store, SampleProvider(clock=lambda at=at: at), settings,
               clock=lambda at=at: at).run(RunParams(symbols=["SPY"]))
        chain = store.lake.read("options_iv", ["SPY"])
        assert set(chain["as_of"]) == {day}  # one session's rows, replaced in place
        if at == noon:
            assert chain["partial"].all() and set(chain["snapshot_at"]) == {noon}
            assert store.lake.read_coverage("SPY")["options_iv"] == D(2026, 11, 23)
            summary = store.lake.read("vol_summary", ["SPY"])
            assert summary["partial"].to_list() == [True]
            first = chain
        else:
            assert not chain["partial"].any()
            assert set(chain["snapshot_at"]) == {calendars.session_close_utc("XNYS", day)}
            assert store.lake.read_coverage("SPY")["options_iv"] == day
            assert store.lake.read("vol_summary", ["SPY"])["partial"].to_list() == [False]
            assert chain["volume"].sum() > first["volume"].sum()
