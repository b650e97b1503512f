"""Read models of the dashboard, checked against direct catalog queries (no Streamlit)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from enrich import ui
from enrich.errors import NotEntitledError, TransientError
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.providers.retry import RetryPolicy
from enrich.providers.sample.provider import SampleProvider
from enrich.store.store import Store
from enrich.store.universe import ensure_demo_universe, set_active
from enrich.symbols import DATASETS_BY_CLASS, DEMO_UNIVERSE
from enrich.views import health as health_view
from enrich.views import metrics as metrics_view
from enrich.views import quality as quality_view
from enrich.views import runs as runs_view
from enrich.views import status as status_view
from enrich.views import symbols as symbols_view
from tests.conftest import FIXED_NOW

UTC = dt.UTC
RUN_SYMBOLS = ["AAPL", "MSFT", "SPY", "KO", "X:BTCUSD"]


class DemoFaults:
    """The sample provider with a few faults a dashboard must show.

    MSFT options are not entitled; SPY news always fails (transient, retried, then failing);
    one of KO's bars is impossible (low above close) and is refused by validation.
    """

    def __init__(self, inner: SampleProvider):
        self.inner = inner
        self.name, self.is_demo, self.rate_limited = inner.name, True, False

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def option_chain(self, symbol, as_of, spot=None):
        if symbol == "MSFT":
            raise NotEntitledError("options are not in this plan", provider="test",
                                   endpoint="option_chain", status=403)
        return self.inner.option_chain(symbol, as_of, spot)

    def with_priority(self, priority):
        return self

    def news(self, symbol, start, end):
        if symbol == "SPY":  # every attempt of the request fails, under the retry policy
            def fail():
                raise TransientError("upstream timeout", provider="test", endpoint="news",
                                     status=504)
            self.inner.request("news", symbol, fail)
        return self.inner.news(symbol, start, end)

    def bars(self, symbol, timeframe, start, end):
        frame = self.inner.bars(symbol, timeframe, start, end)
        if symbol == "KO" and frame.height:
            frame = frame.with_columns(
                pl.when(pl.int_range(pl.len()) == 5).then(pl.col("close") * 2)
                .otherwise(pl.col("low")).alias("low"))
        return frame


def populate(settings, now: dt.datetime = FIXED_NOW, symbols=RUN_SYMBOLS,
             lookback_days: int = 120):
    """Run the engine once over ``symbols`` with the demo faults; returns the run summary."""
    settings = settings.with_(history_years=1, max_retries=1)
    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    clock = lambda: now  # noqa: E731
    retry = RetryPolicy(max_retries=settings.max_retries, sleep=lambda s: None)
    engine = Engine(store, DemoFaults(SampleProvider(clock=clock, retry=retry)), settings,
                    clock=clock)
    return engine.run(RunParams(symbols=list(symbols), lookback_days=lookback_days),
                      kind="manual")


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    from enrich.config import load_settings

    data = tmp_path_factory.mktemp("populated")
    settings = load_settings({"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off"},
                             dotenv_path=None)
    summary = populate(settings)
    return Store.from_settings(settings), summary


@pytest.fixture
def empty_store(settings):
    return Store.from_settings(settings)


# -- the status grid --------------------------------------------------------------------------
def test_grid_has_one_row_per_active_symbol_and_applicable_dataset(populated):
    store, _ = populated
    grid = status_view.status_grid(store.catalog, FIXED_NOW)
    expected = sum(len(DATASETS_BY_CLASS[s.asset_class]) for s in DEMO_UNIVERSE)
    assert grid.height == expected
    assert grid.filter(pl.col("symbol") == "X:BTCUSD")["dataset"].sort().to_list() == \
        ["bars", "news"]


def test_grid_states_follow_what_happened(populated):
    store, _ = populated
    grid = status_view.status_grid(store.catalog, FIXED_NOW)

    def state(sym, ds):
        return grid.filter((pl.col("symbol") == sym) & (pl.col("dataset") == ds))["state"][0]

    assert state("AAPL", "bars") == "fresh"
    assert state("AAPL", "options_iv") == "fresh"
    assert state("MSFT", "options_iv") == "not_entitled"
    assert state("SPY", "news") == "failing"
    assert state("NVDA", "bars") == "never"
    # a week later without a run, the same bars are stale (counted in sessions)
    later = status_view.status_grid(store.catalog, FIXED_NOW + dt.timedelta(days=7))
    aapl = later.filter((pl.col("symbol") == "AAPL") & (pl.col("dataset") == "bars"))
    assert aapl["state"][0] == "stale" and aapl["sessions_behind"][0] == 4  # Thanksgiving
    # the next morning, before the close, nothing is behind yet
    morning = status_view.status_grid(store.catalog, dt.datetime(2026, 11, 27, 14, 0, tzinfo=UTC))
    assert morning.filter((pl.col("symbol") == "AAPL")
                          & (pl.col("dataset") == "bars"))["state"][0] == "fresh"


def test_distribution_counts_match_the_catalog(populated):
    store, _ = populated
    grid = status_view.status_grid(store.catalog, FIXED_NOW)
    dist = status_view.state_distribution(grid)
    assert set(dist["state"]) == set(status_view.GRID_STATES)
    assert dist["symbols"].sum() == grid.height
    fetched_ok = store.catalog.scalar(
        "SELECT count(*) FROM symbol_status WHERE dataset = 'bars' "
        "AND consecutive_failures = 0")
    fresh_bars = dist.filter((pl.col("dataset") == "bars") & (pl.col("state") == "fresh"))
    assert fresh_bars["symbols"][0] == fetched_ok == len(RUN_SYMBOLS)
    never_bars = dist.filter((pl.col("dataset") == "bars") & (pl.col("state") == "never"))
    assert never_bars["symbols"][0] == len(DEMO_UNIVERSE) - len(RUN_SYMBOLS)


def test_inactive_symbols_leave_the_grid(settings):
    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    set_active(store.catalog, ["AAPL"], False)
    grid = status_view.status_grid(store.catalog, FIXED_NOW)
    assert "AAPL" not in set(grid["symbol"])
    assert "AAPL" in set(
        status_view.status_grid(store.catalog, FIXED_NOW, active_only=False)["symbol"])


def test_symbol_summary_worst_state_and_filters(populated):
    store, _ = populated
    summary = status_view.symbol_summary(status_view.status_grid(store.catalog, FIXED_NOW))
    assert summary.height == len(DEMO_UNIVERSE)
    row = summary.filter(pl.col("symbol") == "SPY").row(0, named=True)
    assert row["state"] == "failing" and row["news"] == "failing"
    assert row["last_error_class"] == "transient" and row["bars"] == "fresh"
    assert row["earnings"] is None  # ETFs have no earnings
    msft = summary.filter(pl.col("symbol") == "MSFT").row(0, named=True)
    assert msft["state"] == "fresh" and msft["options_iv"] == "not_entitled"

    counts = status_view.symbol_state_counts(summary)
    assert counts["failing"] == 1 and counts["fresh"] == 4
    assert counts["never"] == len(DEMO_UNIVERSE) - len(RUN_SYMBOLS)
    assert sum(counts.values()) == len(DEMO_UNIVERSE)

    page, total = status_view.filter_symbols(summary, state="never", limit=5)
    assert total == counts["never"] and page.height == 5
    page2, _ = status_view.filter_symbols(summary, state="never", limit=5, offset=5)
    assert not set(page["symbol"]) & set(page2["symbol"])
    assert status_view.filter_symbols(summary, search="apple")[0]["symbol"].to_list() == ["AAPL"]
    assert status_view.filter_symbols(summary, search="btc")[1] == 1
    by_ds, n = status_view.filter_symbols(summary, state="not_entitled", dataset="options_iv")
    assert n == 1 and by_ds["symbol"][0] == "MSFT"
    first = status_view.filter_symbols(summary)[0]
    assert first["symbol"][0] == "SPY"  # needs attention: failing first


# -- pipeline metrics ---------------------------------------------------------------------------
def test_pipeline_metrics_match_the_logs(populated):
    store, summary = populated
    m = metrics_view.pipeline_metrics(store.catalog, since=FIXED_NOW - dt.timedelta(days=400))
    cat = store.catalog
    assert m["fetch"]["rows"] == cat.scalar("SELECT sum(records) FROM fetch_log") \
        == summary.records
    assert m["fetch"]["requests"] == cat.scalar("SELECT sum(requests) FROM fetch_log")
    assert m["fetch"]["failed"] == 1  # SPY news (MSFT options: the plan's, logged skipped)
    assert m["fetch"]["retries"] == 1  # one retry of SPY news before giving up
    assert cat.scalar("SELECT count(*) FROM fetch_log WHERE status = 'skipped' AND "
                      "error_class = 'not_entitled'") == 1
    steps = cat.scalar("SELECT count(*) FROM fetch_log WHERE status NOT IN "
                       "('retried', 'skipped')")
    assert m["fetch"]["steps"] == steps
    assert m["fetch"]["success_rate"] == pytest.approx((steps - 1) / steps)
    assert m["fetch"]["rejected"] == 1
    assert 0 < m["fetch"]["p50_ms"] <= m["fetch"]["p95_ms"]
    # Features per symbol, a volatility summary per stored chain (AAPL, SPY, KO).
    assert m["compute"]["steps"] == len(RUN_SYMBOLS) + 3 and m["compute"]["success_rate"] == 1
    # all time equals the wide window; a window after the run is empty
    assert metrics_view.pipeline_metrics(cat)["fetch"]["rows"] == m["fetch"]["rows"]
    future = metrics_view.pipeline_metrics(cat, since=dt.datetime(2100, 1, 1, tzinfo=UTC))
    assert future["fetch"]["steps"] == 0 and future["fetch"]["success_rate"] is None


def test_overall_success_and_latest(populated):
    store, summary = populated
    o = metrics_view.overall_success(store.catalog)
    assert o["runs_finished"] == 1 and o["run_success_rate"] == 0  # the run was partial
    assert o["task_success_rate"] == pytest.approx(4 / 5)  # SPY failed (MSFT: plan refusal)
    latest = metrics_view.latest_enrichment(store.catalog)
    assert latest["last_run"]["run_id"] == summary.run_id
    assert latest["last_success_at"] == store.catalog.scalar(
        "SELECT max(last_success_at) FROM symbol_status")


# -- runs -----------------------------------------------------------------------------------
def test_runs_search_filters_and_counts(populated):
    store, summary = populated
    page, total = runs_view.runs_search(store.catalog)
    assert total == 1 and page["run_id"][0] == summary.run_id
    assert page["state"][0] == "partial" and page["symbols_failed"][0] == 1  # SPY
    assert runs_view.runs_search(store.catalog, symbol="SPY")[1] == 1
    assert runs_view.runs_search(store.catalog, symbol="NVDA")[1] == 0
    assert runs_view.runs_search(store.catalog, state="succeeded")[1] == 0
    assert runs_view.runs_search(store.catalog, kind="manual")[1] == 1
    assert runs_view.runs_search(store.catalog, kind="scheduled")[1] == 0
    day = page["requested_at"][0]
    assert runs_view.runs_search(store.catalog, since=day - dt.timedelta(hours=1),
                                 until=day + dt.timedelta(hours=1))[1] == 1
    assert runs_view.runs_search(store.catalog, until=day - dt.timedelta(hours=1))[1] == 0
    # the CLI's read model keeps its shape
    assert runs_view.runs_table(store.catalog, limit=5)["run_id"].to_list() == [summary.run_id]


def test_run_detail_tasks_and_log(populated):
    store, summary = populated
    rid = summary.run_id
    d = runs_view.run_detail(store.catalog, rid)
    assert d["params"]["symbols"] == RUN_SYMBOLS
    assert d["error_summary"] == {"transient": 1, "not_entitled": 1}
    tasks = runs_view.run_tasks(store.catalog, rid)
    assert sorted(tasks["symbol"]) == sorted(RUN_SYMBOLS)
    assert tasks["started_at"].null_count() == 0 and (tasks["duration_s"] >= 0).all()
    assert runs_view.failed_symbols(store.catalog, rid) == ["SPY"]  # MSFT: not entitled
    log, n = runs_view.run_fetch_log(store.catalog, rid, limit=3)
    assert log.height == 3 and n == store.catalog.scalar(
        "SELECT count(*) FROM fetch_log WHERE run_id = ?", [rid])
    errs, n_err = runs_view.run_fetch_log(store.catalog, rid, errors_only=True)
    # SPY's failed news and its retry; MSFT's options the plan refused are a fact (logged
    # skipped, with its class), shown by the tasks' errors, not among the fetch log's errors.
    assert n_err == 2 and set(errs["status"]) == {"failed", "retried"}
    assert runs_view.run_fetch_log(store.catalog, rid, symbol="MSFT")[0].filter(
        pl.col("dataset") == "options_iv")["error_class"].to_list() == ["not_entitled"]
    assert runs_view.run_fetch_log(store.catalog, rid, symbol="AAPL")[1] == 6 + 1  # + reference
    summ = runs_view.run_fetch_summary(store.catalog, rid)
    assert summ.filter(pl.col("dataset") == "news")["failed"][0] == 1
    progress = runs_view.run_progress(store.catalog, rid)
    assert progress["done"] == progress["total"] == 5 and progress["eta_s"] is None
    assert progress["fraction"] == 1.0 and progress["current"] == []
    assert runs_view.run_detail(store.catalog, "nope") is None
    assert runs_view.run_progress(store.catalog, "nope") is None
    assert runs_view.active_runs(store.catalog) == []


def test_run_progress_of_a_running_run(settings):
    store = Store.from_settings(settings)
    t0 = dt.datetime(2026, 11, 25, 22, 0, tzinfo=UTC)
    store.catalog.query("""
        INSERT INTO runs (run_id, kind, state, requested_at, started_at, symbols_total,
                          symbols_ok, symbols_failed, symbols_skipped)
        VALUES ('r1', 'manual', 'running', ?, ?, 10, 3, 1, 0)""", [t0, t0])
    store.catalog.query("""
        INSERT INTO tasks (run_id, symbol, state, started_at) VALUES
        ('r1', 'A', 'ok', ?), ('r1', 'B', 'ok', ?), ('r1', 'C', 'ok', ?),
        ('r1', 'D', 'failed', ?), ('r1', 'E', 'running', ?), ('r1', 'F', 'running', ?)""",
        [t0] * 4 + [t0 + dt.timedelta(seconds=5), t0 + dt.timedelta(seconds=6)])
    p = runs_view.run_progress(store.catalog, "r1", now=t0 + dt.timedelta(seconds=40))
    assert p["done"] == 4 and p["total"] == 10 and p["current"] == ["E", "F"]
    assert p["eta_s"] == pytest.approx(40 / 4 * 6) and p["fraction"] == 0.4
    assert [r["run_id"] for r in runs_view.active_runs(store.catalog)] == ["r1"]
    # Found by a QA pass: symbols found up to date end at once, so a run of 3,850 symbols (1,000
    # new) read 80 % done, 3 s left, with 1,561 of its 7,000 planned requests made. Without a
    # rate limit the requests still measure the work.
    store.catalog.query("UPDATE runs SET symbols_total = 3850, requests_planned = 7000, "
                        "requests = 1561 WHERE run_id = 'r1'")
    store.catalog.query("INSERT INTO tasks (run_id, symbol, state, started_at) SELECT 'r1', "
                        "'U' || i, 'skipped', ? FROM range(3069) t(i)", [t0])
    p = runs_view.run_progress(store.catalog, "r1", now=t0 + dt.timedelta(seconds=13))
    assert p["done"] == 3073 and p["fraction"] == pytest.approx(1561 / 7000)
    assert p["eta_s"] == pytest.approx(13 / 1561 * (7000 - 1561))


# -- metrics -----------------------------------------------------------------------------------
def test_metrics_aggregates_match_the_logs(populated):
    store, summary = populated
    cat = store.catalog
    s = metrics_view.alltime_stats(cat)
    assert s["runs"] == 1 and s["runs_by_state"] == {"partial": 1}
    assert s["rows_written"] == summary.records and s["symbol_tasks"] == 5
    assert s["symbols"] == s["active_symbols"] == len(DEMO_UNIVERSE)
    by_ds = metrics_view.fetch_by_dataset(cat)
    assert by_ds["rows"].sum() == cat.scalar("SELECT sum(records) FROM fetch_log")
    assert by_ds.filter(pl.col("dataset") == "news")["failed"][0] == 1
    assert by_ds.schema["rows"] == pl.Int64
    comp = metrics_view.compute_by_dataset(cat)
    assert comp["rows"].sum() == cat.scalar("SELECT sum(records) FROM compute_log")
    errs = metrics_view.errors_by_class(cat)
    assert errs.filter(pl.col("dataset") == "news").row(0, named=True) == {
        "dataset": "news", "error_class": "transient", "failures": 1, "retried": 1}
    fails = metrics_view.failures_by_class(cat)
    # SPY news (transient); MSFT's options, not entitled, are no failure
    assert dict(zip(fails["error_class"], fails["failures"], strict=True)) == {
        "transient": 1}
    daily = metrics_view.fetch_daily(cat, FIXED_NOW, days=400)
    assert daily["rows"].sum() == by_ds["rows"].sum()
    # Features of the five symbols, and the volatility summary of the three chains stored
    # (AAPL, SPY and KO; MSFT's options are not entitled, BTC has none).
    assert metrics_view.compute_daily(cat, FIXED_NOW, days=400)["steps"].sum() == 5 + 3
    qual = metrics_view.quality(cat)
    assert qual.filter(pl.col("dataset") == "bars")["rejected"][0] == 1
    # KO's bad bar was refused alone: it is one of the rows received (a refused payload logs
    # none received), so the share refused is 1 of those, not 1 of received + 1.
    bars = qual.filter(pl.col("dataset") == "bars").row(0, named=True)
    assert bars["rejected_share"] == 1 / bars["received"]
    rej = metrics_view.recent_rejections(cat)
    assert rej["symbol"].to_list() == ["KO"] and "low" in rej["causes"][0]



def test_metrics_bundles_equal_their_read_models(populated, empty_store):
    """The Metrics page reads two bundles, each on one attach of the catalog: every part is
    what its own read model returns."""
    for store in (populated[0], empty_store):
        cat = store.catalog
        tot = metrics_view.metrics_totals(cat)
        assert tot["alltime"] == metrics_view.alltime_stats(cat)
        for name, view in (("fetch_by_dataset", metrics_view), ("errors_by_class", metrics_view),
                           ("compute_by_dataset", metrics_view), ("quality", metrics_view),
                           ("quality_by_dataset", quality_view),
                           ("quality_by_check", quality_view)):
            assert_frame_equal(tot[name], getattr(view, name)(cat))
        assert_frame_equal(tot["recent_rejections"], metrics_view.recent_rejections(cat, 20))
        win = metrics_view.metrics_window(cat, FIXED_NOW, 400)
        assert win["last_24h"] == metrics_view.pipeline_metrics(
            cat, FIXED_NOW - dt.timedelta(hours=24))
        assert_frame_equal(win["hourly"], metrics_view.hourly(cat, FIXED_NOW))
        for name, view in (("fetch_daily", metrics_view), ("compute_daily", metrics_view),
                           ("quality_daily", quality_view)):
            assert_frame_equal(win[name], getattr(view, name)(cat, FIXED_NOW, 400))
    assert not metrics_view.metrics_totals(populated[0].catalog)["fetch_by_dataset"].is_empty()
    assert not metrics_view.metrics_window(populated[0].catalog, FIXED_NOW,
                                           400)["fetch_daily"].is_empty()

def test_hourly_buckets_the_last_day(populated):
    store, _ = populated
    real_now = dt.datetime.now(UTC)
    h = metrics_view.hourly(store.catalog, real_now)
    assert h["steps"].sum() == store.catalog.scalar(
        "SELECT count(*) FROM fetch_log WHERE status NOT IN ('retried', 'skipped')")


# -- one symbol -------------------------------------------------------------------------
def test_symbol_lake_models(populated):
    store, _ = populated
    lake = store.lake
    ph = symbols_view.price_history(lake, "AAPL")
    assert ph.height == lake.read("bars", ["AAPL"], level="1d").height
    assert ph["ma20"].drop_nulls().len() == ph.height - 19
    assert {"ma50", "ma200", "bb_upper", "bb_lower", "rsi14", "volatility_20d"} <= \
        set(ph.columns)
    ca = symbols_view.corporate_actions(lake, "AAPL")
    n = sum(lake.read(d, ["AAPL"]).height for d in ("dividends", "splits", "earnings"))
    assert ca.height == n and set(ca["kind"]) <= {"dividend", "split", "earnings"}
    assert ca["date"].is_sorted(descending=True)
    news = symbols_view.latest_news(lake, "AAPL", limit=5)
    assert news.height == 5 and news["published_utc"].is_sorted(descending=True)
    smile = symbols_view.iv_smile(lake, "AAPL", expiries=3)
    assert smile["expiration"].n_unique() == 3 and smile["iv"].null_count() == 0
    chain = lake.read("options_iv", ["AAPL"])
    assert smile["expiration"].max() == chain["expiration"].unique().sort()[2]
    # Out of the money: calls at or above the forward, puts below it.
    fwd = chain.select("expiration", "strike", "contract_type", fwd=pl.col("underlying_price")
                       * ((pl.col("rate") - pl.col("dividend_yield"))
                          * (pl.col("expiration") - pl.col("as_of")).dt.total_days() / 365)
                       .exp())
    sides = smile.join(fwd, on=["expiration", "strike", "contract_type"])
    assert sides.height == smile.height
    assert (sides.filter(pl.col("contract_type") == "call")["strike"]
            >= sides.filter(pl.col("contract_type") == "call")["fwd"]).all()
    assert (sides.filter(pl.col("contract_type") == "put")["strike"]
            < sides.filter(pl.col("contract_type") == "put")["fwd"]).all()
    term = symbols_view.atm_term_structure(lake, "AAPL")
    assert term.height == chain["expiration"].n_unique()
    assert (term["days"] > 0).all() and term["atm_iv"].is_between(0.05, 2).all()
    assert (symbols_view.iv_smile(lake, "MSFT").is_empty()
            and symbols_view.atm_term_structure(lake, "MSFT").is_empty())
    inputs = symbols_view.options_inputs(lake, "AAPL")
    assert inputs["rate_source"] == {"treasury": chain.height} and not inputs["partial"]
    assert set(inputs["dividend_method"]) == {"parity"}
    assert symbols_view.options_inputs(lake, "MSFT") is None
    history = symbols_view.vol_history(lake, "AAPL")
    assert history["as_of"].to_list() == [chain["as_of"].max()]
    assert history["volatility_20d"][0] == ph.filter(
        pl.col("session") == chain["as_of"].max())["volatility_20d"][0]
    assert 0.05 < history["atm_iv_30d"][0] < 1.5 and history["rr25_30d"][0] < 0  # put skew
    assert symbols_view.vol_history(lake, "MSFT").is_empty()
    assert symbols_view.price_history(lake, "NVDA").is_empty()
    qual = symbols_view.symbol_lake_quality(lake, "AAPL", "stocks")
    bars = qual.filter(pl.col("dataset") == "bars").row(0, named=True)
    assert bars["rows"] == ph.height and bars["missing_sessions"] == 0
    ko = symbols_view.symbol_lake_quality(lake, "KO", "stocks").filter(pl.col("dataset") == "bars")
    assert ko["missing_sessions"][0] == 1  # the refused bar
    assert symbols_view.dataset_rows(lake, "AAPL", "features").height == ph.height


def test_symbol_catalog_models(populated):
    store, _ = populated
    info = symbols_view.symbol_info(store.catalog, "AAPL")
    assert info["name"] == "Apple Inc." and info["asset_class"] == "stocks"
    assert symbols_view.symbol_info(store.catalog, "ZZZZ") is None
    stats = symbols_view.symbol_fetch_stats(store.catalog, "SPY")
    news = stats.filter(pl.col("dataset") == "news").row(0, named=True)
    assert news["failures"] == 1 and news["retries"] == 1
    ko = symbols_view.symbol_fetch_stats(store.catalog, "KO").filter(pl.col("dataset") == "bars")
    assert ko["rejected"][0] == 1
    grid = status_view.status_grid(store.catalog, FIXED_NOW, symbol="SPY")
    assert grid.height == len(DATASETS_BY_CLASS["etfs"])


# -- an empty store ------------------------------------------------------------------------
def test_every_read_model_works_on_an_empty_store(empty_store):
    cat, lake = empty_store.catalog, empty_store.lake
    grid = status_view.status_grid(cat, FIXED_NOW)
    assert grid.is_empty()
    assert status_view.state_distribution(grid).is_empty()
    summary = status_view.symbol_summary(grid)
    assert summary.is_empty() and status_view.filter_symbols(summary)[1] == 0
    assert sum(status_view.symbol_state_counts(summary).values()) == 0
    m = metrics_view.pipeline_metrics(cat)
    assert m["fetch"]["steps"] == 0 and m["fetch"]["p50_ms"] is None
    assert metrics_view.overall_success(cat)["run_success_rate"] is None
    assert metrics_view.latest_enrichment(cat) == {"last_success_at": None, "last_run": None}
    assert runs_view.runs_search(cat)[1] == 0 and runs_view.active_runs(cat) == []
    assert metrics_view.alltime_stats(cat)["runs"] == 0
    for fn in (metrics_view.fetch_by_dataset, metrics_view.compute_by_dataset,
               metrics_view.errors_by_class, metrics_view.failures_by_class, metrics_view.quality,
               metrics_view.recent_rejections):
        assert fn(cat).is_empty()
    for fn in (metrics_view.fetch_daily, metrics_view.compute_daily, metrics_view.hourly):
        assert fn(cat, FIXED_NOW).is_empty()
    assert health_view.scheduler_state(cat)["paused"] is False
    for fn in (symbols_view.price_history, symbols_view.corporate_actions,
               symbols_view.latest_news, symbols_view.iv_smile, symbols_view.atm_term_structure,
               symbols_view.vol_history):
        assert fn(lake, "AAPL").is_empty()
    assert symbols_view.symbol_lake_quality(lake, "AAPL", "stocks")["rows"].sum() == 0


# -- formatting -------------------------------------------------------------------------
def test_times_are_shown_with_their_zone():
    winter = dt.datetime(2026, 11, 25, 22, 0, tzinfo=UTC)
    summer = dt.datetime(2026, 7, 1, 13, 30, tzinfo=UTC)
    assert ui.fmt_utc(winter) == "2026-11-25 22:00 UTC"
    assert ui.fmt_exchange(winter) == "2026-11-25 17:00 EST"
    assert ui.fmt_exchange(summer) == "2026-07-01 09:30 EDT"
    assert ui.fmt_both(winter) == "2026-11-25 22:00 UTC (17:00 EST)"
    assert ui.fmt_session(dt.date(2026, 11, 25)) == "2026-11-25"
    assert ui.fmt_utc(None) == "—"
    assert ui.fmt_ago(winter - dt.timedelta(minutes=5), winter) == "5 min ago"
    assert ui.fmt_ago(winter + dt.timedelta(hours=3), winter) == "in 3.0 h"
    # A page's clock is read to the second: a run stamped in the same second is 0 s ago, not
    # "in 0 s" (the Overview said "succeeded in 0 s" of a run that had just ended).
    assert ui.fmt_ago(winter + dt.timedelta(microseconds=400_000), winter) == "0 s ago"
    assert ui.fmt_ago(winter + dt.timedelta(seconds=5), winter) == "in 5 s"
    f = pl.DataFrame({"at": [winter], "day": [dt.date(2026, 11, 25)]})
    text = ui.instants_as_text(f)
    assert text["at"][0] == "2026-11-25 22:00 UTC" and text["day"][0] == "2026-11-25"


def test_number_and_chip_formatting():
    assert ui.chip("late", 2) == "late 2"
    assert ui.chip("fresh", 0) == "fresh"
    assert ui.chip(None) is None
    assert ui.fmt_bytes(1536) == "1.5 KB" and ui.fmt_bytes(12) == "12 B"
    assert ui.fmt_ms(12.4) == "12 ms" and ui.fmt_duration(125) == "2.1 min"
    assert ui.fmt_pct(0.987) == "98.7%" and ui.fmt_pct(None) == "—"
    frame = pl.DataFrame({"a": [1, 2]})
    assert pl.read_parquet(ui.to_parquet_bytes(frame)).equals(frame)
    assert ui.to_csv_bytes(frame) == b"a\n1\n2\n"


def test_a_news_item_is_dated_by_new_york_on_the_symbol_page_as_on_the_quality_page(tmp_path):
    """An article published at 02:00 UTC is the evening before in New York, where the news
    windows, the coverage and the quality checks date it: the symbol page's first/last dates
    and its downloads by date say the same (they said its UTC day, a day later)."""
    from enrich.checks.quality_run import run_checks
    from enrich.schemas import NEWS, conform
    from enrich.store.lake import Lake

    lake = Lake(tmp_path / "lake")
    evening = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)  # 21:00 on the 22nd in New York
    noon = dt.datetime(2026, 11, 23, 17, 0, tzinfo=dt.UTC)  # 12:00 on the 23rd
    lake.upsert("news", conform(pl.DataFrame({
        "symbol": ["AAPL", "AAPL"], "id": ["a", "b"], "published_utc": [evening, noon],
        "title": ["evening", "noon"], "publisher": ["P", "P"]}), NEWS))
    page = symbols_view.symbol_lake_quality(lake, "AAPL", "stocks").filter(
        pl.col("dataset") == "news").row(0, named=True)
    assert (page["first"], page["last"]) == (dt.date(2026, 11, 22), dt.date(2026, 11, 23))
    quality = run_checks(lake, "AAPL", "stocks", ["news"])
    cov = quality.coverage["news"]
    assert (cov.first_session, cov.last_session) == (page["first"], page["last"])
    day = dt.date(2026, 11, 22)
    picked = symbols_view.dataset_rows(lake, "AAPL", "news", start=day, end=day)
    assert picked["title"].to_list() == ["evening"]
