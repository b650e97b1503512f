"""Ticker identity (issue 13): `symbols add` asks the provider's ticker reference and refuses an
unknown ticker; history never reaches before the listing or a ticker change; a renamed
company's old ticker serves its span; a delisted symbol is kept and no longer refreshed;
tickers keep the provider's case.

Payloads on the loopback fake follow the spec's examples (massive-com/client-go
``rest/scripts/openapi.json`` @ 9471d9b): ticker details in the shape of the AAPL example of
``/v3/reference/tickers/{ticker}``, the 404 body ``Ticker not found.`` (reference §0 c), and the
META events of ``/vX/reference/tickers/{id}/events`` verbatim (FB from 2012-05-18, META from
2022-06-09; reference §8).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import httpx
import polars as pl
import pytest

from enrich import identity
from enrich.checks import quality_run
from enrich.config import load_settings
from enrich.errors import InputError, NotEntitledError
from enrich.identity import Span, TickerChange, TickerReference
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.providers.massive.provider import MassiveProvider
from enrich.providers.retry import RetryPolicy
from enrich.providers.sample.provider import SampleProvider
from enrich.store.lake import Lake, symbol_dir_name
from enrich.store.store import Store
from enrich.store.universe import add_symbols, add_verified, list_symbols
from tests.conftest import FIXED_NOW, REPO, subprocess_env
from tests.fakes.massive_server import FakeMassive

D = dt.date
TODAY = D(2026, 11, 25)
NOW = "2026-11-25T22:00:00Z"
CHANGE = D(2022, 6, 9)


def _cli(data, *args, fake: FakeMassive | None = None, **env):
    extra = {"ENRICH_HISTORY_YEARS": "5", "ENRICH_NOW": NOW, **env}
    if fake is not None:
        extra.update(MASSIVE_API_KEY=fake.api_key, MASSIVE_BASE_URL=fake.base_url,
                     ENRICH_RATE_LIMIT_PER_MIN="6000")
    return subprocess.run([sys.executable, "-m", "enrich", *args], cwd=REPO,
                          env=subprocess_env(data, **extra), capture_output=True, text=True,
                          timeout=300)


# -- identities from references ----------------------------------------------------------------
def test_spans_from_ticker_changes():
    meta = TickerReference("META", "Meta Platforms", "stocks", "CS", True, D(2012, 5, 18),
                           changes=(TickerChange(D(2022, 6, 9), "META"),
                                    TickerChange(D(2012, 5, 18), "FB")))
    ident = meta.identity()
    assert ident.history_from == D(2012, 5, 18)
    assert ident.spans == (Span("FB", D(2012, 5, 18), D(2022, 6, 8)),
                           Span("META", D(2022, 6, 9), None))
    assert ident.pieces(D(2020, 1, 1), D(2023, 1, 1)) == [
        ("FB", D(2020, 1, 1), D(2022, 6, 8)), ("META", D(2022, 6, 9), D(2023, 1, 1))]
    assert ident.pieces(D(2000, 1, 1), D(2012, 5, 17)) == []  # before the listing: nothing
    # A recycled ticker: the entity holding it now started trading under it on its change.
    recycled = TickerReference("XYZ", "New Co", "stocks", "CS", True, D(2021, 3, 1),
                               changes=(TickerChange(D(2021, 3, 1), "XYZ"),))
    assert recycled.identity().clamp(D(2016, 1, 1), D(2026, 1, 1)) == (D(2021, 3, 1),
                                                                      D(2026, 1, 1))
    gone = TickerReference("TWTR", "Twitter", "stocks", "CS", False, D(2013, 11, 7),
                           delisted=D(2022, 10, 27))
    assert gone.identity().clamp(D(2020, 1, 1), D(2026, 1, 1)) == (D(2020, 1, 1),
                                                                  D(2022, 10, 27))
    row = identity.to_row(meta, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert identity.from_row("META", row) == ident
    assert TickerReference("SPY", None, "stocks", "ETF", True).asset_class == "etfs"
    assert TickerReference("I:SPX", None, "indices", "INDEX", True).asset_class == "indices"


# -- symbols add on the loopback fake ----------------------------------------------------------
def test_symbols_add_an_unknown_ticker_on_the_fake_fails_with_exit_2(tmp_path):
    data = tmp_path / "data"
    with FakeMassive(symbols=("AAPL", "META"), today=TODAY) as fake:
        res = _cli(data, "symbols", "add", "AAPL", "NOPE", fake=fake)
        assert res.returncode == 2, res.stderr
        assert "NOPE is not a ticker massive knows" in res.stderr
        assert "Ticker not found." in res.stderr and "nothing was added" in res.stderr
        assert [s.path for s in fake.requests] == ["/v3/reference/tickers/AAPL",
                                                   "/vX/reference/tickers/AAPL/events",
                                                   "/v3/reference/tickers/NOPE"]
        listed = _cli(data, "symbols", "list", "--json", fake=fake)
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"  # AAPL not added either


def test_symbols_add_meta_stores_the_linked_history_from_its_ticker_change(tmp_path):
    """META's entity traded as FB until 2022-06-08; the ticker META was another security's
    before. Its history comes from FB over FB's span, from META after the change, and no
    request for META reaches before the change."""
    data = tmp_path / "data"
    with FakeMassive(symbols=("META",), today=TODAY) as fake:
        add = _cli(data, "symbols", "add", "META", fake=fake)
        assert add.returncode == 0, add.stderr
        assert "traded as FB from 2012-05-18, META from 2022-06-09" in add.stdout
        run = _cli(data, "run", "--symbols", "META", "--datasets", "bars", fake=fake)
        assert run.returncode == 0, run.stderr
        aggs = [s for s in fake.requests if s.path.startswith("/v2/aggs/ticker/")]
        served_fb, served_meta = fake.served_rows("FB", "bars"), fake.served_rows("META", "bars")
    meta_starts = [D.fromisoformat(s.path.split("/")[-2]) for s in aggs if "/META/" in s.path]
    assert meta_starts and min(meta_starts) >= CHANGE
    assert any("/FB/" in s.path for s in aggs)
    bars = Lake(data / "lake").read("bars", ["META"], level="1d").sort("session")
    assert (bars["symbol"] == "META").all()
    before = bars.filter(pl.col("session") < CHANGE)
    assert before.height == len(served_fb) > 100  # every pre-change bar is FB's
    assert before["close"].to_list() == [r["c"] for r in sorted(served_fb, key=lambda r: r["t"])]
    assert bars.filter(pl.col("session") >= CHANGE).height == len(served_meta)
    assert bars["close"].min() > 15  # nothing of the ~$12 security that held META before
    catalog = Store(data).catalog
    assert catalog.scalar("SELECT history_from FROM symbols WHERE symbol = 'META'") == \
        D(2012, 5, 18)
    assert catalog.scalar("SELECT passed FROM quality_status WHERE symbol = 'META' "
                          "AND check_name = 'ticker_reuse'") is True


class NoReference(MassiveProvider):
    """A plan without the ticker reference: nothing bounds the history."""

    def ticker_reference(self, symbol):
        raise NotEntitledError("no reference on this plan", provider="massive")


def test_without_the_reference_metas_history_mixes_two_securities_and_a_check_says_so(
        tmp_path):
    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / "data")}, dotenv_path=None)
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [("META", "stocks", None)])
    now = dt.datetime(2026, 11, 25, 22, tzinfo=dt.UTC)
    with (FakeMassive(symbols=("META",), today=TODAY) as fake,
          NoReference(httpx.Client(timeout=30), fake.api_key, fake.base_url, None,
                      today=lambda: TODAY, owns_client=True,
                      retry=RetryPolicy(max_retries=1, sleep=lambda s: None)) as provider):
        eng = Engine(store, provider, settings.with_(history_years=5), clock=lambda: now)
        assert eng.run(RunParams(datasets=["bars"])).state == "succeeded"
        assert not any("/FB/" in s.path for s in fake.requests)
    bars = store.lake.read("bars", ["META"], level="1d")
    assert bars["close"].min() < 15  # the other security's bars, under META
    status = store.catalog.query(
        "SELECT check_name FROM quality_status WHERE symbol = 'META' AND NOT passed")
    assert status["check_name"].to_list() == ["ticker_reuse"]


# -- the sample provider's own universe ------------------------------------------------------
def test_sample_symbols_add_refuses_unknown_and_keeps_the_providers_case(tmp_path):
    data = tmp_path / "data"
    res = _cli(data, "symbols", "add", "NOPE")
    assert res.returncode == 2
    assert "NOPE is not a ticker sample knows" in res.stderr
    assert "case-sensitive" in res.stderr
    ok = _cli(data, "symbols", "add", "KIMpL", "msft")
    assert ok.returncode == 0, ok.stderr
    assert "added KIMpL (" in ok.stdout and "added MSFT (" in ok.stdout  # as the reference
    held = list_symbols(Store(data).catalog)["symbol"].to_list()
    assert held == ["KIMpL", "MSFT"]
    assert _cli(data, "symbols", "add", "KIMPL").returncode == 2  # another ticker: unknown
    run = _cli(data, "run", "--symbols", "kimpl", "--datasets", "bars")  # any case finds it
    assert run.returncode == 0, run.stderr
    lake = Lake(data / "lake")
    assert lake.read("bars", ["KIMpL"], level="1d")["symbol"].unique().to_list() == ["KIMpL"]
    # On disk, KIMpL differs from a KIMPL in more than case (case-insensitive file systems).
    assert symbol_dir_name("KIMpL") == "symbol=KIM%70L"
    assert symbol_dir_name("KIMpL").lower() != symbol_dir_name("KIMPL").lower()
    assert (data / "lake" / "bars" / "timeframe=1d" / "symbol=KIM%70L").is_dir()


def test_a_delisted_symbol_is_marked_kept_and_no_longer_refreshed(tmp_path):
    data = tmp_path / "data"
    add = _cli(data, "symbols", "add", "TWTR")
    assert add.returncode == 0 and "delisted: last traded 2022-10-27" in add.stdout
    settings = load_settings({"ENRICH_DATA_DIR": str(data)}, dotenv_path=None)
    store = Store.from_settings(settings)
    assert store.catalog.scalar("SELECT delisted_on FROM symbols") == D(2022, 10, 27)
    provider = SampleProvider(clock=lambda: FIXED_NOW)
    eng = Engine(store, provider, settings.with_(history_years=5), clock=lambda: FIXED_NOW)
    first = eng.run(RunParams())
    assert first.state == "succeeded" and first.records > 0
    bars = store.lake.read("bars", ["TWTR"], level="1d")
    assert bars["session"].max() == D(2022, 10, 27)  # its last trading day, no later
    later = Engine(store, provider, settings.with_(history_years=5),
                   clock=lambda: FIXED_NOW + dt.timedelta(days=30)).run(RunParams())
    assert later.requests == 0  # nothing more is ever asked
    from enrich.views.status import status_grid
    grid = status_grid(store.catalog, now=FIXED_NOW + dt.timedelta(days=30))
    assert set(grid["state"]) == {"not_expected"}
    assert "TWTR" in list_symbols(store.catalog)["symbol"].to_list()  # kept


def test_an_unknown_ticker_that_came_in_otherwise_fetches_nothing(settings):
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [("NOPE", "stocks", None), ("MSFT", "stocks", None)])
    provider = SampleProvider(clock=lambda: FIXED_NOW)
    eng = Engine(store, provider, settings.with_(history_years=1), clock=lambda: FIXED_NOW)
    summary = eng.run(RunParams())
    by = {r.symbol: r for r in summary.results}
    assert by["MSFT"].state == "ok" and by["NOPE"].state == "failed"
    assert by["NOPE"].requests == 1  # the reference, and no history
    assert {type(e).__name__ for e in by["NOPE"].errors} == {"UnknownTickerError"}
    # Counted in symbols, as the number before it (a QA pass: "1 failed (unknown_ticker: 5)"
    # counted its datasets).
    from enrich.pipeline.run_model import describe

    assert "1 failed (unknown_ticker: 1)" in describe(summary)
    assert store.lake.read("bars", ["NOPE"]).is_empty()
    error = store.catalog.scalar("SELECT reference_error FROM symbols WHERE symbol = 'NOPE'")
    assert "not in sample's ticker reference" in error and "symbols remove NOPE" in error
    again = Engine(store, provider, settings, clock=lambda: FIXED_NOW).run(
        RunParams(symbols=["NOPE"]))
    assert again.results[0].requests == 0  # refused from the record for a week
    # Nor does a backfill (found by a QA pass: an hourly bars backfill stored NOPE's bars).
    from enrich.backfill.jobs import Backfiller, BackfillRequest

    bf = Backfiller(store, provider, settings, clock=lambda: FIXED_NOW)
    done = bf.run(bf.plan(BackfillRequest("bars", ("NOPE", "MSFT"), days=30, timeframe="1h")))
    assert done.state != "succeeded"
    assert store.lake.read("bars", ["NOPE"], level="1h").is_empty()
    assert not store.lake.read("bars", ["MSFT"], level="1h").is_empty()
    assert store.lake.read_coverage("NOPE") == {}
    failed = store.catalog.query("SELECT error_class FROM fetch_log WHERE symbol = 'NOPE' AND "
                                 "run_id = ?", [done.run_id])["error_class"].to_list()
    assert failed and set(failed) == {"unknown_ticker"}
    # A refusal older than a week is no refusal (a run asks the reference again then): the
    # backfill asks the provider (found by a review: it refused for good).
    store.catalog.query("UPDATE symbols SET reference_checked_at = reference_checked_at - "
                        "INTERVAL 8 DAY WHERE symbol = 'NOPE'")
    bf = Backfiller(store, provider, settings, clock=lambda: FIXED_NOW)
    again = bf.run(bf.plan(BackfillRequest("bars", ("NOPE",), days=30, timeframe="1h")))
    classes = set(store.catalog.query(
        "SELECT error_class FROM fetch_log WHERE symbol = 'NOPE' AND run_id = ?",
        [again.run_id])["error_class"].to_list())
    assert classes and "unknown_ticker" not in classes  # the provider was asked


def test_add_verified_refuses_a_class_the_reference_contradicts(settings):
    store = Store.from_settings(settings)
    with pytest.raises(InputError, match="X:BTCUSD is crypto"):
        add_verified(store.catalog, SampleProvider(), [("X:BTCUSD", "stocks", None)])
    added = add_verified(store.catalog, SampleProvider(), [("SPY", "stocks", None)])
    assert added.references[0].reference.type == "ETF"  # stocks and etfs are one kind of listing


def test_a_run_corrects_an_imported_class_the_reference_contradicts(settings):
    """Found by a QA pass: `symbols import` of `X:SOLUSD,stocks` kept the class; the run
    asked splits, dividends, earnings, news and option chains of the pair, stored its bars on
    the exchange's sessions and failed `off_calendar` on 114 of them — "succeeded"."""
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [("X:BTCUSD", "stocks", None), ("MSFT", "stocks", None)])
    provider = SampleProvider(clock=lambda: FIXED_NOW)
    first = Engine(store, provider, settings.with_(history_years=1),
                   clock=lambda: FIXED_NOW).run(RunParams())
    by = {r.symbol: r for r in first.results}
    assert by["MSFT"].state == "ok" and by["X:BTCUSD"].state == "failed"
    errors = by["X:BTCUSD"].errors  # each dataset it was asked for, failed with it
    error = errors[0]
    assert {type(e) for e in errors} == {InputError} and "X:BTCUSD is crypto" in str(error)
    assert "corrected to crypto" in str(error)
    assert store.lake.read("bars", ["X:BTCUSD"]).is_empty()  # nothing fetched as a stock
    assert store.catalog.scalar("SELECT asset_class FROM symbols WHERE symbol = "
                                "'X:BTCUSD'") == "crypto"
    again = Engine(store, provider, settings.with_(history_years=1),
                   clock=lambda: FIXED_NOW).run(RunParams(symbols=["X:BTCUSD"]))
    assert again.state == "succeeded"
    bars = store.lake.read("bars", ["X:BTCUSD"], level="1d")
    assert bars["session"].dt.weekday().max() == 7  # every UTC day: weekends too
    assert store.lake.read("dividends", ["X:BTCUSD"]).is_empty()


def test_the_demo_universe_holds_metas_linked_history_without_a_break(settings):
    """The demo universe is seeded without `symbols add`: the engine reads each symbol's
    reference before its first history fetch."""
    from enrich.store.universe import ensure_demo_universe

    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    provider = SampleProvider(clock=lambda: FIXED_NOW)
    eng = Engine(store, provider, settings.with_(history_years=10), clock=lambda: FIXED_NOW)
    summary = eng.run(RunParams(symbols=["META"], datasets=["bars"]))
    assert summary.state == "succeeded"
    bars = store.lake.read("bars", ["META"], level="1d").sort("session")
    fb = provider.bars("FB", "1d", bars["session"][0], CHANGE - dt.timedelta(days=1))
    assert bars.filter(pl.col("session") < CHANGE)["close"].to_list() == fb["close"].to_list()
    results = quality_run.run_checks(store.lake, "META", "stocks", ["bars"])
    assert not results.failures, [(r.check, r.detail) for r in results.failures]
