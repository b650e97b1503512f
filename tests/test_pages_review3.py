"""The dashboard's third review (AppTest): Snooze and End snooze say what happened when the
click lands on state that changed meanwhile (the snooze ended, someone else re-snoozed, the
incident resolved); a paused backfill's card says who paused it and when, and a resume
forgets them."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from enrich.alerts import lifecycle
from enrich.service import reset_services
from enrich.store.catalog import WriteBatch
from enrich.store.store import Store
from tests.apptest_kit import elsewhere, open_page, said
from tests.conftest import FIXED_NOW
from tests.test_pages_review2 import _open_incident

TIMEOUT = 120


@pytest.fixture
def data(tmp_path, monkeypatch):
    data = tmp_path / "data"
    Store(data)
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", FIXED_NOW.isoformat())
    monkeypatch.setenv("ENRICH_HISTORY_YEARS", "1")
    monkeypatch.chdir(tmp_path)
    yield data
    reset_services()


def wall() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- snooze and end snooze on state that changed meanwhile --------------------------------------
def test_end_snooze_of_a_snooze_someone_ended_meanwhile_says_so(data):
    catalog = Store(data).catalog
    _open_incident(catalog)
    lifecycle.snooze(catalog, "run_failed", wall() + dt.timedelta(hours=2), "alice", wall())
    at = open_page("pages/alerts.py")
    assert at.button(key="unsnooze")
    elsewhere(lambda: lifecycle.unsnooze(catalog, "run_failed"))
    at.button(key="unsnooze").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "no longer snoozed" in said(at), said(at)


def test_end_snooze_names_whose_snooze_it_ended(data):
    catalog = Store(data).catalog
    _open_incident(catalog)
    lifecycle.snooze(catalog, "run_failed", wall() + dt.timedelta(hours=2), "alice", wall())
    at = open_page("pages/alerts.py")
    elsewhere(lambda: lifecycle.snooze(catalog, "run_failed", wall() + dt.timedelta(days=1),
                                       "bob", wall()))
    at.button(key="unsnooze").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = said(at)
    assert "snooze ended" in text and "bob" in text, text
    assert lifecycle.unsnooze(catalog, "run_failed") is False


def test_snooze_of_an_incident_that_resolved_meanwhile_is_not_lost(data):
    from enrich.views import alerts as alerts_view

    catalog = Store(data).catalog
    iid = _open_incident(catalog)
    at = open_page("pages/alerts.py")
    assert at.button(key="snooze")

    def resolve():
        b = WriteBatch()
        b.execute("INSERT INTO alerts (alert_id, incident_id, event, rule, dedupe_key, "
                  "severity, title, event_at, delivery) SELECT 'r-' || incident_id, "
                  "incident_id, 'resolved', rule, dedupe_key, severity, title, ?, "
                  "'no_channel' FROM alerts WHERE incident_id = ?", [wall(), iid])
        catalog.write(b)

    elsewhere(resolve)
    at.button(key="snooze").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "snoozed until" in said(at), said(at)
    assert alerts_view.active_snoozes(catalog, wall()).height == 1


def test_snooze_over_someone_elses_snooze_says_whose_it_replaced(data):
    catalog = Store(data).catalog
    _open_incident(catalog)
    at = open_page("pages/alerts.py")
    at.radio(key="snooze_scope").set_value(at.radio(key="snooze_scope").options[1])
    elsewhere(lambda: lifecycle.snooze(catalog, "run_failed", wall() + dt.timedelta(days=3),
                                       "carol", wall()))
    at.button(key="snooze").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = said(at)
    assert "snoozed until" in text and "carol" in text, text


# -- who paused a backfill ---------------------------------------------------------------------
def test_a_paused_backfills_card_says_who_paused_it_and_a_resume_forgets(data):
    from enrich.backfill import jobs as bfm
    from enrich.config import load_settings
    from enrich.store.universe import add_symbols

    store = Store(data)
    add_symbols(store.catalog, [("KO", None, None)])
    s = load_settings(dotenv_path=None)
    bfm.start_in_background(s, bfm.BackfillRequest("dividends", ("KO",)), store=store)
    [r] = bfm.backfill_progress_summary(store.catalog)
    bid = r["backfill_id"]
    assert bfm.wait_for(bid, TIMEOUT)
    b = WriteBatch()  # one chunk left to do: the backfill can be paused, then resumed
    b.execute("UPDATE backfill_progress SET state = 'pending' WHERE backfill_id = ?", [bid])
    store.catalog.write(b)
    out = bfm.request_stop(store.catalog, bid, "paused", "alice")
    assert out.changed and out.paused_by == "alice"

    at = open_page("pages/backfill.py")
    text = said(at)
    assert f"Paused by `alice` at {out.paused_at:%Y-%m-%d %H:%M} UTC" in text, text
    [resume] = [x for x in at.button if x.label == "Resume"]
    resume.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert bfm.wait_for(bid, TIMEOUT)
    [r] = bfm.backfill_progress_summary(store.catalog, bid)
    assert r["status"] == "complete" and (r["paused_by"], r["paused_at"]) == (None, None), r


# -- a restatement that removed a row ----------------------------------------------------------
def _restated(catalog) -> None:
    """KO's dividend of 2026-09-12 changed by a re-fetch, and its dividend of 2026-06-13
    cancelled (a complete re-fetch of its window no longer lists it: ``removal``)."""
    import polars as pl

    from enrich.checks.restatements import removal
    from enrich.store.universe import add_symbols

    add_symbols(catalog, [("KO", None, None)])
    gone = removal("dividends", pl.DataFrame({"symbol": ["KO"],
                                              "ex_date": [dt.date(2026, 6, 13)],
                                              "cash_amount": [0.51]}))
    assert gone is not None
    rows = [*gone.restated.to_dicts(),
            {"session": dt.date(2026, 9, 12), "column_name": "cash_amount",
             "old_value": 0.51, "new_value": 0.53, "change": 0.53 / 0.51 - 1}]
    b = WriteBatch()
    for r in rows:
        b.insert("restatements", {"run_id": "r-1", "symbol": "KO", "dataset": "dividends",
                                  "detected_at": FIXED_NOW, **r})
    catalog.write(b)


def test_the_restatements_read_labels_a_removed_row(data):
    from enrich.views import quality as quality_view

    catalog = Store(data).catalog
    _restated(catalog)
    rest = quality_view.symbol_restatements(catalog, "KO")
    what = dict(zip(rest["session"].to_list(), rest["what"].to_list(), strict=True))
    assert what == {dt.date(2026, 6, 13): "removed", dt.date(2026, 9, 12): "changed"}, rest


def test_the_symbol_page_shows_a_removed_dividend_as_removed(data):
    _restated(Store(data).catalog)
    at = open_page("pages/symbols.py", symbol="KO")
    [table] = [d.value for d in at.dataframe if "column_name" in d.value.columns]
    removed = table[table["session"].astype(str) == "2026-06-13"]
    assert list(removed["what"]) == ["removed"], table


# -- a run whose process was killed -------------------------------------------------------------
def test_a_killed_run_reads_interrupted_on_the_runs_page_without_a_scheduler(data):
    """Found by a QA pass: with no schedule owner running (the dashboard with
    ENRICH_SCHEDULER=off, no `serve`), a CLI run killed with SIGKILL read "running" on the
    Runs page and in the Overview's live runs for good."""
    import subprocess
    import sys

    from enrich.store.catalog import host_and_pid

    open_page("pages/overview.py")  # the dashboard is up (its start closes runs dead before)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is no process now: the run was killed after the start
    run_id = "00000000-0000-4000-8000-0000000000e1"
    old = wall() - dt.timedelta(hours=1)
    with Store(data).catalog.connect() as con:
        con.execute("INSERT INTO runs (run_id, kind, state, params, requested_at, pid, host, "
                    "heartbeat_at) VALUES (?, 'cli', 'running', '{}', ?, ?, ?, ?)",
                    [run_id, old, gone.pid, host_and_pid()[0], old])
    time.sleep(0.6)  # the page memoises the data version for half a second
    at = open_page("pages/runs.py", run=run_id)
    assert "Cancel this run" not in [b.label for b in at.button]
    assert Store(data).catalog.scalar("SELECT state FROM runs WHERE run_id = ?",
                                      [run_id]) == "interrupted"
    assert "interrupted" in said(at).lower()


# -- charts of one day ---------------------------------------------------------------------------
def test_a_day_axis_draws_a_bar_of_one_day_most_of_a_day_wide():
    """Found by a QA pass: a new desk's Metrics "per day" bars (one day of data) were drawn
    0 px wide — plotly sizes bars by the closest pair of x values."""
    import polars as pl

    from pages import _charts as charts
    from pages import _common as c

    day = dt.date(2026, 12, 6)
    fig = charts.series(pl.DataFrame({"day": [day, day], "rows": [5, 7],
                                      "dataset": ["bars", "news"]}),
                        "day", "rows", "dataset", labels={"day": "day (UTC)"})
    c.day_axis(fig, [day])
    assert [t.width for t in fig.data] == [86_400_000 * 0.8] * 2
