"""The dashboard as its users meet it (AppTest), under the states a desk reaches: a button
clicked on state that changed meanwhile (another user resumed, a run ended) says what
happened; a running run's ETA is never "0 ms" while symbols remain; a 5,000-symbol run whose
every fetch failed is shown a page at a time, with no select box of 5,000 options."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from enrich.config import load_settings
from enrich.pipeline import scheduler as sched
from enrich.service import get_services, reset_services
from enrich.store.catalog import WriteBatch, utcnow
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from enrich.views import runs as runs_view
from pages import _common
from tests.apptest_kit import elsewhere, open_page
from tests.conftest import FIXED_NOW


@pytest.fixture
def data(tmp_path, monkeypatch):
    data = tmp_path / "data"
    add_symbols(Store(data).catalog, [("AAPL", None, None)])
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", FIXED_NOW.isoformat())
    monkeypatch.setenv("ENRICH_HISTORY_YEARS", "1")
    monkeypatch.chdir(tmp_path)
    yield data
    reset_services()


def said(at: AppTest) -> str:
    """What the page told the user: alerts, captions and toasts."""
    parts = [e.value for e in (*at.info, *at.success, *at.warning, *at.error, *at.caption,
                                *at.markdown, *at.toast)]
    return "\n".join(str(p) for p in parts)


# -- buttons on stale state --------------------------------------------------------------------
def test_resume_after_someone_else_resumed_says_so(data):
    catalog = Store(data).catalog
    sched.set_paused(catalog, "ops", "provider maintenance", FIXED_NOW)
    at = open_page("pages/controls.py")
    assert at.button(key="resume")
    elsewhere(lambda: sched.set_resumed(catalog, "alice", FIXED_NOW))
    at.button(key="resume").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = said(at)
    assert "already resumed" in text and "alice" in text, text
    assert not sched.read_state(catalog).paused


def test_pause_after_someone_else_paused_says_who(data):
    catalog = Store(data).catalog
    at = open_page("pages/controls.py")
    assert at.button(key="pause")
    elsewhere(lambda: sched.set_paused(catalog, "bob", "holiday", FIXED_NOW))
    at.text_input(key="pause_reason").input("mine")
    at.button(key="pause").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = said(at)
    assert "already paused" in text and "bob" in text, text


def test_cancel_of_a_run_that_ended_meanwhile_says_how_it_ended(data):
    store = Store(data)
    svc = get_services(load_settings(dotenv_path=None))
    lock = store.lake.symbol_lock("AAPL")
    lock.acquire()  # the run waits on AAPL: it is running while the page is drawn
    try:
        run_id = svc.trigger(symbols=["AAPL"], datasets=["bars"])
        for _ in range(600):
            p = runs_view.run_progress(store.catalog, run_id)
            if p and p["state"] == "running":
                break
            time.sleep(0.05)
        at = open_page("pages/runs.py", run=run_id)
        assert at.button(key="cancel_run")
    finally:
        lock.release()
    state = svc.wait(run_id, timeout=120)  # it ends before the user's click lands
    assert state == "succeeded", state
    _common.invalidate()
    at.button(key="cancel_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = said(at)
    assert "already ended" in text and "succeeded" in text, text


# -- a run's ETA -------------------------------------------------------------------------------
def _running_elsewhere(catalog, planned: int, made: int) -> str:
    """A run another host is running (its heartbeat fresh): 3 symbols, one done, one in
    flight, ``made`` of ``planned`` requests made at a limited rate."""
    run_id = "r-elsewhere"
    now = utcnow()
    b = WriteBatch()
    b.execute("INSERT INTO runs (run_id, kind, state, params, plan, requested_at, started_at, "
              "heartbeat_at, host, pid, symbols_total, symbols_ok, requests, requests_planned) "
              "VALUES (?, 'cli', 'running', '{}', ?, ?, ?, ?, 'another-host', 1, 3, 1, ?, ?)",
              [run_id, json.dumps({"rate_limit_per_min": 5}), now - dt.timedelta(minutes=2),
               now - dt.timedelta(minutes=2), now, made, planned])
    b.execute("INSERT INTO tasks (run_id, symbol, state, started_at, finished_at) VALUES "
              "(?, 'AAPL', 'ok', ?, ?), (?, 'MSFT', 'running', ?, NULL)",
              [run_id, now - dt.timedelta(minutes=2), now - dt.timedelta(minutes=1),
               run_id, now - dt.timedelta(minutes=1)])
    catalog.write(b)
    return run_id


def _progress_text(at: AppTest) -> str:
    return " ".join(p.proto.text for p in at.get("progress"))


@pytest.mark.parametrize("planned, made", [(0, 0), (4, 9)])
def test_a_running_runs_eta_is_never_zero_while_symbols_remain(data, planned, made):
    """No requests planned (every dataset up to date by the plan), or more made than planned
    (retries): the requests left say nothing, and "ETA 0 ms" for a run with two symbols to
    go is nonsense; the ETA comes from the time per finished symbol instead."""
    run_id = _running_elsewhere(Store(data).catalog, planned, made)
    at = open_page("pages/runs.py", run=run_id)
    text = _progress_text(at)
    assert "1 / 3 symbols" in text, text
    assert "ETA" in text and "ETA 0 ms" not in text, text


# -- 5,000 symbols -----------------------------------------------------------------------------
BIG = 5_000
MOST_ROWS = 500  # what a page may put in one table or one select box at once


def _big_failed_run(catalog) -> str:
    """A run of 5,000 symbols whose every fetch failed (the provider was down)."""
    run_id = "r-big"
    now = utcnow()
    b = WriteBatch()
    b.execute("INSERT INTO runs (run_id, kind, state, params, requested_at, started_at, "
              "finished_at, symbols_total, symbols_failed, message) VALUES "
              "(?, 'scheduled', 'failed', '{}', ?, ?, ?, ?, ?, 'every symbol failed')",
              [run_id, now, now, now, BIG, BIG])
    b.execute("INSERT INTO tasks (run_id, symbol, state, started_at, finished_at, error_class, "
              "error_message) SELECT ?, 'S' || lpad(CAST(i AS VARCHAR), 4, '0'), 'failed', ?, "
              "?, 'transient', 'HTTP 503' FROM range(?) t(i)", [run_id, now, now, BIG])
    b.execute("INSERT INTO fetch_log (run_id, symbol, dataset, status, started_at, "
              "duration_ms, error_class, error_message) SELECT ?, "
              "'S' || lpad(CAST(i AS VARCHAR), 4, '0'), 'bars', 'failed', ?, 12, 'transient', "
              "'HTTP 503' FROM range(?) t(i)", [run_id, now, BIG])
    catalog.write(b)
    return run_id


def test_a_5000_symbol_failed_run_is_shown_a_page_at_a_time(data):
    run_id = _big_failed_run(Store(data).catalog)
    at = open_page("pages/runs.py", run=run_id)
    tables = [len(t.value) for t in at.dataframe]
    assert tables and max(tables) <= MOST_ROWS, tables
    options = [(s.key, len(s.options)) for s in at.selectbox]
    assert all(n <= MOST_ROWS for _, n in options), options
    assert f"{BIG:,}" in said(at)  # … while saying how many there are
    at.text_input(key="log_symbol_text").input("s0042").run()  # the fetch log of one
    assert not at.exception
    assert "1 rows" in [cap.value for cap in at.caption]
    assert at.dataframe[-1].value["symbol"].to_list() == ["S0042"]
