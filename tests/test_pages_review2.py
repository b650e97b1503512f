"""The dashboard's second review (AppTest): every page on the states a desk reaches (empty,
one symbol never fetched, a run that failed at planning, a paused schedule, a quarantined
lake file) draws without an error; a running run's duration is counted on the app's clock;
Acknowledge after someone else acknowledged says who did; the symbol pickers of a
5,000-symbol universe are typed into, not a list of every symbol."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from enrich.pipeline import scheduler as sched
from enrich.service import reset_services
from enrich.store.catalog import WriteBatch
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from pages import _common
from tests.apptest_kit import elsewhere, open_page, said
from tests.conftest import FIXED_NOW

ALL_PAGES = [f"pages/{name}.py" for name, _, _ in _common.PAGE_TABLE]


@pytest.fixture
def data(tmp_path, monkeypatch):
    data = tmp_path / "data"
    Store(data)  # an empty desk: the catalog exists, nothing in it
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", FIXED_NOW.isoformat())
    monkeypatch.setenv("ENRICH_HISTORY_YEARS", "1")
    monkeypatch.chdir(tmp_path)
    yield data
    reset_services()


def _failed_at_planning(catalog) -> str:
    """A run that failed before it planned a task (the provider refused the key)."""
    b = WriteBatch()
    b.execute("INSERT INTO runs (run_id, kind, state, params, requested_at, started_at, "
              "finished_at, symbols_total, message) VALUES ('r-plan', 'manual', 'failed', "
              "'{}', ?, ?, ?, 0, 'planning failed: 401 unauthorized')",
              [FIXED_NOW, FIXED_NOW, FIXED_NOW])
    catalog.write(b)
    return "r-plan"


STATES = ["empty", "one_never_fetched", "failed_at_planning", "paused"]


def _desk(data: Path, state: str) -> dict:
    catalog = Store(data).catalog
    query: dict = {}
    if state != "empty":
        add_symbols(catalog, [("AAPL", None, None)])
    if state == "failed_at_planning":
        query["run"] = _failed_at_planning(catalog)
    if state == "paused":
        sched.set_paused(catalog, "ops", "provider maintenance", FIXED_NOW)
    return query


# -- every page on every state -----------------------------------------------------------------
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("page", ALL_PAGES)
def test_every_page_draws_on_every_state(data, state, page):
    query = _desk(data, state)
    at = open_page(page, **(query if page == "pages/runs.py" else {}))
    assert at.title
    assert "unexpected error" not in said(at)


# -- Acknowledge on state that changed meanwhile ------------------------------------------------
def _open_incident(catalog) -> str:
    """The incident of a run that failed at planning a minute ago (the rules open it)."""
    from enrich.alerts import lifecycle
    from enrich.views import alerts as alerts_view

    wall = dt.datetime.now(dt.UTC)
    b = WriteBatch()
    b.execute("INSERT INTO runs (run_id, kind, state, params, requested_at, started_at, "
              "finished_at, symbols_total, message) VALUES ('r-ack', 'manual', 'failed', "
              "'{}', ?, ?, ?, 0, 'planning failed: 401 unauthorized')", [wall, wall, wall])
    catalog.write(b)
    lifecycle.evaluate(catalog, FIXED_NOW, wall)
    opened = alerts_view.open_incidents(catalog, wall)
    assert opened.height == 1, opened
    return opened["incident_id"][0]


def test_acknowledge_after_someone_else_acknowledged_says_who(data):
    from enrich.alerts import lifecycle

    catalog = Store(data).catalog
    iid = _open_incident(catalog)
    at = open_page("pages/alerts.py")
    assert not at.button(key="ack").disabled, said(at)
    elsewhere(lambda: lifecycle.acknowledge(catalog, iid, "alice", dt.datetime.now(dt.UTC)))
    at.button(key="ack").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = said(at)
    assert "already acknowledged" in text and "alice" in text, text


def test_acknowledge_after_the_incident_resolved_says_so(data):
    catalog = Store(data).catalog
    iid = _open_incident(catalog)
    at = open_page("pages/alerts.py")

    def resolve():
        b = WriteBatch()
        b.execute("INSERT INTO alerts (alert_id, incident_id, event, rule, dedupe_key, "
                  "severity, title, event_at, delivery) SELECT 'r-' || incident_id, "
                  "incident_id, 'resolved', rule, dedupe_key, severity, title, ?, "
                  "'no_channel' FROM alerts WHERE incident_id = ?",
                  [dt.datetime.now(dt.UTC), iid])
        catalog.write(b)

    elsewhere(resolve)
    at.button(key="ack").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "resolved" in "\n".join(e.value for e in at.error), said(at)


# -- a running run's duration ------------------------------------------------------------------
def _running(catalog, run_id: str, started: dt.datetime) -> None:
    b = WriteBatch()
    b.execute("INSERT INTO runs (run_id, kind, state, params, requested_at, started_at, "
              "heartbeat_at, host, symbols_total) VALUES (?, 'cli', 'running', '{}', ?, ?, ?, "
              "'another-host', 3)", [run_id, started, started, started])
    catalog.write(b)


def test_a_running_runs_duration_is_counted_on_the_given_clock(data):
    from enrich.views import runs as runs_view

    catalog = Store(data).catalog
    at = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)  # far from the database's now()
    _running(catalog, "r-run", at - dt.timedelta(seconds=90))
    page, _ = runs_view.runs_search(catalog, now=at)
    assert page["duration_s"].to_list() == [90.0]


def test_the_runs_list_never_shows_a_negative_duration(data):
    """A run another host stamped with a clock five minutes ahead of this one."""
    catalog = Store(data).catalog
    _running(catalog, "r-ahead", dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    at = open_page("pages/runs.py")
    seconds = at.dataframe[0].value["duration_s"].to_list()
    assert seconds and all(s is not None and s >= 0 for s in seconds), seconds


# -- symbol pickers at 5,000 symbols -----------------------------------------------------------
BIG = 5_000
MOST_OPTIONS = 500


def _big_universe(catalog) -> None:
    add_symbols(catalog, [(f"S{i:04d}", None, None) for i in range(BIG)])


@pytest.mark.parametrize("page", ["pages/controls.py", "pages/backfill.py",
                                  "pages/settings.py", "pages/quality.py"])
def test_no_symbol_picker_lists_5000_symbols(data, page):
    _big_universe(Store(data).catalog)
    at = open_page(page)
    options = [(w.key, len(w.options)) for w in (*at.multiselect, *at.selectbox)]
    assert all(n <= MOST_OPTIONS for _, n in options), options


def test_a_big_universes_symbols_are_typed_in_any_case(data):
    from enrich.views import universe as universe_view

    catalog = Store(data).catalog
    _big_universe(catalog)
    at = open_page("pages/settings.py")
    at.multiselect(key="state_pick").set_value(["s0042, S0043", "NOPE"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "NOPE" in "\n".join(w.value for w in at.warning)  # what is not in the universe
    at.button(key="deactivate").click().run()
    table = universe_view.universe_table(catalog)
    assert set(table.filter(~table["active"])["symbol"]) == {"S0042", "S0043"}
