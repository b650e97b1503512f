"""The daily refresh within the plan's quota (issue: universe-wide requests, one pipeline).

Against the loopback fake (``tests/fakes/massive_server.py``) with a market of 523 tickers
and 100-row pages: a universe enriched on a Friday and refreshed after Monday's close costs a
handful of universe-wide requests whatever its size, stores exactly the rows served, and equals
the per-symbol path frame for frame; a 500 on one request in seven costs a retry of that
request only. The market-wide endpoints and grouped daily follow the public spec
(massive-com/client-go rest/scripts/openapi.json, as summarised in
shared/reference/massive-refresh-and-correctness.md §1-§4).
"""

from __future__ import annotations

import datetime as dt

import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from enrich import calendars
from enrich.config import load_settings
from enrich.pipeline.engine import Engine
from enrich.pipeline.refresh import Target, plan_refresh, window_for
from enrich.pipeline.run_model import RunParams
from enrich.providers import MarketRequest
from enrich.providers.massive.provider import MassiveProvider
from enrich.providers.retry import RetryPolicy
from enrich.providers.sample.provider import SampleProvider
from enrich.schemas import DATASETS
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from tests.fakes.massive_server import FakeMassive, market_tickers

UTC = dt.UTC
D = dt.date
FRIDAY = dt.datetime(2026, 11, 20, 23, 0, tzinfo=UTC)  # after Friday's close
MONDAY = dt.datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # after Monday's close
MARKET = ("AAPL", "MSFT", "SPY", *market_tickers(520))
FETCHED = ("bars", "dividends", "splits", "earnings", "news")


def test_window_reasks_the_last_sessions_and_looks_back_for_late_events():
    kw = dict(lookback_days=None, history_years=10, refetch_sessions=2, event_lookback_days=30)
    monday = D(2026, 11, 23)
    # Bars held through Friday: Thursday and Friday are asked again with Monday.
    assert window_for("bars", D(2026, 11, 20), monday, "XNYS", **kw) == (D(2026, 11, 19), monday)
    # Across Thanksgiving (Thursday 11-26 is no session): Wednesday and Friday.
    assert window_for("bars", D(2026, 11, 27), D(2026, 11, 30), "XNYS", **kw) == (
        D(2026, 11, 25), D(2026, 11, 30))
    assert window_for("dividends", D(2026, 11, 20), monday, "XNYS", **kw) == (
        D(2026, 10, 22), monday)
    # Up to date: nothing is asked again (a second run the same day fetches nothing).
    for ds in ("bars", "dividends", "news", "options_iv"):
        assert window_for(ds, monday, monday, "XNYS", **kw) is None
    # A first fetch reaches back the history; news a year.
    assert window_for("bars", None, monday, "XNYS", **kw)[0] == monday - dt.timedelta(days=3652)
    assert window_for("news", None, monday, "XNYS", **kw)[0] == monday - dt.timedelta(days=365)
    no_refetch = dict(kw, refetch_sessions=0, event_lookback_days=0)
    assert window_for("bars", D(2026, 11, 20), monday, "XNYS", **no_refetch) == (
        D(2026, 11, 21), monday)


class CountingProvider:
    """Costs like the sample provider: a universe-wide request per session (bars) or window."""

    def estimate_requests(self, request: MarketRequest) -> int:
        return len(request.sessions) if request.dataset == "bars" else 1


def _plan(targets, **kw):
    args = dict(now=MONDAY, provider=CountingProvider(), datasets=None, timeframe="1d",
                lookback_days=None, history_years=10, refetch_sessions=2,
                event_lookback_days=30)
    return plan_refresh(targets, **(args | kw))


def test_plan_picks_the_cheaper_path_per_dataset():
    friday = {"bars:1d": D(2026, 11, 20), "dividends": D(2026, 11, 20),
              "splits": D(2026, 11, 20), "earnings": D(2026, 11, 20),
              "news": D(2026, 11, 20), "options_iv": D(2026, 11, 20)}
    many = [Target(f"S{i:02d}", "stocks", friday) for i in range(40)]
    plan = _plan(many)
    bars = plan.budget["bars"]
    assert bars.path == "universe-wide" and bars.requests == 3  # Thu, Fri (again) and Mon
    for ds in ("dividends", "splits", "earnings", "news"):
        assert plan.budget[ds].requests == 1, ds
    assert plan.budget["options_iv"].requests == 40  # option chains stay per underlying
    assert plan.requests == 3 + 4 + 40 and plan.per_symbol_requests == 6 * 40

    # Two symbols: three grouped requests would cost more than two of their own.
    few = _plan(many[:2])
    assert few.budget["bars"].path == "per symbol" and few.budget["bars"].requests == 2
    # A tie goes per symbol (exact rows, nothing filtered).
    assert _plan(many[:1]).budget["dividends"].path == "per symbol"

    # First enrichments go per symbol; a symbol far behind too, the rest universe-wide.
    behind = dict(friday, **{"bars:1d": D(2026, 6, 1)})
    mixed = _plan([*many[:10], Target("NEW", "stocks", {}), Target("OLD", "stocks", behind)])
    b = mixed.budget["bars"]
    assert (b.universe_requests, b.symbol_requests) == (3, 2)
    assert mixed.units[("NEW", "bars")].market is None
    assert mixed.units[("OLD", "bars")].market is None
    assert mixed.units[("S00", "bars")].market.sessions == (
        D(2026, 11, 19), D(2026, 11, 20), D(2026, 11, 23))
    # Indices have no grouped daily: per symbol; crypto has its own market.
    idx = _plan([Target(f"I:X{i}", "indices", friday) for i in range(5)])
    assert idx.budget["bars"].path == "per symbol"
    assert _plan(many, universe_wide=False).requests == 6 * 40


# ---- the loopback fake: a market of 523 tickers, 100-row pages ------------------------------


def _provider(fake: FakeMassive, today: dt.date, **kw) -> MassiveProvider:
    retry = RetryPolicy(max_retries=kw.pop("max_retries", 3), sleep=lambda s: None)
    return MassiveProvider(httpx.Client(timeout=30), fake.api_key, fake.base_url, None,
                           today=lambda: today, retry=retry, owns_client=True, **kw)


def _store(tmp_path, name: str, symbols, options_symbols=None) -> tuple[Store, object]:
    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / name)}, dotenv_path=None)
    settings = settings.with_(history_years=1, max_concurrent_symbols=8,
                              options_symbols=options_symbols)
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [(s, "etfs" if s == "SPY" else "stocks", None) for s in symbols])
    return store, settings


def _enrich_friday_refresh_monday(tmp_path, name, universe, fake_kw=None, path=True,
                                  max_retries=3, options_symbols=None):
    """Enrich on Friday (a month of history), refresh after Monday's close; returns the store
    and the requests the refresh made (option chains apart) and all it made."""
    store, settings = _store(tmp_path, name, universe, options_symbols)
    with FakeMassive(symbols=MARKET, today=MONDAY.date(), page_size=100, news_every=20,
                     **(fake_kw or {})) as fake:
        with _provider(fake, FRIDAY.date(), max_retries=max_retries) as p:
            Engine(store, p, settings, clock=lambda: FRIDAY).run(RunParams(lookback_days=30))
        before = len(fake.requests)
        with _provider(fake, MONDAY.date(), max_retries=max_retries) as p:
            summary = Engine(store, p, settings, clock=lambda: MONDAY).run(
                RunParams(universe_wide=path))
        seen = fake.requests[before:]
        served = {(s, ds): fake.served_rows(s, ds) for s in universe for ds in FETCHED}
    chains = sum(1 for r in seen if r.path.startswith("/v3/snapshot/options/"))
    return store, summary, len(seen) - chains, len(seen), served


@pytest.mark.slow
def test_a_monday_refresh_costs_a_few_requests_whatever_the_universe(tmp_path):
    small = MARKET[:42]
    store, summary, cost42, _, served = _enrich_friday_refresh_monday(tmp_path, "s42", small)
    assert summary.failed == 0 and summary.ok == 42
    # Bars: grouped daily for Thu, Fri (re-asked) and Mon; one market-wide window each for
    # dividends, splits, income statements and news (a page or two of 100 rows); the
    # Treasury curve since Friday's (one request). The bound, Treasury curve included.
    assert cost42 <= 12, cost42
    assert summary.requests == cost42 + 42  # + one option chain page per underlying
    _assert_lake_holds_the_served_rows(store, small, served)

    # 500 symbols, option chains for ten of them (pricing 500 chains twice would only make
    # the test slow: chains are per underlying and apart from the count asserted here).
    big = MARKET[:500]
    store, summary, cost500, all500, _ = _enrich_friday_refresh_monday(
        tmp_path, "s500", big, options_symbols=tuple(big[:10]))
    assert summary.failed == 0 and summary.ok == 500
    assert cost500 == cost42
    assert all500 == cost500 + 10


def _assert_lake_holds_the_served_rows(store: Store, universe, served) -> None:
    """Every row the fake served for a symbol of the universe is in the lake, and nothing
    else: bars by session (grouped rows are stamped at the close, per-ticker ones at midnight,
    both on the session's New York date), events by their key."""
    lake = store.lake
    bars = lake.read("bars", level="1d")
    assert set(bars["symbol"].unique()) <= set(universe)
    for sym in universe:
        got = bars.filter(pl.col("symbol") == sym).select("session", "close").sort("session")
        want = pl.DataFrame(
            [{"session": dt.datetime.fromtimestamp(r["t"] / 1000, UTC)
              .astimezone(calendars_tz()).date(), "close": r["c"]}
             for r in served[(sym, "bars")]], schema={"session": pl.Date, "close": pl.Float64},
        ).unique().sort("session")
        assert_frame_equal(got, want, check_exact=True)
        ex = lake.read("dividends", [sym])
        assert sorted(ex["ex_date"].to_list()) == sorted(
            {D.fromisoformat(r["ex_dividend_date"]) for r in served[(sym, "dividends")]})
        news = lake.read("news", [sym])
        assert sorted(news["id"].to_list()) == sorted({r["id"] for r in served[(sym, "news")]})
        earn = lake.read("earnings", [sym])
        assert earn.height == len({r["period_end"] for r in served[(sym, "earnings")]})


def calendars_tz():
    from zoneinfo import ZoneInfo

    return ZoneInfo(calendars.EXCHANGE_TZ)


@pytest.mark.slow
def test_universe_wide_and_per_symbol_refreshes_leave_the_same_lake(tmp_path):
    universe = MARKET[:24]
    wide, s1, cost_wide, _, _ = _enrich_friday_refresh_monday(tmp_path, "wide", universe)
    each, s2, cost_each, _, _ = _enrich_friday_refresh_monday(tmp_path, "each", universe,
                                                              path=False)
    assert s1.failed == s2.failed == 0
    assert cost_wide < cost_each / 10  # 24 symbols × 5 datasets against ~10
    for name in DATASETS:
        assert_frame_equal(wide.lake.read(name), each.lake.read(name), check_exact=True)


def test_the_sample_provider_runs_the_same_path_with_the_same_rows(tmp_path):
    stores = []
    for name, path in (("wide", True), ("each", False)):
        settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / name)}, dotenv_path=None)
        settings = settings.with_(history_years=1)
        store = Store.from_settings(settings)
        syms = ["AAPL", "MSFT", "NVDA", "KO", "SPY", "QQQ"]
        add_symbols(store.catalog, [(s, "etfs" if s in ("SPY", "QQQ") else "stocks", None)
                                    for s in syms])
        Engine(store, SampleProvider(clock=lambda: FRIDAY), settings,
               clock=lambda: FRIDAY).run()
        summary = Engine(store, SampleProvider(clock=lambda: MONDAY), settings,
                         clock=lambda: MONDAY).run(RunParams(universe_wide=path))
        stores.append((store, summary))
    (wide, s1), (each, s2) = stores
    assert s1.failed == s2.failed == 0
    assert s1.requests < s2.requests
    markets = wide.catalog.query("SELECT dataset, requests FROM fetch_log WHERE symbol = '*' "
                                 "AND run_id = ?", [s1.run_id])
    assert set(markets["dataset"]) == {"bars", "dividends", "splits", "earnings", "news"}
    for name in DATASETS:
        assert_frame_equal(wide.lake.read(name), each.lake.read(name), check_exact=True)


@pytest.mark.slow
def test_one_request_in_seven_failing_costs_only_its_retries(tmp_path):
    universe = MARKET[:42]
    _, clean, _, total_clean, _ = _enrich_friday_refresh_monday(tmp_path, "clean", universe)
    store, faulty, _, total_faulty, _ = _enrich_friday_refresh_monday(
        tmp_path, "faulty", universe, {"fail_every": 7})
    assert faulty.failed == 0 and faulty.ok == 42
    assert faulty.retries > 0
    assert total_faulty <= 1.25 * total_clean, (total_faulty, total_clean)
    retried = store.catalog.scalar(
        "SELECT count(*) FROM fetch_log WHERE status = 'retried' AND run_id = ?",
        [faulty.run_id])
    assert retried == faulty.retries


def test_a_failed_page_is_retried_alone(tmp_path):
    """Ten years of bars come in 26 pages of 100; page 5 answers 500 once: only page 5 is
    asked again, never page 1 (before, the whole fetch restarted)."""
    with FakeMassive(symbols=("AAPL",), today=MONDAY.date(), page_size=100) as fake:
        fake.fail("/v2/aggs/ticker/AAPL/", nth=5, status=500)
        with _provider(fake, MONDAY.date()) as p:
            frame = p.bars("AAPL", "1d", D(2016, 11, 23), MONDAY.date())
            stats = p.take_requests()
        pages = [r for r in fake.requests if r.path.startswith("/v2/aggs/ticker/AAPL/")]
    assert frame.height == len(calendars.sessions("XNYS", D(2016, 11, 23), MONDAY.date()))
    assert [r.status for r in pages].count(500) == 1
    assert len(pages) == 26 + 1 and stats.requests == 27
    assert pages[4].query == pages[5].query and "cursor=" in pages[5].query
    assert [r.attempt for r in stats.retries] == [1]
    assert stats.retries[0].error_class == "transient"


def test_dry_run_prints_the_budget_and_the_run_makes_exactly_it(tmp_path, capsys,
                                                                 monkeypatch):
    """``run --dry-run`` makes no request and writes no run; the sample provider's estimates
    are exact, so the run that follows makes exactly the planned requests."""
    import json

    from enrich.cli import main

    monkeypatch.setenv("ENRICH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENRICH_HISTORY_YEARS", "1")
    monkeypatch.setenv("ENRICH_NOW", FRIDAY.isoformat())
    monkeypatch.chdir(tmp_path)  # no developer .env
    assert main(["run", "--json"]) == 0
    monkeypatch.setenv("ENRICH_NOW", MONDAY.isoformat())
    capsys.readouterr()
    assert main(["run", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "universe-wide" in text and "total:" in text and "by the per-symbol path" in text
    assert main(["run", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    store = Store(tmp_path / "data")
    assert store.catalog.scalar("SELECT count(*) FROM runs") == 1  # the dry runs wrote none
    by_ds = {r["dataset"]: r for r in plan["datasets"]}
    assert by_ds["bars"]["universe_requests"] == 3  # Thu, Fri again, Mon
    assert plan["requests"] < plan["per_symbol_requests"]
    assert main(["run", "--json"]) == 0
    ran = json.loads(capsys.readouterr().out)
    assert ran["requests"] == plan["requests"]
    row = store.catalog.query("SELECT requests, requests_planned FROM runs WHERE run_id = ?",
                              [ran["run_id"]]).row(0)
    assert row == (plan["requests"], plan["requests"])


# ---- one pipeline: a backfill and a heatmap fill record what a run records -----------------


def _tampered(tmp_path, name: str, drop: bool = False):
    """AAPL enriched on Friday, then one stored October bar changed behind the provider's
    back (a restatement to find); with ``drop``, the sessions either side deleted (a gap that
    a heatmap fill spans)."""
    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / name)}, dotenv_path=None)
    settings = settings.with_(history_years=1)
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [("AAPL", "stocks", None)])
    Engine(store, SampleProvider(clock=lambda: FRIDAY), settings, clock=lambda: FRIDAY).run()
    bars = store.lake.read("bars", ["AAPL"], level="1d").sort("session")
    october = bars.filter(pl.col("session").dt.month() == 10)
    s1, s2, s3 = october["session"].to_list()[10:13]
    changed = bars.filter(pl.col("session") == s2).with_columns(
        pl.col("close") * 1.05, pl.col("high") * 1.05)
    store.lake.upsert("bars", changed)
    if drop:
        keep = store.lake.read("bars", ["AAPL"], level="1d").filter(
            ~pl.col("session").is_in([s1, s3]))
        store.lake.replace_symbol("bars", "AAPL", keep, level="1d")
        from enrich.checks import quality_run

        quality_run.audit(store, ["AAPL"], ["bars"])  # the heatmap sees the gap
    return store, settings, (s1, s2, s3)


def _recorded(store: Store, run_id: str) -> tuple[list, set]:
    restated = store.catalog.query(
        "SELECT symbol, dataset, session, column_name, old_value, new_value FROM restatements "
        "WHERE run_id = ? ORDER BY session, column_name", [run_id]).rows()
    checks = set(store.catalog.query(
        "SELECT dataset, check_name, passed FROM quality_log WHERE run_id = ? "
        "AND dataset = 'bars'", [run_id]).rows())
    return restated, checks


def test_a_backfill_and_a_heatmap_fill_record_what_a_run_records(tmp_path):
    from enrich.backfill import heatmap as cov
    from enrich.backfill.jobs import Backfiller, BackfillRequest

    # A run whose window covers the changed bar (its watermark set back before it).
    store, settings, (s1, s2, s3) = _tampered(tmp_path, "run")
    store.lake.write_coverage("AAPL", {**store.lake.read_coverage("AAPL"),
                                       "bars:1d": s1 - dt.timedelta(days=1)})
    ran = Engine(store, SampleProvider(clock=lambda: FRIDAY), settings,
                 clock=lambda: FRIDAY).run(RunParams(datasets=["bars"]))
    by_run = _recorded(store, ran.run_id)
    assert [(r[2], r[3]) for r in by_run[0]] == [(s2, "close"), (s2, "high")]
    assert by_run[1], "the run checked the bars"

    store, settings, _ = _tampered(tmp_path, "backfill")
    bf = Backfiller(store, SampleProvider(clock=lambda: FRIDAY), settings, clock=lambda: FRIDAY)
    done = bf.run(bf.plan(BackfillRequest("bars", ("AAPL",), since=s1, until=FRIDAY.date())))
    assert done.state == "succeeded"
    assert _recorded(store, done.run_id) == by_run

    store, settings, _ = _tampered(tmp_path, "fill", drop=True)
    hm = cov.heatmap(store.catalog, "bars", FRIDAY, sessions=60)
    plan = cov.plan_fill(hm, ["AAPL"], s1, s3)
    assert plan.backfills == [(("AAPL",), s1, s3)]
    import threading
    finished = threading.Event()
    (fill_run,) = cov.start_fill(plan, settings=settings.with_(now_override=FRIDAY),
                                 store=store, on_done=lambda info: finished.set())
    assert finished.wait(120)
    restated, checks = _recorded(store, fill_run)
    assert restated == by_run[0]  # s2, between the two filled sessions, was re-fetched
    assert checks == by_run[1]
