"""The Treasury curve: conversion, interpolation, storage, and IVs solved with it."""

from __future__ import annotations

import datetime as dt
import math

import httpx
import numpy as np
import polars as pl
import pytest

from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.providers.massive.provider import MassiveProvider
from enrich.providers.sample.provider import SampleProvider
from enrich.quant import rates
from enrich.quant.bsm import price_and_greeks
from enrich.quant.options_history import history_iv
from enrich.quant.snapshots import price_chain
from enrich.schemas import DIVIDENDS, RATES, SPLITS
from enrich.store.store import Store
from enrich.store.universe import ensure_demo_universe
from tests.conftest import FIXED_NOW
from tests.fakes.massive_server import FakeMassive

D = dt.date
ALL_TENORS = list(rates.TENORS)


def flat(percent: float) -> dict:
    return {c: percent for c in ALL_TENORS}


def test_yields_become_continuous_rates_on_the_investment_basis():
    # Bills (up to six months): simple interest over the year; beyond: semiannual.
    assert rates.continuous(5.0, 0.25) == pytest.approx(math.log(1 + 0.05 * 0.25) / 0.25)
    assert rates.continuous(5.0, 2.0) == pytest.approx(2 * math.log(1.025))
    assert rates.continuous(5.0, 0.5) == pytest.approx(2 * math.log(1.025))  # they meet
    assert rates.continuous(0.1, 1 / 12) == pytest.approx(0.000999958, abs=1e-9)


def test_interpolation_is_linear_in_rt_and_flat_outside():
    tenors, r = np.array([0.25, 1.0, 2.0]), np.array([0.01, 0.03, 0.04])
    got = rates.interpolate(tenors, r, np.array([0.1, 0.25, 0.5, 1.5, 2.0, 5.0]))
    mid = (0.01 * 0.25 + (0.03 * 1.0 - 0.01 * 0.25) * (0.25 / 0.75)) / 0.5
    assert got.tolist() == pytest.approx([0.01, 0.01, mid, (0.03 + 0.08) / 2 / 1.5, 0.04,
                                          0.04])
    # Only the tenors present are used: an old curve with three points.
    row = {"yield_1_year": 3.22, "yield_5_year": 3.88, "yield_10_year": 4.06}
    t, r = rates.curve_points(row)
    assert t.tolist() == [1.0, 5.0, 10.0]
    assert rates.interpolate(t, r, np.array([0.1]))[0] == pytest.approx(2 * math.log(1.0161))


def test_rate_to_takes_the_session_curve_or_one_up_to_a_week_older_else_the_fallback():
    curves = rates.frame([{"date": D(2024, 6, 10), **flat(5.0)},
                          {"date": D(2024, 6, 12), **flat(4.0)}])
    as_of = pl.Series([D(2024, 6, 12), D(2024, 6, 11), D(2024, 6, 17), D(2024, 6, 20),
                       D(2024, 6, 9)])
    r, source = rates.rate_to(curves, as_of, np.full(5, 0.5), 0.033)
    assert r.tolist() == pytest.approx([2 * math.log(1.02), 2 * math.log(1.025),
                                        2 * math.log(1.02), 0.033, 0.033])
    assert source.tolist() == ["treasury", "treasury", "treasury", "fallback", "fallback"]


def _curve_2021_and_2024(day: dt.date) -> dict | None:
    """The acceptance curve: 0.1 % every tenor in 2021, 5 % in 2024, nothing otherwise."""
    return {2021: flat(0.1), 2024: flat(5.0)}.get(day.year)


def _pairs_and_bars(day: dt.date, rate_of) -> tuple[pl.DataFrame, pl.DataFrame]:
    """At-the-money and 10 % out-of-the-money calls and puts, 30 and 91 days, priced at
    sigma = 20 % with each expiry's continuous rate ``rate_of(t)``; European style, so the
    prices are exactly BSM's."""
    rows, bars = [], []
    for days in (30, 91):
        exp = day + dt.timedelta(days=days)
        t = days / 365
        for k in (90.0, 100.0, 110.0):
            for kind in ("call", "put"):
                contract = f"O:XYZ{exp:%y%m%d}{kind[0].upper()}{int(k * 1000):08d}"
                price = float(price_and_greeks(100.0, k, t, rate_of(t), 0.0, 0.20,
                                               kind == "call")["price"])
                rows.append({"symbol": "XYZ", "as_of": day, "contract": contract,
                             "expiration": exp, "strike": k, "contract_type": kind,
                             "exercise_style": "european"})
                bars.append({"symbol": contract, "session": day, "close": price,
                             "volume": 1.0})
    return pl.DataFrame(rows), pl.DataFrame(bars)


def test_acceptance_ivs_use_the_curve_of_their_session(tmp_path):
    """A fake curve at 0.1 % for 2021 and 5 % for 2024, fetched from the loopback fake;
    prices made at sigma = 20 % with those rates solve to 20 % +- 1e-6 on both dates, calls
    and puts; the old constant 4 % would not."""
    with (FakeMassive(today=D(2024, 12, 31), curve=_curve_2021_and_2024) as fake,
          httpx.Client() as client):
        provider = MassiveProvider(client, fake.api_key, fake.base_url, None,
                                   today=lambda: D(2024, 12, 31))
        curves = provider.treasury_yields(D(2021, 1, 1), D(2024, 12, 31))
    assert set(curves["date"].dt.year()) == {2021, 2024}
    for day, percent in ((D(2021, 6, 15), 0.1), (D(2024, 6, 14), 5.0)):
        # The continuous rate the curve states to each expiry, from the documented rules:
        # bills' yields are simple interest (1 and 3 months here), flat below one month,
        # linear in r*t between tenors.
        def rate_of(t, y=percent / 100):
            one, three = math.log(1 + y / 12), math.log(1 + y / 4)  # r*t at 1 and 3 months
            if t <= 1 / 12:
                return one * 12
            w = (t - 1 / 12) / (0.25 - 1 / 12)
            return ((1 - w) * one + w * three) / t

        pairs, bars = _pairs_and_bars(day, rate_of)
        closes = pl.DataFrame({"session": [day], "close": [100.0]})
        out = history_iv(pairs, bars, closes, DIVIDENDS.empty(), SPLITS.empty(), curves, 0.04)
        assert out["iv"].is_not_null().all()
        assert (out["iv"] - 0.20).abs().max() <= 1e-6, day
        assert set(out["rate_source"]) == {"treasury"}
        assert out["rate"].to_list() == pytest.approx(
            [rate_of((e - day).days / 365) for e in out["expiration"]], rel=1e-11)
        assert set(out["contract_type"]) == {"call", "put"}
        # The same chain as a snapshot (quotes at those prices) solves alike.
        chain = pairs.join(bars.rename({"symbol": "contract", "session": "as_of"}),
                           on=["contract", "as_of"]).with_columns(
            bid=pl.col("close"), ask=pl.col("close"), underlying_price=pl.lit(100.0),
            shares_per_contract=pl.lit(100.0))
        snap = price_chain(chain, curves=curves, dividends=DIVIDENDS.empty(),
                           splits=SPLITS.empty(), fallback_rate=0.04)
        assert (snap["iv"] - 0.20).abs().max() <= 1e-6
        # With the constant 4 % everything was solved with, the same prices say otherwise.
        old = history_iv(pairs, bars, closes, DIVIDENDS.empty(), SPLITS.empty(),
                         RATES.empty(), 0.04)
        assert set(old["rate_source"]) == {"fallback"}
        assert (old["iv"] - 0.20).abs().max() > 1e-3


def test_the_engine_refreshes_the_curve_once_a_day_and_falls_back_without_one(settings):
    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    clock = lambda: FIXED_NOW  # noqa: E731
    sample = SampleProvider(clock=clock)
    engine = Engine(store, sample, settings, clock=clock)
    plan = engine.plan(RunParams(symbols=["AAPL", "KO"]))
    assert plan.rates == (rates.FIRST_DATE, FIXED_NOW.date())
    assert plan.budget["rates"].requests == 1 and plan.budget["rates"].path == "universe-wide"
    engine.run(RunParams(symbols=["AAPL", "KO"]))
    curve = store.lake.read("rates", [rates.CURVE])
    assert curve["date"].min() == D(2000, 1, 3) and curve["date"].max() == FIXED_NOW.date()
    assert store.lake.read_coverage(rates.CURVE) == {"rates": FIXED_NOW.date()}
    log = store.catalog.query("SELECT symbol, status, requests FROM fetch_log "
                              "WHERE dataset = 'rates'")
    assert log.rows() == [(rates.CURVE, "ok", 1)]
    chain = store.lake.read("options_iv", ["AAPL"])
    assert set(chain["rate_source"]) == {"treasury"}
    # Flat at the one-month rate below a month, interpolated between tenors beyond.
    assert chain["rate"].n_unique() == chain.filter(
        (pl.col("expiration") - pl.col("as_of")).dt.total_days() > 30)["expiration"].n_unique() + 1
    # Held through today: a second run the same day asks nothing; the next day, one request.
    assert engine.plan(RunParams(symbols=["AAPL"])).rates is None
    tomorrow = FIXED_NOW + dt.timedelta(days=2)
    later = Engine(store, SampleProvider(clock=lambda: tomorrow), settings,
                   clock=lambda: tomorrow)
    assert later.plan(RunParams(symbols=["AAPL"])).rates == (
        FIXED_NOW.date() - dt.timedelta(days=6), D(2026, 11, 27))
    # A run without option chains needs no curve.
    assert later.plan(RunParams(symbols=["AAPL"], datasets=["bars"])).rates is None


def test_without_a_curve_ivs_use_the_configured_rate_and_say_so(settings):
    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    clock = lambda: FIXED_NOW  # noqa: E731

    class NoCurve(SampleProvider):
        def treasury_yields(self, start, end):
            return RATES.empty()

    Engine(store, NoCurve(clock=clock), settings.with_(risk_free_rate=0.031),
           clock=clock).run(RunParams(symbols=["AAPL"]))
    chain = store.lake.read("options_iv", ["AAPL"])
    assert set(chain["rate_source"]) == {"fallback"} and set(chain["rate"]) == {0.031}


def test_a_failed_curve_fetch_is_said_by_the_run_not_hidden(settings):
    # Found by a QA pass: the Treasury request answered 400, the run said "succeeded" with
    # no error, and every IV took the fallback rate without a word.
    from enrich.errors import ProviderError

    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    clock = lambda: FIXED_NOW  # noqa: E731

    class BadCurve(SampleProvider):
        def treasury_yields(self, start, end):
            raise ProviderError("400 Bad Request: treasury-yields")

    summary = Engine(store, BadCurve(clock=clock), settings, clock=clock).run(
        RunParams(symbols=["AAPL"]))
    assert summary.errors_by_class == {"provider": 1} and summary.failed == 0
    message = store.catalog.scalar("SELECT message FROM runs WHERE run_id = ?",
                                   [summary.run_id])
    assert "the Treasury curve was not fetched (provider: 400 Bad Request" in message
    assert "ENRICH_RISK_FREE_RATE" in message
    assert set(store.lake.read("options_iv", ["AAPL"])["rate_source"]) == {"fallback"}


def test_rate_to_falls_back_for_a_row_without_a_session():
    curves = rates.frame([{"date": D(2024, 6, 10), **flat(5.0)}])
    as_of = pl.Series([None, D(2024, 6, 10)], dtype=pl.Date)
    r, source = rates.rate_to(curves, as_of, np.full(2, 0.5), 0.033)
    assert r.tolist() == pytest.approx([0.033, 2 * math.log(1.025)])
    assert source.tolist() == ["fallback", "treasury"]
