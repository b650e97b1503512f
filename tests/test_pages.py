"""Every page through Streamlit's AppTest: on an empty store, on a populated store, and the
buttons (run now, first enrichment, pause/resume, retry failed, cancel, universe edits).

The app is loaded from ``app.py`` (``st.navigation``) and pages are opened with
``AppTest.switch_page``; the numbers shown are compared with the read models and the catalog.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import time
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from enrich.config import load_settings
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import FINAL_STATES
from enrich.providers import make_provider
from enrich.service import get_services, reset_services
from enrich.store.store import Store
from enrich.symbols import DEMO_UNIVERSE
from enrich.views import health as health_view
from enrich.views import metrics as metrics_view
from enrich.views import runs as runs_view
from enrich.views import status as status_view
from enrich.views import universe as universe_view
from pages import _common
from tests.conftest import FIXED_NOW
from tests.test_queries import RUN_SYMBOLS, populate

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ["pages/overview.py", "pages/symbols.py", "pages/runs.py", "pages/metrics.py",
         "pages/health.py", "pages/controls.py", "pages/settings.py"]
TIMEOUT = 60


@pytest.fixture(scope="module")
def populated_template(tmp_path_factory):
    data = tmp_path_factory.mktemp("template") / "data"
    settings = load_settings({"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off"},
                             dotenv_path=None)
    summary = populate(settings)
    return data, summary


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Point the app at a fresh data dir; stop the services afterwards."""
    data = tmp_path / "data"
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", FIXED_NOW.isoformat())
    monkeypatch.setenv("ENRICH_HISTORY_YEARS", "1")
    monkeypatch.chdir(tmp_path)  # no developer .env
    yield data
    reset_services()


@pytest.fixture
def populated(env, populated_template):
    src, summary = populated_template
    shutil.copytree(src, env)
    return env, summary


def settings_now():
    return load_settings(dotenv_path=None)


def open_page(page: str, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page(page)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def plain(markdown: str) -> str:
    """Markdown badges (``:red-badge[Failing]``) as their words."""
    return re.sub(r":[a-z]+-badge\[([^\]]*)\]", r"\1", markdown)


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if plain(m.label).endswith(label)]
    assert found, (label, [m.label for m in at.metric])
    return found[0]


def charts(at: AppTest) -> list:
    return list(at.get("plotly_chart"))


def texts(at: AppTest) -> str:
    parts = [e.value for e in (*at.markdown, *at.caption, *at.info, *at.success,
                                *at.warning, *at.error)]
    return "\n".join(str(p) for p in parts)


def wait_final(run_id: str, timeout: float = 120) -> str:
    state = get_services(settings_now()).wait(run_id, timeout=timeout)
    assert state in FINAL_STATES, state
    # Pages remember the catalog's data version for half a second; a user's next refresh
    # outlasts that, a test's immediate rerun may not: forget it, as a page does after its
    # own writes.
    _common.invalidate()
    return state


# -- empty store -------------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_store(env, page):
    at = open_page(page)
    assert at.title, "every page has a title"
    assert "Demo data" in texts(at)


def test_empty_overview_offers_the_first_enrichment_only(env):
    at = open_page("pages/overview.py")
    assert [b.label for b in at.button] == ["Start the first enrichment"]
    assert "No data yet" in [s.value for s in at.subheader]
    # What the demo universe holds, counted (found by a QA pass: "29 US stocks, ETFs and
    # bitcoin" while it holds ether, a currency pair and an index too).
    assert "(29 symbols: 18 US stocks, 7 ETFs, 2 crypto pairs, 1 currency pair, 1 index)" \
        in texts(at)
    assert not at.metric  # no wall of zeros before anything ran


def test_empty_pages_say_what_to_do(env):
    assert "universe is empty" in texts(open_page("pages/symbols.py"))
    assert "No runs yet" in texts(open_page("pages/runs.py"))
    assert "No fetches yet" in texts(open_page("pages/metrics.py"))


# -- populated store ---------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_a_populated_store(populated, page):
    at = open_page(page)
    assert at.title


def test_overview_numbers_match_the_catalog(populated):
    data, summary = populated
    store = Store(data)
    at = open_page("pages/overview.py")
    counts = status_view.symbol_state_counts(
        status_view.symbol_summary(status_view.status_grid(store.catalog, FIXED_NOW)))
    assert metric(at, "Failing") == str(counts["failing"]) == "1"
    assert metric(at, "Fresh") == str(counts["fresh"]) == "4"
    assert metric(at, "Never fetched") == str(counts["never"])
    m = metrics_view.pipeline_metrics(store.catalog, since=FIXED_NOW - dt.timedelta(hours=24))
    assert metric(at, "Rows written") == f"{m['fetch']['rows']:,}"
    assert metric(at, "Fetch steps") == f"{m['fetch']['steps']:,}"
    assert metric(at, "Feature rows") == f"{m['compute']['rows']:,}"
    assert metric(at, "Rows refused") == "1"
    assert metric(at, "Runs succeeded") == "0.0%"  # the one run was partial
    links = [p.proto.query_string for p in at.page_link]
    assert "state=failing" in links and "state=never" in links
    assert len(charts(at)) == 1  # status per dataset


def test_an_index_drilldown_says_it_has_no_volume(populated):
    # Found by a QA pass: I:SPX showed an empty "Volume" panel with a 0-4 axis.
    data, _ = populated
    assert populate(load_settings({"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off"},
                                  dotenv_path=None), symbols=["I:SPX"]).ok == 1
    at = open_page("pages/symbols.py", symbol="I:SPX")
    spec = json.loads(charts(at)[0].proto.spec)
    titles = [a.get("text") for a in spec["layout"].get("annotations", [])]
    assert "Volume: none (an index is not traded)" in titles
    assert "volume" not in {t.get("name") for t in spec["data"]}
    at = open_page("pages/symbols.py", symbol="AAPL")
    spec = json.loads(charts(at)[0].proto.spec)
    assert "volume" in {t.get("name") for t in spec["data"]}


def test_symbols_table_filters_and_drilldown(populated):
    at = open_page("pages/symbols.py")
    table = at.dataframe[0].value
    assert len(table) == len(DEMO_UNIVERSE)
    assert table["symbol"].iloc[0] == "SPY"  # needs attention first: failing
    at = open_page("pages/symbols.py", state="failing")
    assert list(at.dataframe[0].value["symbol"]) == ["SPY"]
    at = open_page("pages/symbols.py", state="not_entitled", dataset="options_iv")
    assert list(at.dataframe[0].value["symbol"]) == ["MSFT"]
    at = open_page("pages/symbols.py", state="never")
    assert len(at.dataframe[0].value) == len(DEMO_UNIVERSE) - len(RUN_SYMBOLS)
    at = open_page("pages/symbols.py", q="apple")
    assert list(at.dataframe[0].value["symbol"]) == ["AAPL"]

    at = open_page("pages/symbols.py", symbol="AAPL")
    assert at.title[0].value.startswith("`AAPL`")  # untrusted text is a code span
    keys = [ch.proto.id.rsplit("-", 1)[-1] for ch in charts(at)]
    assert keys == ["price_chart", "iv_smile", "iv_term", "iv_history", "iv_skew"]
    # Implied (the session's 30-day ATM) beside realised volatility; the method is said.
    history = {t["name"]: t for t in json.loads(charts(at)[3].proto.spec)["data"]}
    assert set(history) == {"30-day ATM implied", "20-day realised"}
    assert 0.05 < history["30-day ATM implied"]["y"][-1] < 1.5
    assert 0.05 < history["20-day realised"]["y"][-1] < 1.5
    # Found by a QA pass: with one session, plotly zoomed to milliseconds ("23:59:59.9995")
    # and the realised series, drawn as lines only, did not show. Whole days, and markers.
    for chart in charts(at)[3:5]:
        spec = json.loads(chart.proto.spec)
        assert spec["layout"]["xaxis"]["dtick"] == 86_400_000
        assert all("markers" in t["mode"] for t in spec["data"])
    words = texts(at)
    assert "American model" in words and "out-of-the-money options only" in words
    assert "Rate: Treasury curve 100%" in words and "closing state" in words
    status = at.dataframe[0].value
    assert list(status["dataset"]) == ["bars", "dividends", "earnings", "news", "options_iv",
                                       "splits"]
    assert all(list(v) == ["fresh"] for v in status["status"])
    fig = json.loads(charts(at)[0].proto.spec)
    names = {t.get("name") for t in fig["data"]}
    assert {"price", "MA20", "MA50", "dividend", "earnings"} <= names
    assert "MA200" not in names
    at.toggle(key="ma200").set_value(True).run()
    names = {t.get("name") for t in json.loads(charts(at)[0].proto.spec)["data"]}
    assert "MA200" in names
    assert len(at.get("download_button")) == 2 * 7  # CSV and Parquet per dataset

    at = open_page("pages/symbols.py", symbol="SPY")
    status = at.dataframe[0].value
    news = status[status["dataset"] == "news"].iloc[0]
    assert "failing" in news["status"]
    assert news["last_error"].startswith("transient: ") and "upstream timeout" in news[
        "last_error"]
    # The cause leads the page, before any table: an error element naming the dataset,
    # since when, the error and the action.
    [cause] = [e.value for e in at.error if "news" in e.value]
    assert "failing" in cause and "upstream timeout" in cause and "Enrich now" in cause
    at = open_page("pages/symbols.py", symbol="NOPE")
    assert "not in the universe" in texts(at)
    at = open_page("pages/symbols.py", symbol=" ")  # found by a QA pass: "  is not in …"
    assert "not in the universe" not in texts(at) and at.dataframe  # the list


def test_runs_list_and_detail(populated):
    data, summary = populated
    at = open_page("pages/runs.py")
    assert "1 run matches" in texts(at)
    assert len(at.dataframe[0].value) == 1
    at = open_page("pages/runs.py", run_state="succeeded")
    assert "0 runs match" in texts(at)
    at = open_page("pages/runs.py", run_symbol="SPY")
    assert "1 run matches" in texts(at)

    at = open_page("pages/runs.py", run=summary.run_id)
    assert metric(at, "Symbols") == "5" and metric(at, "Failed") == "1"  # MSFT: the plan's
    assert metric(at, "Rows written") == f"{summary.records:,}"
    assert any(ch.proto.id.endswith("gantt") for ch in charts(at))
    assert "Retry the 1 failed symbol" in [b.label for b in at.button]
    errors = at.dataframe[0].value  # the plan's refusal stays visible as what it is
    assert sorted(zip(errors["symbol"], errors["error_class"], strict=True)) == [
        ("MSFT", "not_entitled"), ("SPY", "transient")]


def test_metrics_numbers_match_the_catalog(populated):
    data, summary = populated
    store = Store(data)
    at = open_page("pages/metrics.py")
    assert metric(at, "Runs") == "1"
    assert metric(at, "Rows written") == f"{summary.records:,}"
    by_ds = at.dataframe[0].value
    assert int(by_ds["rows"].sum()) == store.catalog.scalar("SELECT sum(records) FROM fetch_log")
    assert len(charts(at)) >= 4


def test_health_page(populated):
    at = open_page("pages/health.py")
    facts = texts(at)
    assert "**Catalog**  \n:green-badge[reachable]" in facts
    assert "**API key**  \nnot set" in facts and "**State**  \n:gray-badge[off]" in facts
    assert metric(at, "Lake size").endswith("KB") or metric(at, "Lake size").endswith("MB")
    failures = next(d.value for d in at.dataframe if "error class" in d.value.columns)
    # MSFT's options refused by the plan are a fact (Health lists them apart), not a failure.
    assert set(failures["error class"]) == {"transient"}
    at.button(key="test_key").click().run()
    assert not at.exception
    assert any("demo" in i.value for i in at.info)


def test_health_lists_what_the_plan_refused_and_rechecks_it(populated):
    data, _ = populated
    at = open_page("pages/health.py")
    refused = next(d.value for d in at.dataframe if "recheck_at" in d.value.columns)
    assert refused["dataset"].tolist() == ["options_iv"] and refused["symbols"].tolist() == [1]
    assert any("refused these datasets" in w.value for w in at.warning)
    at.button(key="recheck").click().run()
    assert not at.exception
    assert Store(data).catalog.scalar(
        "SELECT count(*) FROM symbol_status WHERE not_entitled") == 0


# -- buttons -----------------------------------------------------------------------------------
def test_first_enrichment_button_starts_a_run_that_fills_the_overview(env):
    at = open_page("pages/overview.py")
    at.button(key="first_run").click().run()
    assert not at.exception
    run_id = at.session_state["last_run_id"]
    assert at.toast and run_id[:8] in at.toast[0].value
    assert wait_final(run_id) == "succeeded"
    store = Store(env)
    row = store.catalog.query("SELECT kind, symbols_total FROM runs WHERE run_id = ?",
                              [run_id]).row(0)
    assert row == ("manual", len(DEMO_UNIVERSE))
    at.run()
    assert not at.exception
    assert metric(at, "Fresh") == str(len(DEMO_UNIVERSE))
    assert metric(at, "Never fetched") == "0"


def test_a_daily_fire_before_the_first_enrichment_leaves_its_button(env):
    """Found by a QA pass: the scheduler fired on the new desk's empty universe before the
    analyst clicked — a run of 0 symbols, "succeeded" — and the Overview said "Nothing needs
    you" with no button, while every other page pointed at it."""
    store = Store(env)
    now = dt.datetime.now(dt.UTC)
    store.catalog.query("INSERT INTO runs (run_id, kind, state, params, requested_at, "
                        "started_at, finished_at, symbols_total) VALUES ('r0', 'scheduled', "
                        "'succeeded', '{}', ?, ?, ?, 0)", [now, now, now])
    at = open_page("pages/overview.py")
    assert "Start the first enrichment" in [b.label for b in at.button]


def test_run_now_creates_a_run_with_the_chosen_parameters(populated):
    data, _ = populated
    at = open_page("pages/controls.py")
    at.multiselect(key="run_symbols").set_value(["AAPL", "KO"])
    at.multiselect(key="run_datasets").set_value(["bars"])
    at.button(key="FormSubmitter:run_now-Run now").click().run()
    assert not at.exception
    run_id = at.session_state["controls_run"]
    wait_final(run_id)
    d = runs_view.run_detail(Store(data).catalog, run_id)
    assert d["kind"] == "manual" and d["params"]["symbols"] == ["AAPL", "KO"]
    assert d["params"]["datasets"] == ["bars"] and d["symbols_total"] == 2
    assert runs_view.runs_search(Store(data).catalog)[1] == 2
    at.run()
    assert any(p.proto.query_string == f"run={run_id}" for p in at.page_link)


def test_controls_estimate_and_overview_show_the_refresh_cost(populated, monkeypatch):
    data, _ = populated
    monkeypatch.setenv("ENRICH_NOW", (FIXED_NOW + dt.timedelta(days=5)).isoformat())
    settings = settings_now()
    want = Engine(Store(data), make_provider(settings), settings).plan()
    assert want.requests and want.requests < want.per_symbol_requests
    at = open_page("pages/controls.py")
    at.button(key="FormSubmitter:run_now-Estimate cost").click().run()
    assert not at.exception
    assert f"This run would make {want.requests} requests" in texts(at)
    shown = at.dataframe[0].value
    assert shown["dataset"].tolist() == [r["dataset"] for r in want.rows()]
    assert shown["requests"].tolist() == [r["requests"] for r in want.rows()]
    assert shown["path"].tolist() == [r["path"] for r in want.rows()]
    assert not get_services(settings).active_runs()  # an estimate starts nothing
    overview = open_page("pages/overview.py")
    assert f"Next daily refresh if it ran now: {want.describe()}" in texts(overview)


def test_pause_and_resume_persist(populated):
    data, _ = populated
    at = open_page("pages/controls.py")
    at.text_input(key="pause_reason").set_value("provider maintenance")
    at.button(key="pause").click().run()
    assert not at.exception
    state = health_view.scheduler_state(Store(data).catalog)
    assert state["paused"] is True and state["pause_reason"] == "provider maintenance"
    assert state["paused_by"] == "dashboard"
    assert "Resume schedule" in [b.label for b in at.button]
    at.button(key="resume").click().run()
    assert health_view.scheduler_state(Store(data).catalog)["paused"] is False


def test_retry_failed_runs_exactly_the_failed_symbols(populated):
    data, summary = populated
    at = open_page("pages/runs.py", run=summary.run_id)
    at.button(key="retry_failed").click().run()
    assert not at.exception
    new_id = at.session_state["last_run_id"]
    assert new_id != summary.run_id
    wait_final(new_id)
    cat = Store(data).catalog
    d = runs_view.run_detail(cat, new_id)
    assert d["kind"] == "retry" and d["parent_run_id"] == summary.run_id
    assert sorted(runs_view.run_tasks(cat, new_id)["symbol"]) == ["SPY"]
    assert sorted(d["params"]["symbols"]) == ["SPY"]
    at.run()
    assert at.query_params.get("run") == new_id or at.title[0].value.startswith(
        f"Run {new_id[:8]}")


def test_cancel_stops_a_running_run(populated):
    data, _ = populated
    store = Store(data)
    lock = store.lake.symbol_lock("AAPL")
    lock.acquire()  # the run waits on AAPL: it stays running until we let go
    try:
        svc = get_services(settings_now())
        run_id = svc.trigger(symbols=["AAPL"])
        # Until it runs (a bound of 5 s let a slow machine open the page while the run's row
        # was still unwritten: no Cancel button yet).
        deadline = time.monotonic() + 120
        while (p := runs_view.run_progress(store.catalog, run_id)) is None \
                or p["state"] != "running":
            assert time.monotonic() < deadline, f"the run never started: {p}"
            time.sleep(0.05)
        at = open_page("pages/runs.py", run=run_id)
        at.button(key="cancel_run").click().run()
        assert not at.exception
    finally:
        lock.release()
    assert wait_final(run_id) == "cancelled"


def test_enrich_now_on_a_symbol(populated):
    data, _ = populated
    at = open_page("pages/symbols.py", symbol="NVDA")
    assert "No bars stored yet" in texts(at)
    # Hold NVDA's lock so the run is still going when the page renders after the click
    # (a one-symbol run can otherwise end before the progress fragment first looks).
    lock = Store(data).lake.symbol_lock("NVDA")
    lock.acquire()
    try:
        at.button(key="enrich_now").click().run()
        assert not at.exception
        run_id = at.session_state["enrich_run_NVDA"]  # the run's row may not be written yet
    finally:
        lock.release()
    wait_final(run_id)
    d = runs_view.run_detail(Store(data).catalog, run_id)
    assert d["params"]["symbols"] == ["NVDA"] and d["symbols_ok"] == 1
    at.run()
    at.run()  # the follow-up fragment saw the end and reran the page
    assert not at.exception
    assert any(ch.proto.id.endswith("price_chart") for ch in charts(at))


def test_universe_management(populated):
    data, _ = populated
    cat = Store(data).catalog
    at = open_page("pages/settings.py")
    public = at.dataframe[0].value
    assert dict(zip(public["variable"], public["value"], strict=True))[
        "MASSIVE_API_KEY"] == "not set"
    # The provider's ticker reference decides: an unknown ticker refuses the whole addition.
    at.text_input(key="add_raw").set_value("ZZZT, TWTR")
    at.button(key="FormSubmitter:add_symbols-Add").click().run()
    assert not at.exception
    assert any("ZZZT is not a ticker sample knows" in e.value for e in at.error)
    assert not {"ZZZT", "TWTR"} & set(universe_view.universe_table(cat)["symbol"])
    at.text_input(key="add_raw").set_value("S0042, TWTR")
    at.button(key="FormSubmitter:add_symbols-Add").click().run()
    assert not at.exception
    syms = universe_view.universe_table(cat)
    added = syms.filter(pl.col("symbol").is_in(["S0042", "TWTR"]))
    assert dict(added.select("symbol", "asset_class").iter_rows()) == {
        "S0042": "stocks", "TWTR": "stocks"}
    assert any("Added 2" in x.value for x in at.success)
    # A refused addition next: its error alone (found by a QA pass: the earlier "Added 2 …"
    # and its "Fetch these 2 now" stayed under it).
    at.text_input(key="add_raw").set_value("ZZZU")
    at.button(key="FormSubmitter:add_symbols-Add").click().run()
    assert any("ZZZU is not a ticker sample knows" in e.value for e in at.error)
    assert not any("Added" in x.value for x in at.success)
    assert not [b for b in at.button if b.label.startswith("Fetch ")]

    at.text_area(key="import_text").set_value("symbol,asset_class\nQQQQ,etfs\nbad sym\n"
                                             "X:ETHUSD,crypto\nFOO,planets\n")
    at.button(key="import").click().run()
    assert not at.exception
    refused = [df.value for df in at.dataframe if "line" in df.value.columns][0]
    assert list(refused["line"]) == [3, 5]
    assert "invalid symbol" in refused["error"].iloc[0]
    assert "unknown asset class" in refused["error"].iloc[1]
    assert {"QQQQ", "X:ETHUSD"} <= set(universe_view.universe_table(cat)["symbol"])

    at.multiselect(key="state_pick").set_value(["S0042"]).run()  # enables the buttons
    at.button(key="deactivate").click().run()
    universe = universe_view.universe_table(cat)
    assert universe.filter(pl.col("symbol") == "S0042")["active"][0] is False
    at.multiselect(key="remove_pick").set_value(["S0042"])
    at.checkbox(key="remove_sure").check().run()
    at.button(key="remove").click().run()
    assert "S0042" not in set(universe_view.universe_table(cat)["symbol"])


# -- scale ----------------------------------------------------------------------------------
def test_large_universe_pages_and_large_run_timeline(populated):
    data, summary = populated
    cat = Store(data).catalog
    from enrich.store.universe import import_csv

    import_csv(cat, "\n".join(f"Z{i:04d},stocks" for i in range(150)))
    total = len(DEMO_UNIVERSE) + 150
    at = open_page("pages/symbols.py")
    assert f"{total} of {total} symbols match · page 1 of 2" in texts(at)
    assert len(at.dataframe[0].value) == 100
    at.get("pagination")[0].set_value(2).run()
    assert not at.exception
    assert len(at.dataframe[0].value) == total - 100

    cat.query("""
        INSERT INTO tasks (run_id, symbol, state, started_at, finished_at)
        SELECT ?, 'Y' || lpad(CAST(i AS VARCHAR), 4, '0'),
               CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'ok' END,
               TIMESTAMPTZ '2026-11-25 22:00:00+00' + INTERVAL (i) SECOND,
               TIMESTAMPTZ '2026-11-25 22:00:01+00' + INTERVAL (i * 2) SECOND
        FROM range(350) t(i)""", [summary.run_id])
    at = open_page("pages/runs.py", run=summary.run_id)
    assert "Showing 300 of 355 tasks: failed ones first, then the slowest." in texts(at)
    gantt = [ch for ch in charts(at) if ch.proto.id.endswith("gantt")][0]
    bars = sum(len(t.get("y") or []) for t in json.loads(gantt.proto.spec)["data"])
    assert bars == 300


def test_health_names_journal_files_not_recorded(populated, capsys):
    """A journal file that could not be applied (its restatements are not in the catalog) is
    named on the Health page and by ``enrich health``; one still pending is counted."""
    import os

    from enrich.cli import main
    from enrich.store import journal

    data, _ = populated
    directory = Store(data).catalog.journal_dir
    pending = journal.write(directory, journal.Entry({"restatements": []}))  # ours: alive
    directory.joinpath("4242-lost.json.unreadable").write_text("{not json")
    at = open_page("pages/health.py")
    (warning,) = [w.value for w in at.warning if "Journal file" in w.value]
    assert "journal/4242-lost.json.unreadable" in warning and "not in the catalog" in warning
    assert any("1 journal file(s) of restatements not recorded yet" in c.value
               for c in at.caption)
    capsys.readouterr()
    main(["health"])
    out = capsys.readouterr().out
    assert "journal      journal/4242-lost.json.unreadable could not be recorded" in out
    assert "1 file(s) of restatements not recorded yet" in out
    # Reading the health records nothing and moves nothing.
    assert sorted(os.listdir(directory)) == sorted([pending.name, "4242-lost.json.unreadable"])
