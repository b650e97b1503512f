"""The coverage heatmap (symbols × sessions) and filling its gaps; the Quality page.

Cells are present / missing / failed / not expected (weekend, Thanksgiving, before listing,
not entitled); long windows aggregate to weeks and months; a selection turns into a backfill
of exactly its missing sessions, and after the fill the gap is closed.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from enrich.backfill import heatmap as cov
from enrich.checks import quality_run
from enrich.config import load_settings
from enrich.service import reset_services
from enrich.store.catalog import WriteBatch
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from tests.conftest import FIXED_NOW
from tests.test_quality import enrich

APP = str(Path(__file__).resolve().parent.parent / "app.py")
SYMS = ["AAPL", "MSFT", "KO", "SPY", "X:BTCUSD"]
THANKSGIVING = dt.date(2026, 11, 26)


def settings_for(data: Path):
    return load_settings({"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off"},
                         dotenv_path=None).with_(history_years=1)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A few demo symbols enriched from the sample provider over ~6 months; the rest of
    the demo universe is deactivated so the heatmap shows what was fetched."""
    data = tmp_path_factory.mktemp("coverage") / "data"
    store, summary = enrich(settings_for(data), symbols=SYMS, lookback_days=180)
    assert summary.state == "succeeded"
    store.catalog.query("UPDATE symbols SET active = symbol IN ('AAPL', 'MSFT', 'KO', "
                        "'SPY', 'X:BTCUSD')")
    return data


@pytest.fixture
def store(template, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(template, dst)
    return Store(dst)


def cells(hm: cov.Heatmap, symbol: str) -> dict[dt.date, int]:
    i = hm.symbols.index(symbol)
    return dict(zip(hm.days.astype(object).tolist(), hm.day_codes[i].tolist(), strict=True))


def drop_sessions(store: Store, symbol: str, days: list[dt.date]) -> None:
    bars = store.lake.read("bars", [symbol], level="1d")
    store.lake.replace_symbol("bars", symbol, bars.filter(~pl.col("session").is_in(days)),
                              level="1d")
    quality_run.audit(store, [symbol], ["bars"])


# -- the read model ----------------------------------------------------------------------------
def test_clean_store_is_present_where_expected_and_nowhere_else(store):
    hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=60)
    assert hm.granularity == "day" and hm.symbols == sorted(SYMS)
    assert hm.end == dt.date(2026, 11, 25)
    assert hm.totals()["missing"] == 0 and hm.totals()["failed"] == 0
    aapl, btc = cells(hm, "AAPL"), cells(hm, "X:BTCUSD")
    # Crypto is shown, so weekends are columns: not expected for stocks, present for crypto.
    sat = dt.date(2026, 11, 21)
    assert aapl[sat] == cov.NOT_EXPECTED and btc[sat] == cov.PRESENT
    assert aapl[dt.date(2026, 11, 25)] == cov.PRESENT
    # 60 XNYS sessions back from Wednesday 2026-11-25.
    first_stock_day = min(d for d, v in aapl.items() if v != cov.NOT_EXPECTED)
    assert first_stock_day == hm.days[0].item()
    assert sum(v == cov.PRESENT for v in aapl.values()) == 60


def test_thanksgiving_is_not_expected_and_weekends_drop_without_crypto(store):
    store.catalog.query("UPDATE symbols SET active = false WHERE symbol = 'X:BTCUSD'")
    now = dt.datetime(2026, 11, 30, 22, 0, tzinfo=dt.UTC)  # Monday, nothing fetched since
    hm = cov.heatmap(store.catalog, "bars", now, sessions=20)
    assert "X:BTCUSD" not in hm.symbols
    assert all(d.weekday() < 5 for d in hm.days.astype(object))
    aapl = cells(hm, "AAPL")
    assert aapl[THANKSGIVING] == cov.NOT_EXPECTED
    # The half day and Monday were not fetched yet: missing, and nothing else.
    missing = sorted(d for d, v in aapl.items() if v == cov.MISSING)
    assert missing == [dt.date(2026, 11, 27), dt.date(2026, 11, 30)]


def test_a_gap_shows_as_missing_and_plans_a_backfill_of_exactly_it(store):
    bars = store.lake.read("bars", ["AAPL"], level="1d")
    gone = bars["session"].to_list()[-30:-27]
    drop_sessions(store, "AAPL", gone)
    hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=60)
    aapl = cells(hm, "AAPL")
    assert sorted(d for d, v in aapl.items() if v == cov.MISSING) == gone
    assert cells(hm, "MSFT")[gone[0]] == cov.PRESENT
    row = hm.summary().filter(pl.col("symbol") == "AAPL").row(0, named=True)
    assert (row["missing"], row["first_missing"], row["last_missing"]) == (3, gone[0], gone[-1])
    # A selection wider than the gap, over two symbols, fills only the gap.
    plan = cov.plan_fill(hm, ["AAPL", "MSFT"], hm.days[0].item(), hm.days[-1].item())
    assert plan.backfills == [(("AAPL",), gone[0], gone[-1])]
    assert plan.cells == 3 and not plan.first_runs
    assert "3 missing cells" in plan.describe()
    # A selection that misses the gap plans nothing.
    assert cov.plan_fill(hm, ["AAPL"], gone[-1] + dt.timedelta(days=1),
                         hm.days[-1].item()).empty


def test_a_quarantined_file_is_missing_and_fill_plans_it_before_and_after_an_audit(store):
    # Found by a QA pass: the unreadable file was moved aside, but the heatmap, ``coverage``
    # and ``fill`` read the coverage recorded before and said every session was held.
    path = store.lake.root / "bars" / "timeframe=1d" / "symbol=AAPL" / "data.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    store.catalog.refresh_views()  # finds the file, moves it aside and records it
    assert not path.exists()
    for audited in (False, True):
        if audited:
            quality_run.audit(store, ["AAPL", "MSFT"], ["bars"])
        hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=60)
        aapl, msft = cells(hm, "AAPL"), cells(hm, "MSFT")
        assert sum(v == cov.MISSING for v in aapl.values()) == 60, audited
        assert sum(v == cov.PRESENT for v in aapl.values()) == 0
        assert sum(v == cov.PRESENT for v in msft.values()) == 60  # its file is untouched
        plan = cov.plan_fill(hm, ["AAPL", "MSFT"], hm.days[0].item(), hm.days[-1].item())
        assert plan.cells == 60 and [b[0] for b in plan.backfills] == [("AAPL",)]


def test_a_symbol_without_options_is_fresh_and_its_chain_not_expected(store):
    # Found by a QA pass: a preferred share's empty chain (no contract listed) left options_iv
    # "never fetched" after every successful fetch, counted on the Overview for good.
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.run_model import RunParams
    from enrich.providers.sample.provider import SampleProvider
    from enrich.views import status as status_view

    add_symbols(store.catalog, [("KIMpL", "stocks", None)])
    settings = settings_for(store.data_dir)
    friday = FIXED_NOW + dt.timedelta(days=2)
    for now in (FIXED_NOW, friday):
        clock = lambda now=now: now  # noqa: E731
        summary = Engine(store, SampleProvider(clock=clock), settings, clock=clock).run(
            RunParams(symbols=["KIMpL"]))
        assert summary.state == "succeeded"
        assert store.lake.read("options_iv", ["KIMpL"]).is_empty()
        grid = status_view.status_grid(store.catalog, now, "KIMpL")
        state = dict(zip(grid["dataset"], grid["state"], strict=True))
        assert state["options_iv"] == "fresh" and state["bars"] == "fresh", state
        requests = store.catalog.scalar(
            "SELECT sum(requests) FROM fetch_log WHERE symbol = 'KIMpL' AND dataset = "
            "'options_iv' AND run_id = ?", [summary.run_id])
        assert requests == 1  # asked once a session, as every other chain
    hm = cov.heatmap(store.catalog, "options_iv", friday, sessions=20)
    assert set(cells(hm, "KIMpL").values()) == {cov.NOT_EXPECTED}
    # Found by a review: a symbol whose chains are held, answering empty once (a hiccup),
    # is not "held" by it: it stays behind and is asked again.
    from enrich.schemas import OPTIONS_IV

    class Hiccup(SampleProvider):
        def option_chain(self, symbol, as_of, close=None):
            return OPTIONS_IV.empty()

    monday = friday + dt.timedelta(days=3)
    clock = lambda: monday  # noqa: E731
    Engine(store, Hiccup(clock=clock), settings, clock=clock).run(
        RunParams(symbols=["AAPL"], datasets=["options_iv"]))
    grid = status_view.status_grid(store.catalog, monday, "AAPL")
    state = dict(zip(grid["dataset"], grid["state"], strict=True))
    assert state["options_iv"] != "fresh"
    aapl = cells(hm, "AAPL")
    assert cov.PRESENT in aapl.values()  # a chain held is still what it was


def test_after_delisting_is_not_expected_and_fill_plans_nothing(store):
    # Found by a QA pass: TWTR (delisted 2022) showed 60 missing sessions, and a fill
    # "succeeded" with no request while the gap stayed.
    msft = cells(cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=20), "MSFT")
    last = sorted(d for d, v in msft.items() if v == cov.PRESENT)[9]  # its last trading day
    store.catalog.query("UPDATE symbols SET delisted_on = ? WHERE symbol = 'MSFT'", [last])
    drop_sessions(store, "MSFT", [d for d in msft if d > last])  # nothing held after it
    hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=20)
    after = {d: v for d, v in cells(hm, "MSFT").items() if d > last}
    assert after and set(after.values()) == {cov.NOT_EXPECTED}
    assert cells(hm, "MSFT")[last] == cov.PRESENT
    assert cov.plan_fill(hm, ["MSFT"], hm.days[0].item(), hm.days[-1].item()).empty


def test_before_listing_is_not_expected(store):
    bars = store.lake.read("bars", ["MSFT"], level="1d")
    drop_sessions(store, "MSFT", bars["session"].to_list()[:-20])  # listed 20 sessions ago
    hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=60)
    msft = cells(hm, "MSFT")
    assert sum(v == cov.PRESENT for v in msft.values()) == 20
    assert cov.MISSING not in msft.values()


def test_failed_cells_point_at_the_failing_session(store):
    bars = store.lake.read("bars", ["KO"], level="1d")
    day = bars["session"][-5]
    store.lake.replace_symbol("bars", "KO", bars.with_columns(
        pl.when(pl.col("session") == day).then(pl.col("low") * 0.5)
        .otherwise(pl.col("high")).alias("high")), level="1d")
    quality_run.audit(store, ["KO"], ["bars"])
    hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=20)
    ko = cells(hm, "KO")
    assert [d for d, v in ko.items() if v == cov.FAILED] == [day]
    plan = cov.plan_fill(hm, ["KO"], day, day, include_failed=True)
    assert plan.backfills == [(("KO",), day, day)]
    assert cov.plan_fill(hm, ["KO"], day, day).empty


def test_never_fetched_symbols_are_missing_and_get_a_first_run(store):
    add_symbols(store.catalog, [("S0042", "stocks", "Never fetched")])
    hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=20)
    new = cells(hm, "S0042")
    assert sum(v == cov.MISSING for v in new.values()) == 20
    plan = cov.plan_fill(hm, ["S0042", "AAPL"], hm.days[0].item(), hm.days[-1].item(),
                         history_years=1)
    assert plan.first_runs == ["S0042"] and not plan.backfills
    # Its whole configured history, not only the 20 sessions selected.
    assert plan.lookback_days is None
    assert plan.history_from == hm.end - dt.timedelta(days=365)
    assert "first run (the configured history from" in plan.describe()
    # A selection reaching further back than the configured history: the run reaches it.
    long = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=520)
    plan = cov.plan_fill(long, ["S0042"], long.days[0].item(), long.days[-1].item(),
                         history_years=1)
    assert plan.lookback_days == (long.end - long.days[0].item()).days + 1
    # Selected inside the configured history, on a longer heatmap: it says what stays
    # unfetched.
    plan = cov.plan_fill(long, ["S0042"], long.days[-5].item(), long.days[-1].item(),
                         history_years=1)
    assert plan.lookback_days is None and plan.unfetched_before == plan.history_from
    assert "stays unfetched" in plan.describe()


def xnys_sessions(first: dt.date, last: dt.date) -> list[dt.date]:
    from enrich import calendars

    return calendars.sessions("XNYS", first, last)


def test_filling_a_never_fetched_symbol_leaves_no_history_unfetched_and_not_expected(store):
    """Issue 18, gap fill: a fill of a few sessions of a never-fetched symbol fetches its
    configured history, and no session of that history is both unfetched and shown as
    "not expected" (the old 33-day first fetch turned the years before it grey)."""
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.run_model import RunParams
    from enrich.providers.sample.provider import SampleProvider

    settings = settings_for(store.data_dir)  # ENRICH_HISTORY_YEARS=1
    add_symbols(store.catalog, [("S0042", "stocks", "Never fetched")])
    hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=20)
    plan = cov.plan_fill(hm, ["S0042"], hm.days[-15].item(), hm.days[-1].item(),
                         history_years=settings.history_years)
    clock = lambda: FIXED_NOW  # noqa: E731
    engine = Engine(store, SampleProvider(clock=clock), settings, clock=clock)
    asked = []

    def trigger(symbols, datasets, lookback, **_):
        asked.append((symbols, datasets, lookback))
        return engine.run(RunParams(symbols=symbols, datasets=datasets,
                                    lookback_days=lookback), kind="manual").run_id

    cov.start_fill(plan, settings=settings, store=store, trigger=trigger)
    assert asked == [(["S0042"], ["bars"], None)]
    held = set(store.lake.read("bars", ["S0042"], level="1d")["session"].to_list())
    after = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=252, granularity="day")
    new = cells(after, "S0042")
    history = [d for d in xnys_sessions(FIXED_NOW.date() - dt.timedelta(days=365),
                                        after.end) if d in new]
    assert len(history) > 240
    hidden = [d for d in history if new[d] == cov.NOT_EXPECTED and d not in held]
    assert hidden == []
    assert all(new[d] == cov.PRESENT for d in history if d in held)


def test_history_before_a_short_first_fetch_is_missing_not_before_listing(store):
    """"Before listing" needs a real listing date: a first fetch of 33 days leaves the
    sessions before it missing, counted, not grey."""
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.run_model import RunParams
    from enrich.providers.sample.provider import SampleProvider

    settings = settings_for(store.data_dir)
    add_symbols(store.catalog, [("S0042", "stocks", "Fetched for a month")])
    clock = lambda: FIXED_NOW  # noqa: E731
    Engine(store, SampleProvider(clock=clock), settings, clock=clock).run(
        RunParams(symbols=["S0042"], datasets=["bars"], lookback_days=33))
    held = store.lake.read("bars", ["S0042"], level="1d")["session"]
    hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=60)
    new = cells(hm, "S0042")
    before = [d for d in xnys_sessions(hm.days[0].item(), held.min()) if d < held.min()]
    assert before and all(new[d] == cov.MISSING for d in before)
    row = hm.summary().filter(pl.col("symbol") == "S0042").row(0, named=True)
    assert row["missing"] == len(before)
    # With a real listing date in the universe, the sessions before it are not expected.
    store.catalog.query("UPDATE symbols SET listed_since = ? WHERE symbol = 'S0042'",
                        [held.min()])
    hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=60)
    assert all(cells(hm, "S0042")[d] == cov.NOT_EXPECTED for d in before)


def test_not_entitled_is_not_expected_and_event_datasets_follow_the_fetched_window(store):
    b = WriteBatch()
    b.upsert("symbol_status", {"symbol": "MSFT", "dataset": "options_iv", "not_entitled": True})
    store.catalog.write(b)
    hm = cov.heatmap(store.catalog, "options_iv", FIXED_NOW, sessions=20)
    assert set(cells(hm, "MSFT").values()) == {cov.NOT_EXPECTED}
    # One snapshot per run: the newest session is held, the history before it is not.
    aapl = cells(hm, "AAPL")
    assert aapl[dt.date(2026, 11, 25)] == cov.PRESENT
    assert sum(v == cov.MISSING for v in aapl.values()) == 19
    divs = cov.heatmap(store.catalog, "dividends", FIXED_NOW, sessions=60)
    assert divs.totals()["missing"] == 0 and "X:BTCUSD" not in divs.symbols
    assert set(divs.symbols) == {"AAPL", "MSFT", "KO", "SPY"}


def test_data_checked_before_coverage_existed_counts_from_its_status(store):
    store.catalog.query("DELETE FROM session_coverage")
    hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=60)
    assert hm.totals()["missing"] == 0


def test_long_windows_aggregate_to_weeks_and_months(store):
    week = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=252)
    assert week.granularity == "week"
    assert all(d.weekday() == 0 for d in week.bucket_start[1:])
    assert week.codes.shape == (len(SYMS), len(week.bucket_start))
    # Six months of history in a one-year window: the older half was never fetched (the
    # first fetch asked for six months; nothing says the symbol was not listed then).
    i = week.symbols.index("AAPL")
    assert week.codes[i, 0] == cov.MISSING and week.codes[i, -1] == cov.PRESENT
    month = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=1260)
    assert month.granularity == "month" and all(d.day == 1 for d in month.bucket_start[1:])
    drop_sessions(store, "AAPL", [dt.date(2026, 10, 14)])
    month = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=1260)
    i = month.symbols.index("AAPL")
    october = month.bucket_start.index(dt.date(2026, 10, 1))
    assert month.codes[i, october] == cov.MISSING
    assert month.counts[cov.MISSING][i, october] == 1
    assert month.counts[cov.PRESENT][i, october] == 21  # 22 October sessions, one missing


def test_build_is_pure_and_vectorised():
    rows = pl.DataFrame({
        "symbol": ["A", "B"], "asset_class": ["stocks", "stocks"],
        "listed_since": [None, dt.date(2026, 11, 20)], "bars_first": [dt.date(2026, 1, 2)] * 2,
        "first_session": [dt.date(2026, 1, 2)] * 2, "last_session": [dt.date(2026, 11, 25)] * 2,
        "through_session": [dt.date(2026, 11, 25)] * 2, "covered_from": [None, None],
        "gaps": ['[["2026-11-23", "2026-11-24"]]', "[]"], "failed": ["[]", '["2026-11-25"]'],
        "status_through": [None, None], "status_latest": [None, None],
        "not_entitled": [False, False],
    }, schema_overrides={"listed_since": pl.Date, "covered_from": pl.Date,
                         "status_through": pl.Date, "status_latest": pl.Date})
    hm = cov.build(rows, "bars", FIXED_NOW, sessions=5)
    assert [d.isoformat() for d in hm.days.astype(object)] == [
        "2026-11-19", "2026-11-20", "2026-11-23", "2026-11-24", "2026-11-25"]
    assert hm.day_codes.tolist() == [
        [cov.PRESENT, cov.PRESENT, cov.MISSING, cov.MISSING, cov.PRESENT],
        [cov.PRESENT, cov.PRESENT, cov.PRESENT, cov.PRESENT, cov.FAILED]]
    assert isinstance(hm.codes, np.ndarray) and hm.codes.dtype == np.int8


# -- filling, end to end -----------------------------------------------------------------------
def test_fill_backfills_the_gap_and_the_heatmap_closes(store):
    settings = settings_for(store.data_dir)
    bars = store.lake.read("bars", ["AAPL"], level="1d")
    gone = bars["session"].to_list()[-40:-35]
    drop_sessions(store, "AAPL", gone)
    hm = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=60)
    plan = cov.plan_fill(hm, ["AAPL"], gone[0] - dt.timedelta(days=3), gone[-1])
    finished = threading.Event()
    ids = cov.start_fill(plan, settings=settings, store=store,
                         on_done=lambda info: finished.set())
    assert len(ids) == 1
    assert finished.wait(120), "the backfill did not finish"
    run = store.catalog.query("SELECT kind, state FROM runs WHERE run_id = ?", ids).row(0)
    assert run == ("backfill", "succeeded")
    after = cov.heatmap(store.catalog, "bars", FIXED_NOW, sessions=60)
    assert after.totals()["missing"] == 0
    assert store.lake.read("bars", ["AAPL"], level="1d").height == bars.height
    assert store.catalog.scalar("SELECT passed FROM quality_status WHERE symbol = 'AAPL' "
                                "AND check_name = 'missing_sessions'") is True


# -- the page ----------------------------------------------------------------------------------
@pytest.fixture
def app_env(monkeypatch, store):
    monkeypatch.setenv("ENRICH_DATA_DIR", str(store.data_dir))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", FIXED_NOW.isoformat())
    monkeypatch.setenv("ENRICH_HISTORY_YEARS", "1")
    monkeypatch.chdir(store.data_dir.parent)
    yield store
    reset_services()


def open_quality(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/quality.py")
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_on_an_empty_store(monkeypatch, tmp_path):
    monkeypatch.setenv("ENRICH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.chdir(tmp_path)
    try:
        at = open_quality()
        assert at.title[0].value == "Quality"
        assert any("No active symbol" in i.value for i in at.info)
    finally:
        reset_services()


def test_page_shows_the_gap_and_its_fill_starts_a_backfill(app_env):
    store = app_env
    bars = store.lake.read("bars", ["AAPL"], level="1d")
    gone = bars["session"].to_list()[-12:-10]
    drop_sessions(store, "AAPL", gone)
    at = open_quality()
    missing = [m.value for m in at.metric if m.label == "Missing cells"]
    assert missing == ["2"]
    chart = [ch for ch in at.get("plotly_chart") if "coverage_bars" in ch.proto.id]
    assert chart, "the heatmap is drawn"
    fails = next(d.value for d in at.dataframe if "check_name" in d.value.columns)
    assert list(fails["check_name"]) == ["missing_sessions"]
    at.multiselect(key="fill_symbols").set_value(["AAPL"])
    at.run()
    assert any(f"backfill bars {gone[0]} – {gone[-1]} for AAPL" in c.value for c in at.caption)
    at.button(key="fill_go").click().run()
    assert not at.exception
    ids = at.session_state["fill_last"]
    from enrich.backfill import jobs as backfill

    for bid in list(backfill.live_backfills()):
        backfill.wait_for(bid, 120)
    state = store.catalog.scalar("SELECT state FROM runs WHERE run_id = ?", ids)
    assert state == "succeeded"
    deadline = time.monotonic() + 120
    while store.catalog.scalar("SELECT passed FROM quality_status WHERE symbol = 'AAPL' "
                               "AND check_name = 'missing_sessions'") is not True:
        assert time.monotonic() < deadline, "the fill was not re-checked"
        time.sleep(0.1)
    time.sleep(0.6)  # the page memoises the data version for half a second
    at.run()
    assert [m.value for m in at.metric if m.label == "Missing cells"] == ["0"]


def test_page_recheck_and_other_datasets(app_env):
    at = open_quality(cov_dataset="news")
    assert not at.exception
    at.button(key="recheck").click().run()
    assert not at.exception
    for t in threading.enumerate():
        if t.name == "quality-audit":
            t.join(60)
    at = open_quality(cov_dataset="options_iv")
    assert not at.exception


def test_missing_stretches_are_cut_by_held_cells_not_by_days_without_a_session():
    """The windows of an options fill (``_stretches``): a weekend between two missing days
    does not cut the stretch; a held (or failing, not asked for) session does."""
    m, p, x, f = cov.MISSING, cov.PRESENT, cov.NOT_EXPECTED, cov.FAILED
    codes = np.array([m, m, x, x, m, p, m, f, m, x, m], dtype=np.int8)
    ix = np.nonzero(codes == m)[0]
    assert [s.tolist() for s in cov._stretches(ix, codes)] == [[0, 1, 4], [6], [8, 10]]
    assert [s.tolist() for s in cov._stretches(ix[:1], codes)] == [[0]]
