"""Time zones where times are shown: every instant names its zone, every instant stored is
UTC, and session dates are dates in the instrument's own calendar (XNYS for US listings,
UTC days for crypto, UTC days Sunday to Friday for forex: ``enrich.conventions``).

Each test runs with the process in America/Los_Angeles (``la``), so a naive ``now()`` or an
``astimezone()`` without a zone shows up as an eight-hour shift.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest

from enrich.cli import main
from enrich.service import reset_services
from enrich.store.catalog import WriteBatch
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from enrich.views import status as status_view
from tests.apptest_kit import open_page, said

UTC = dt.UTC
D = dt.date
# Saturday 2026-03-07 18:00 UTC: Friday's XNYS session (close 21:00 UTC) and Friday's UTC
# day have both closed; Saturday's UTC day has not.
SATURDAY = dt.datetime(2026, 3, 7, 18, 0, tzinfo=UTC)


@pytest.fixture
def la(monkeypatch):
    """The process in Los Angeles time for the test (restored after)."""
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def desk(settings, held: dict[str, D], at: dt.datetime) -> Store:
    """A catalog whose symbols hold their bars up to ``held`` (sample provider: no lag)."""
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [(s, None, s) for s in held])
    b = WriteBatch()
    for sym, day in held.items():
        b.upsert("symbol_status", {"symbol": sym, "dataset": "bars", "latest_session": day,
                                   "covered_through": day, "last_success_at": at})
    b.insert("runs", {"run_id": "r1", "kind": "manual", "state": "succeeded",
                      "provider": "sample", "requested_at": at})
    store.catalog.write(b)
    return store


def test_cli_status_counts_sessions_at_enrich_now(settings, la, monkeypatch, capsys):
    """``status`` said AAPL and X:BTCUSD were stale (hundreds of sessions behind) on a desk
    replaying Saturday 2026-03-07 (``ENRICH_NOW``): it counted to the wall clock, while the
    dashboard and the API count to ``ENRICH_NOW``. A US stock holding Friday's session and a
    coin holding Friday's UTC day are fresh on Saturday afternoon."""
    desk(settings, {"AAPL": D(2026, 3, 6), "X:BTCUSD": D(2026, 3, 6)},
         dt.datetime(2026, 3, 6, 21, 5, tzinfo=UTC))
    monkeypatch.setenv("ENRICH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ENRICH_NOW", SATURDAY.isoformat())
    assert main(["status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["symbol"], r["state"], r["sessions_behind"]) for r in rows
            if r["dataset"] == "bars"} == {("AAPL", "fresh", 0), ("X:BTCUSD", "fresh", 0)}
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "2026-03-06 21:05:00 UTC" in out and "stale" not in out


def test_serve_log_lines_are_stamped_in_utc(la):
    """``serve`` logged ``2026-03-06 13:00:00,000 INFO …`` for an event at 21:00 UTC: the
    host's local time, with no zone to tell."""
    import io
    import logging

    from enrich.cli.service import log_handler

    stream = io.StringIO()
    record = logging.LogRecord("enrich.service", logging.INFO, __file__, 1, "fired", None,
                               None)
    record.created = dt.datetime(2026, 3, 6, 21, 0, tzinfo=UTC).timestamp()
    record.msecs = 0.0
    log_handler(stream).handle(record)
    assert stream.getvalue().startswith("2026-03-06 21:00:00 UTC INFO enrich.service: fired")


# Monday 2026-03-09 12:00 UTC: XNYS expects Friday 2026-03-06 (Monday's close is 20:00 UTC,
# daylight time since Sunday), forex expects its Sunday UTC day (2026-03-08), crypto Sunday.
MONDAY = dt.datetime(2026, 3, 9, 12, 0, tzinfo=UTC)


@pytest.fixture
def mixed(settings, monkeypatch):
    """AAPL one session behind (holds Thursday), C:EURUSD one behind (holds Friday: its
    Sunday is missing), X:BTCUSD fresh (holds Sunday); the pages at ``MONDAY``."""
    desk(settings, {"AAPL": D(2026, 3, 5), "C:EURUSD": D(2026, 3, 6),
                    "X:BTCUSD": D(2026, 3, 8)}, dt.datetime(2026, 3, 6, 21, 5, tzinfo=UTC))
    store = Store.from_settings(settings)
    store.catalog.query("DELETE FROM symbol_status WHERE dataset <> 'bars'")
    monkeypatch.setenv("ENRICH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", MONDAY.isoformat())
    yield store
    reset_services()


def test_expected_sessions_are_named_per_calendar(mixed, la):
    """The pages named one "latest expected session" across calendars, the newest of them:
    on Monday morning the Symbols list said 2026-03-08 "(XNYS, exchange date)" — a Sunday,
    forex's UTC day — and the Overview told a stock one session behind that the latest
    expected session was that Sunday. Each calendar's date is named with its calendar."""
    grid = status_view.status_grid(mixed.catalog, MONDAY)
    assert status_view.expected_by_calendar(grid) == {
        "XNYS": D(2026, 3, 6), "24/7": D(2026, 3, 8), "FX": D(2026, 3, 8)}
    page = said(open_page("pages/symbols.py"))
    assert "latest expected session 2026-03-06 (XNYS, exchange date)" in page
    assert "2026-03-08 (XNYS" not in page and "2026-03-08 (forex, UTC day)" in page
    overview = said(open_page("pages/overview.py"))
    assert "2026-03-06 (XNYS, exchange date)" in overview
    assert "2026-03-08 (forex, UTC day)" in overview
    assert "(exchange dates)" not in overview
    fx = said(open_page("pages/symbols.py", symbol="C:EURUSD"))
    assert ("holds 2026-03-06, the latest expected session is 2026-03-08 (forex, UTC day)"
            in fx)
    stock = said(open_page("pages/symbols.py", symbol="AAPL"))
    assert ("holds 2026-03-05, the latest expected session is 2026-03-06 (XNYS, exchange "
            "date)" in stock)


def test_stale_alert_names_each_calendars_expected_session(mixed, la):
    """The stale alert's text said "(exchange dates: 2026-03-08)" for a stock behind Friday
    and a forex pair behind Sunday: one date, forex's UTC day, named an exchange date."""
    from enrich.alerts.rules import Context, rule_stale

    (cond,) = rule_stale(Context(mixed.catalog, MONDAY, MONDAY))
    assert "2026-03-06 (XNYS, exchange date)" in cond.detail
    assert "2026-03-08 (forex, UTC day)" in cond.detail
    assert "AAPL (1 behind)" in cond.detail and "C:EURUSD (1 behind)" in cond.detail


def test_coverage_names_whose_dates_its_sessions_are(mixed, la, capsys):
    """``coverage`` said "sessions 2026-03-02 – 2026-03-08 (exchange dates)": the window ends
    on forex's and crypto's Sunday, a UTC day and no exchange date."""
    assert main(["coverage", "--dataset", "bars", "--sessions", "5"]) == 0
    out = capsys.readouterr().out
    assert "sessions 2026-03-02 – 2026-03-08 (" in out, out
    assert "(exchange dates)" not in out
    assert "UTC day for crypto and forex" in out


def test_a_coins_price_chart_says_its_sessions_are_utc_days(settings, la, monkeypatch):
    """A coin's drill-down said its daily bars were by "session date (exchange calendar)";
    its sessions are UTC days, and the bar of 2026-03-06 is the newest held on Saturday."""
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.run_model import RunParams
    from enrich.providers.sample.provider import SampleProvider

    store = Store.from_settings(settings)
    add_symbols(store.catalog, [("X:BTCUSD", "crypto", "Bitcoin")])
    clock = lambda: SATURDAY  # noqa: E731
    summary = Engine(store, SampleProvider(clock=clock), settings, clock=clock).run(
        RunParams(symbols=["X:BTCUSD"], datasets=["bars"], lookback_days=10), kind="manual")
    assert summary.state == "succeeded"
    monkeypatch.setenv("ENRICH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ENRICH_NOW", SATURDAY.isoformat())
    try:
        page = said(open_page("pages/symbols.py", symbol="X:BTCUSD"))
    finally:
        reset_services()
    assert "Daily bars by session date (crypto, UTC day)" in page
    assert "– 2026-03-06 of" in page and "exchange calendar" not in page


def test_times_stamped_by_the_wall_clock_are_told_against_it(settings, la, monkeypatch):
    """Replaying Monday 2026-03-09 (``ENRICH_NOW``: the data's "as of" instant), the Overview
    said the run that had just finished "succeeded in 2xx days", and "Last 24 hours" on the
    Overview and the Metrics page counted every fetch since that Monday: runs, logs and
    heartbeats are stamped by the wall clock, and are told against it."""
    from enrich.store.catalog import utcnow

    wall = utcnow()
    store = desk(settings, {"AAPL": D(2026, 3, 6)}, wall)
    b = WriteBatch()
    for i, at in enumerate((wall - dt.timedelta(minutes=5), wall - dt.timedelta(days=3))):
        b.insert("fetch_log", {"run_id": "r1", "symbol": "AAPL", "dataset": "bars",
                               "timeframe": "1d", "started_at": at, "duration_ms": 10.0 + i,
                               "records": 1, "received": 1, "rejected": 0, "requests": 1,
                               "attempt": 1, "status": "ok"})
    store.catalog.write(b)
    monkeypatch.setenv("ENRICH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ENRICH_NOW", MONDAY.isoformat())
    try:
        overview = open_page("pages/overview.py")
        metrics = open_page("pages/metrics.py")
    finally:
        reset_services()
    said_overview = said(overview)
    assert re.search(r":green-badge\[succeeded\] \d+ (s|min) ago", said_overview)
    assert " in 2" not in said_overview
    for at in (overview, metrics):
        tiles = {m.label: m.value for m in at.metric}
        assert tiles["Fetch steps"] == "1", tiles
    view = status_view.overview(store.catalog, MONDAY, wall=wall)
    assert view["metrics_24h"]["fetch"]["steps"] == 1
