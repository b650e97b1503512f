"""Options IV history: contract choice, as-traded closes, IV from option closes, and an
options backfill on the sample provider checked against the sample's own chains."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from enrich import calendars
from enrich.backfill.jobs import Backfiller, BackfillRequest
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.providers.sample.provider import SampleProvider
from enrich.quant.bsm import price_and_greeks
from enrich.quant.options_history import (
    PAIR_SCHEMA,
    as_traded_closes,
    choose_contracts,
    history_iv,
    is_monthly,
    monthly_horizon,
)
from enrich.schemas import RATES, SPLITS
from enrich.store.store import Store
from enrich.store.universe import ensure_demo_universe
from tests.conftest import FIXED_NOW

D = dt.date


def test_is_monthly_third_friday_or_the_thursday_before_a_holiday():
    assert is_monthly(D(2026, 11, 20))  # third Friday
    assert not is_monthly(D(2026, 11, 27))
    assert is_monthly(D(2025, 4, 17))  # Good Friday 2025-04-18: the Thursday before
    assert not is_monthly(D(2026, 11, 13))


def test_the_listing_horizon_reaches_every_monthly_followed():
    """A backfill's listing asks for expirations up to ``monthly_horizon`` (the chain
    filters' 120 days would cut ``--monthly 6`` short): every monthly that
    ``choose_contracts`` picks is inside it, on any day of the year."""
    assert monthly_horizon(D(2026, 11, 2), 1) == D(2026, 11, 20)
    assert monthly_horizon(D(2026, 11, 20), 1) == D(2026, 12, 18)  # the session's own: gone
    assert monthly_horizon(D(2026, 11, 2), 12) == D(2027, 10, 15)
    expirations = [e for e in (D(2025, 1, 1) + dt.timedelta(days=i) for i in range(900))
                   if e.weekday() == 4 or is_monthly(e)]
    listed = pl.DataFrame({"contract": [f"O:XYZ{e:%y%m%d}C00100000" for e in expirations],
                           "expiration": expirations, "strike": 100.0, "contract_type": "call"})
    for as_of in (D(2025, 1, 1) + dt.timedelta(days=i) for i in range(0, 400, 3)):
        for n in (1, 3, 12):
            got = choose_contracts(listed, "XYZ", as_of, 100.0, monthly=n)
            assert got.height == n, (as_of, n)
            assert got["expiration"].max() <= monthly_horizon(as_of, n), (as_of, n)


def test_as_traded_closes_undo_splits_after_each_session():
    bars = pl.DataFrame({
        "session": [D(2022, 8, 24), D(2022, 8, 25), D(2022, 8, 26)],
        "close": [100.0, 101.0, 102.0],
        "adjusted_asof": [D(2022, 9, 9), D(2022, 9, 9), D(2022, 8, 26)],
    })
    splits = pl.DataFrame({"execution_date": [D(2022, 8, 25)], "split_from": [1.0],
                           "split_to": [3.0]})
    got = as_traded_closes(bars, splits)
    assert got["close"].to_list() == [300.0, 101.0, 102.0]
    # A bar not yet adjusted for the split (adjusted_asof before it) is as traded already.
    stale = bars.with_columns(adjusted_asof=pl.lit(D(2022, 8, 24)))
    assert as_traded_closes(stale, splits)["close"].to_list() == [100.0, 101.0, 102.0]


def _closes_by_polars(bars: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    """``as_traded_closes`` as polars expressions (its definition before it moved to numpy)."""
    factor = pl.lit(1.0)
    for e, s_from, s_to in splits.select("execution_date", "split_from",
                                         "split_to").iter_rows():
        if s_from and s_to:
            at = pl.lit(e, dtype=pl.Date)  # a null date: a null condition, "otherwise"
            applied = (pl.col("session") < at) & (pl.col("adjusted_asof") >= at)
            factor = factor * pl.when(applied).then(s_to / s_from).otherwise(1.0)
    return (bars.with_columns(close=pl.col("close") * factor)
            .select("session", "close").unique("session", keep="last").sort("session"))


DAYS = st.one_of(st.none(), st.dates(D(2022, 1, 1), D(2022, 1, 6)))


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.tuples(DAYS, st.one_of(st.none(), st.just(float("nan")),
                                               st.floats(1, 500)), DAYS), max_size=12),
       sorted_=st.booleans(),
       split_rows=st.lists(st.tuples(DAYS, st.sampled_from([0.0, 1.0, 2.0, 3.0, None]),
                                     st.sampled_from([1.0, 3.0, 4.0, 10.0, float("nan")])),
                           max_size=3))
def test_as_traded_closes_are_the_polars_expressions_bit_for_bit(rows, sorted_, split_rows):
    # Repeated and null sessions, null and NaN closes (a file another tool wrote), null
    # dates, zero, null and NaN ratios, in or out of order.
    if sorted_:
        rows = sorted({r[0]: r for r in rows if r[0] is not None}.values())
    bars = pl.DataFrame(rows, schema={"session": pl.Date, "close": pl.Float64,
                                      "adjusted_asof": pl.Date}, orient="row")
    splits = pl.DataFrame(split_rows, schema={"execution_date": pl.Date,
                                              "split_from": pl.Float64,
                                              "split_to": pl.Float64}, orient="row")
    assert_frame_equal(as_traded_closes(bars, splits), _closes_by_polars(bars, splits),
                       check_exact=True)


def _listed(as_of: dt.date) -> pl.DataFrame:
    rows = []
    for exp in (D(2026, 11, 27), D(2026, 12, 4), D(2026, 12, 18), D(2027, 1, 15),
                D(2027, 2, 19), D(2027, 3, 19), D(2026, 11, 20)):
        for k in (70.0, 80.0, 90.0, 100.0, 110.0, 120.0, 130.0):
            for kind in ("call", "put"):
                rows.append({"contract": f"O:XYZ{exp:%y%m%d}{kind[0].upper()}{int(k * 1000):08d}",
                             "expiration": exp, "strike": k, "contract_type": kind})
    return pl.DataFrame(rows)


def test_choose_contracts_next_monthlies_within_the_band():
    got = choose_contracts(_listed(D(2026, 11, 20)), "XYZ", D(2026, 11, 20), 100.0, monthly=2)
    assert got.schema == pl.Schema(PAIR_SCHEMA)
    # Expirations after the session only; weeklies skipped; the first two monthlies.
    assert sorted(set(got["expiration"])) == [D(2026, 12, 18), D(2027, 1, 15)]
    assert sorted(set(got["strike"])) == [80.0, 90.0, 100.0, 110.0, 120.0]  # 0.8..1.2
    assert got.height == 2 * 5 * 2
    assert set(got["underlying_price"]) == {100.0} and set(got["as_of"]) == {D(2026, 11, 20)}
    # Given expirations win; a narrower band; nothing without a close.
    given = choose_contracts(_listed(D(2026, 11, 20)), "XYZ", D(2026, 11, 20), 100.0,
                             expirations=[D(2026, 12, 4)], moneyness=(0.95, 1.05))
    assert given["contract"].to_list() == ["O:XYZ261204C00100000", "O:XYZ261204P00100000"]
    assert choose_contracts(_listed(D(2026, 11, 20)), "XYZ", D(2026, 11, 20), None).is_empty()


def test_history_iv_recovers_volatility_and_says_why_when_it_cannot():
    as_of, exp, s, r, sigma = D(2026, 11, 2), D(2026, 12, 18), 100.0, 0.04, 0.3
    t = (exp - as_of).days / 365
    strikes = [90.0, 100.0, 110.0, 100.0, 100.0]
    kinds = ["call", "put", "call", "call", "put"]
    prices = [float(price_and_greeks(s, k, t, r, 0.0, sigma, kind == "call")["price"])
              for k, kind in zip(strikes, kinds, strict=True)]
    contracts = [f"C{i}" for i in range(5)]
    pairs = pl.DataFrame({
        "symbol": "XYZ", "as_of": [as_of] * 4 + [D(2026, 11, 3)], "contract": contracts,
        "expiration": exp, "strike": strikes, "contract_type": kinds,
        "exercise_style": "european",  # priced by BSM below
    })
    bars = pl.DataFrame({
        "symbol": contracts[:3] + [contracts[3]],
        "session": [as_of] * 4,
        # contract 3 is priced below its intrinsic value; contract 4 has no bar
        "close": prices[:3] + [0.5],
    })
    closes = pl.DataFrame({"session": [as_of], "close": [s]})
    no_divs = pl.DataFrame(schema={"ex_date": pl.Date, "cash_amount": pl.Float64})
    out = history_iv(pairs, bars, closes, no_divs, SPLITS.empty(), RATES.empty(), r)
    assert out["source"].unique().to_list() == ["computed"]
    assert np.allclose(out["iv"][:3].to_numpy(), sigma, atol=1e-10)
    assert out["iv_null_reason"].to_list()[:3] == [None, None, None]
    assert out.row(3, named=True)["iv_null_reason"] == "below_intrinsic"
    assert out.row(3, named=True)["iv"] is None and out.row(3, named=True)["delta"] is None
    # The last pair's session has no underlying close (and no bar): that is said first.
    assert out.row(4, named=True)["iv_null_reason"] == "no_underlying_close"
    bars_missing = bars.filter(pl.col("symbol") != "C0")
    again = history_iv(pairs.head(1), bars_missing, closes, no_divs, SPLITS.empty(),
                       RATES.empty(), r)
    assert again["iv_null_reason"].to_list() == ["no_trade"]


def test_history_iv_uses_the_dividend_yield_implied_by_dividends():
    as_of, exp, s, r = D(2026, 11, 2), D(2027, 1, 15), 50.0, 0.04
    divs = pl.DataFrame({"ex_date": [D(2026, 2, 10), D(2026, 5, 10), D(2026, 8, 10)],
                         "cash_amount": [0.5, 0.5, 0.5]})
    q = float(np.log1p(1.5 / s))
    t = (exp - as_of).days / 365
    price = float(price_and_greeks(s, 50.0, t, r, q, 0.25, True)["price"])
    pairs = pl.DataFrame({"symbol": "XYZ", "as_of": [as_of], "contract": ["O:XYZ270115C00050000"],
                          "expiration": [exp], "strike": [50.0], "contract_type": ["call"],
                          "exercise_style": ["european"]})
    out = history_iv(pairs, pl.DataFrame({"symbol": ["O:XYZ270115C00050000"],
                                          "session": [as_of], "close": [price],
                                          "volume": [12.0]}),
                     pl.DataFrame({"session": [as_of], "close": [s]}), divs, SPLITS.empty(),
                     RATES.empty(), r)
    assert out["iv"][0] == pytest.approx(0.25, abs=1e-10)
    row = out.row(0, named=True)
    assert (row["dividend_method"], row["rate_source"], row["price_source"], row["iv_model"]) \
        == ("trailing_12m", "fallback", "close", "european")
    assert (row["dividend_yield"], row["rate"], row["volume"]) == pytest.approx((q, r, 12.0))


def test_options_backfill_on_sample_matches_the_sample_chains(settings):
    """TSLA around its 2022-08-25 3-for-1 split: contracts chosen on each session's
    as-traded close, IVs solved from option closes equal the chain's model IVs."""
    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    sample = SampleProvider(clock=lambda: FIXED_NOW)
    bf = Backfiller(store, sample, settings, clock=lambda: FIXED_NOW)
    a, z = D(2022, 8, 18), D(2022, 9, 1)
    plan = bf.plan(BackfillRequest("options", ("TSLA",), since=a, until=z, monthly=2))
    sessions = calendars.sessions("XNYS", a, z)
    assert plan.awaiting_listings == ["TSLA"]
    assert sum(c.step == "option_contracts" for c in plan.chunks) == len(sessions)
    summary = bf.run(plan)
    assert summary.state == "succeeded", summary.failures
    # Planned requests (listings up front, contract bars once listed) equal those made.
    again = bf.plan(plan.request)
    assert again.awaiting_listings == [] and again.todo() == []
    assert summary.requests == sum(c.requests_expected for c in again.chunks)
    assert summary.requests == sum(c.requests_made for c in again.chunks)

    rows = store.lake.read("options_iv", ["TSLA"])
    assert set(rows["source"]) == {"computed"}
    assert sorted(set(rows["as_of"])) == sessions
    chains = pl.concat([sample.option_chain("TSLA", d) for d in sessions])
    both = rows.join(chains, on=["as_of", "contract"], suffix="_chain")
    assert both.height == rows.height  # every chosen contract is one of the chain's
    # Strikes sit in 0.8..1.2 of the as-traded close, which jumps at the split.
    assert ((both["strike"] / both["underlying_price_chain"]).is_between(0.8, 1.2)).all()
    assert both.filter(pl.col("as_of") < D(2022, 8, 25))["strike"].min() > 250
    assert both.filter(pl.col("as_of") >= D(2022, 8, 25))["strike"].max() < 200
    assert (both["underlying_price"] - both["underlying_price_chain"]).abs().max() < 1e-9
    solved = both.filter(pl.col("iv").is_not_null())
    assert solved.height > 0.9 * both.height
    # The chain's model IV, from American option closes, the stored demo curve's rate and the
    # trailing yield (TSLA pays none): the same model, so within the solver's tolerance.
    assert (solved["iv"] - solved["provider_iv_chain"]).abs().max() < 1e-6
    assert set(solved["rate_source"]) == {"treasury"} and set(solved["iv_model"]) == {"american"}
    assert set(solved["dividend_method"]) == {"none"} and set(solved["price_source"]) == {"close"}
    t = ((solved["expiration"] - solved["as_of"]).dt.total_days() / 365).to_numpy()
    bsm = price_and_greeks(solved["underlying_price"].to_numpy(), solved["strike"].to_numpy(), t,
                           solved["rate"].to_numpy(), 0.0, solved["iv"].to_numpy(),
                           (solved["contract_type"] == "call").to_numpy())
    assert np.allclose(solved["delta"].to_numpy(), bsm["delta"], atol=1e-12)
    # Each session's volatility summary was computed from those rows.
    summary = store.lake.read("vol_summary", ["TSLA"])
    assert summary["as_of"].to_list() == sessions and (summary["source"] == "computed").all()
    assert summary["atm_iv_30d"].is_between(0.3, 1.5).all()
    # Where no IV can be stated, the row says why.
    unsolved = rows.filter(pl.col("iv").is_null())
    assert unsolved.height > 0
    assert unsolved["iv_null_reason"].is_not_null().all()
    assert set(unsolved["iv_null_reason"]) <= {"no_trade", "time_value_below_resolution",
                                              "below_intrinsic", "at_or_above_upper_bound",
                                              "early_exercise"}
    assert unsolved.filter(pl.col("iv_null_reason") == "no_trade")["option_price"] \
        .is_null().all()


def test_snapshot_rows_keep_their_greeks(settings):
    """A computed row never replaces a chain snapshot's row for the same session."""
    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    clock = lambda: FIXED_NOW  # noqa: E731
    sample = SampleProvider(clock=clock)
    Engine(store, sample, settings, clock=clock).run(
        RunParams(symbols=["TSLA"], datasets=["bars", "dividends", "splits", "options_iv"]))
    snap = store.lake.read("options_iv", ["TSLA"])
    assert set(snap["source"]) == {"snapshot"}
    assert set(snap["price_source"]) <= {"mid", "last_trade", None}
    latest = snap["as_of"].max()
    bf = Backfiller(store, sample, settings, clock=clock)
    summary = bf.run(bf.plan(BackfillRequest("options", ("TSLA",), days=3, monthly=1)))
    assert summary.state == "succeeded"
    rows = store.lake.read("options_iv", ["TSLA"])
    kept = rows.filter(pl.col("as_of") == latest)
    assert_frame_equal(kept, snap.filter(pl.col("as_of") == latest), check_row_order=False)
    assert set(rows.filter(pl.col("as_of") < latest)["source"]) == {"computed"}
