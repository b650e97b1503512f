"""Right data for every instrument, on the loopback fake (issue 13).

Payloads follow the spec's own examples and the recorded responses, cited where they are built
(``tests/fakes/massive_server.py``; reference ``massive-refresh-and-correctness.md`` §7):

- crypto: OpenAPI spec (massive-com/client-go ``rest/scripts/openapi.json`` @ 9471d9b),
  ``/v2/aggs/ticker/{cryptoTicker}/range`` example: X:BTCUSD, t=1590984000000 (04:00 UTC);
  recorded X:BTCUSD 1/day 2023-01-01..07: t at 00:00 UTC, weekend days included, fractional v;
- forex: the spec's ``{forexTicker}`` example: C:EURUSD, t=1626912000000 (00:00 UTC), v == n;
  recorded C:EURUSD 2023-01-01..10: a Saturday row with v=2, Sunday 2023-01-08 v=4731;
- indices: the spec's ``{indicesTicker}`` example: I:NDX, keys ``o h l c t`` only,
  t=1678341600000 (06:00 UTC = 01:00 New York), ``count`` and no ``resultsCount``.
"""

from __future__ import annotations

import datetime as dt
import json

import httpx
import polars as pl
import pytest

from enrich import conventions
from enrich.config import load_settings
from enrich.errors import ValidationError
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.providers.massive.provider import MassiveProvider
from enrich.providers.retry import RetryPolicy
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from enrich.views.status import status_grid
from tests.fakes.massive_server import FakeMassive

UTC = dt.UTC
D = dt.date
TODAY = D(2026, 11, 23)  # a Monday
MONDAY_MORNING = dt.datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # after Sunday's UTC day + lag
SYMS = ("X:BTCUSD", "C:EURUSD", "I:SPX")


def _provider(fake: FakeMassive, today: dt.date = TODAY) -> MassiveProvider:
    return MassiveProvider(httpx.Client(timeout=30), fake.api_key, fake.base_url, None,
                           today=lambda: today, owns_client=True,
                           retry=RetryPolicy(max_retries=1, sleep=lambda s: None))


def _engine(tmp_path, provider, now, symbols=SYMS, classes=None) -> Engine:
    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / "data")}, dotenv_path=None)
    store = Store.from_settings(settings.with_(history_years=1))
    add_symbols(store.catalog, [(s, (classes or {}).get(s), None) for s in symbols])
    return Engine(store, provider, settings.with_(history_years=1), clock=lambda: now)


def _state(engine: Engine, symbol: str, now: dt.datetime, dataset: str = "bars") -> str:
    grid = status_grid(engine.store.catalog, now=now, lag=dt.timedelta(hours=4))
    return grid.filter((pl.col("symbol") == symbol) & (pl.col("dataset") == dataset))[
        "state"][0]


def _utc_dates(rows: list[dict]) -> list[dt.date]:
    return sorted(dt.datetime.fromtimestamp(r["t"] / 1000, UTC).date() for r in rows)


# -- the parser on the spec's own examples ---------------------------------------------------
def _mock(payload: dict) -> MassiveProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=payload)

    return MassiveProvider(httpx.Client(transport=httpx.MockTransport(handler)), "k" * 20,
                           today=lambda: D(2024, 1, 2), owns_client=True)


# The spec's examples, verbatim (openapi.json @ 9471d9b, 200 response examples).
SPEC_CRYPTO = {"adjusted": True, "queryCount": 2, "request_id": "0cf72b6da685bcd386548ffe2895904a",
               "results": [{"c": 10094.75, "h": 10429.26, "l": 9490, "n": 1, "o": 9557.9,
                            "t": 1590984000000, "v": 303067.6562332156, "vw": 9874.5529},
                           {"c": 9492.62, "h": 10222.72, "l": 9135.68, "n": 1, "o": 10096.87,
                            "t": 1591070400000, "v": 323339.6922892879, "vw": 9729.5701}],
               "resultsCount": 2, "status": "OK", "ticker": "X:BTCUSD"}
SPEC_FOREX = {"adjusted": True, "queryCount": 1, "request_id": "79c061995d8b627b736170bc9653f15d",
              "results": [{"c": 1.17721, "h": 1.18305, "l": 1.1756, "n": 125329, "o": 1.17921,
                           "t": 1626912000000, "v": 125329, "vw": 1.1789}],
              "resultsCount": 1, "status": "OK", "ticker": "C:EURUSD"}
SPEC_INDEX = {"count": 2, "queryCount": 2, "request_id": "0cf72b6da685bcd386548ffe2895904a",
              "results": [{"c": 11995.88235998666, "h": 12340.44936267155,
                           "l": 11970.34221717375, "o": 12230.83658266843, "t": 1678341600000},
                          {"c": 11830.28178808306, "h": 12069.62262033557,
                           "l": 11789.85923449393, "o": 12001.69552583921,
                           "t": 1678428000000}],
              "status": "OK", "ticker": "I:NDX"}


def test_the_specs_examples_land_on_their_sessions():
    with _mock(SPEC_CRYPTO) as p:
        crypto = p.bars("X:BTCUSD", "1d", D(2020, 6, 1), D(2020, 6, 2))
    # t = 04:00 UTC (midnight New York) in the spec, 00:00 UTC recorded: the UTC date either
    # way, and ts the session's UTC midnight (the grouped path's key).
    assert crypto["session"].to_list() == [D(2020, 6, 1), D(2020, 6, 2)]
    assert crypto["ts"].to_list() == [dt.datetime(2020, 6, 1, tzinfo=UTC),
                                      dt.datetime(2020, 6, 2, tzinfo=UTC)]
    assert crypto["volume"][0] == pytest.approx(303067.6562332156)
    with _mock(SPEC_FOREX) as p:
        fx = p.bars("C:EURUSD", "1d", D(2021, 7, 22), D(2021, 7, 22))
    # 1626912000000 is 2021-07-22 00:00 UTC: in New York that is still the 21st.
    assert fx["session"].to_list() == [D(2021, 7, 22)]
    assert fx["volume"].to_list() == fx["trades"].cast(pl.Float64).to_list() == [125329.0]
    with _mock(SPEC_INDEX) as p:
        idx = p.bars("I:NDX", "1d", D(2023, 3, 9), D(2023, 3, 10))
    assert idx["session"].to_list() == [D(2023, 3, 9), D(2023, 3, 10)]
    assert idx["volume"].null_count() == idx["vwap"].null_count() == idx["trades"].null_count() \
        == 2
    assert idx["close"][0] == 11995.88235998666
    # A stock still needs its volume: a missing ``v`` refuses the payload.
    with _mock({**SPEC_INDEX, "ticker": "AAPL"}) as p, \
            pytest.raises(ValidationError, match="missing 'v'"):
        p.bars("AAPL", "1d", D(2023, 3, 9), D(2023, 3, 10))


# -- crypto, forex and an index through the engine --------------------------------------------
@pytest.fixture
def enriched(tmp_path):
    with FakeMassive(symbols=SYMS, today=TODAY) as fake, _provider(fake) as provider:
        eng = _engine(tmp_path, provider, MONDAY_MORNING)
        summary = eng.run(RunParams(lookback_days=30))
        served = {s: fake.served_rows(s, "bars") for s in SYMS}
        yield eng, summary, served, fake


def test_crypto_bars_are_stored_on_the_utc_dates_served_and_read_fresh_the_next_day(enriched):
    eng, summary, served, _ = enriched
    assert summary.state == "succeeded", summary.results
    btc = eng.store.lake.read("bars", ["X:BTCUSD"], level="1d").sort("ts")
    dates = _utc_dates(served["X:BTCUSD"])
    assert btc["session"].to_list() == dates  # every served bar, on its UTC date
    assert {d.weekday() for d in dates} == set(range(7))  # weekends included
    assert dates[-1] == D(2026, 11, 22)  # Sunday: its UTC day closed at Monday 00:00 UTC
    assert [int(t.timestamp() * 1000) for t in btc["ts"]] == sorted(
        r["t"] for r in served["X:BTCUSD"])
    assert _state(eng, "X:BTCUSD", MONDAY_MORNING) == "fresh"
    # A day later Monday's bar is due, then (after the lag) late: one session behind.
    assert _state(eng, "X:BTCUSD", MONDAY_MORNING + dt.timedelta(days=1)) == "late"


def test_forex_bars_follow_the_forex_calendar(enriched):
    eng, summary, served, _ = enriched
    eur = eng.store.lake.read("bars", ["C:EURUSD"], level="1d").sort("ts")
    dates = _utc_dates(served["C:EURUSD"])
    saturdays = [d for d in dates if d.weekday() == 5]
    assert saturdays  # served (stray quotes after the Friday close) ...
    assert eur["session"].to_list() == [d for d in dates if d.weekday() != 5]  # ... not stored
    assert (eur["session"].dt.weekday() == 7).any()  # Sunday is a session (opens 17:00 NY)
    assert (eur["volume"] == eur["trades"].cast(pl.Float64)).all()  # quotes: v == n
    note = eng.store.catalog.scalar(
        "SELECT error_message FROM fetch_log WHERE symbol = 'C:EURUSD' AND dataset = 'bars' "
        "AND status = 'ok'")
    assert "left out" in note and "no FX session" in note
    assert _state(eng, "C:EURUSD", MONDAY_MORNING) == "fresh"
    # Saturday noon: Friday's session (closed 17:00 New York) is the latest; nothing is due
    # over the weekend, and a US holiday is a forex session like any weekday.
    assert conventions.convention("fx").calendar == "FX"
    from enrich import calendars
    assert calendars.latest_session("FX", dt.datetime(2026, 11, 21, 12, tzinfo=UTC)) == \
        D(2026, 11, 20)
    assert calendars.is_session("FX", D(2026, 11, 26))  # Thanksgiving
    assert not calendars.is_session("XNYS", D(2026, 11, 26))


def test_index_bars_are_stored_with_null_volume_and_their_features_computed(enriched):
    eng, summary, served, _ = enriched
    spx = eng.store.lake.read("bars", ["I:SPX"], level="1d").sort("ts")
    assert spx.height == len(served["I:SPX"]) > 15
    assert not any("v" in r for r in served["I:SPX"])
    assert spx["volume"].null_count() == spx.height
    # t at 01:00 New York: the New York date; ts the session's New York midnight.
    assert spx["session"].to_list() == sorted(
        dt.datetime.fromtimestamp(r["t"] / 1000, conventions.convention("indices").zone)
        .date() for r in served["I:SPX"])
    feats = eng.store.lake.read("features", ["I:SPX"], level="1d").sort("ts")
    assert feats.height == spx.height
    assert feats["ma20"].drop_nulls().len() > 0
    assert feats["volatility_20d"].drop_nulls().len() > 0
    assert feats["volume_z20"].null_count() == feats.height  # no volume, no z-score
    assert _state(eng, "I:SPX", MONDAY_MORNING) == "fresh"


def test_grouped_and_per_ticker_crypto_and_forex_bars_share_one_key(tmp_path):
    """The next day's refresh takes grouped daily bars (00:00 UTC keys): they replace the
    per-ticker rows of the sessions asked again, never duplicate them."""
    symbols = (*(f"X:{c}USD" for c in ("BTC", "ETH", "SOL", "ADA", "LTC", "XRP")),
               *(f"C:{p}" for p in ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCAD", "USDCHF")))
    with (FakeMassive(symbols=symbols, today=TODAY + dt.timedelta(days=1)) as fake,
          _provider(fake) as first, _provider(fake, TODAY + dt.timedelta(days=1)) as second):
        eng = _engine(tmp_path, first, MONDAY_MORNING, symbols)
        assert eng.run(RunParams(lookback_days=20)).state == "succeeded"
        eng.clock = lambda: MONDAY_MORNING + dt.timedelta(days=1)
        eng.provider = second
        before = fake.count("/v2/aggs/grouped")
        summary = eng.run(RunParams())
        assert summary.state == "succeeded"
        assert fake.count("/v2/aggs/grouped") > before  # the universe-wide path served them
    for sym in symbols:
        bars = eng.store.lake.read("bars", [sym], level="1d")
        assert bars["session"].n_unique() == bars.height
        assert (bars["ts"] == bars["session"].cast(pl.Datetime("us", "UTC"))).all()
        assert bars["session"].max() == TODAY


def test_conventions_table_is_the_one_in_the_readme():
    from pathlib import Path

    from tests.conftest import REPO

    assert conventions.markdown_table() in (Path(REPO) / "README.md").read_text()
    assert json.dumps(conventions.convention("crypto").bars_per_year("1d")) == "365.0"
