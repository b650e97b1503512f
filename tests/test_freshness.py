"""Freshness in sessions over Thanksgiving week 2026, a half day and a weekend.

Thursday 2026-11-26 is a holiday (no session); Friday 2026-11-27 is a half day (close 13:00
EST = 18:00 UTC); the weekend has no session. The sample provider publishes at the close,
Massive four hours later (``PUBLICATION_LAG``). Nothing is late or stale that is not.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from enrich import freshness, ui
from enrich.store.catalog import WriteBatch
from enrich.store.store import Store
from enrich.store.universe import add_symbols, set_active
from enrich.views import status as status_view

UTC = dt.UTC
D = dt.date
SAMPLE = freshness.publication_lag("sample")
MASSIVE = freshness.publication_lag("massive")


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=UTC)


def state_of(held: dt.date | None, now: dt.datetime, lag=SAMPLE, asset_class="stocks",
             dataset="bars", failures=0, active=True) -> dict:
    status = pl.DataFrame({
        "symbol": ["X"], "asset_class": [asset_class], "dataset": [dataset],
        "latest_session": [held if dataset == "bars" else None],
        "covered_through": [held], "consecutive_failures": [failures], "active": [active],
    }, schema_overrides={"latest_session": pl.Date, "covered_through": pl.Date})
    return freshness.add_freshness(status, now, lag).row(0, named=True)


def test_lags_are_configured_per_provider():
    assert SAMPLE.total_seconds() == 0
    assert dt.timedelta(hours=1) <= MASSIVE <= dt.timedelta(hours=8)
    assert freshness.publication_lag("unknown") == freshness.DEFAULT_LAG
    assert freshness.publication_lag("massive", {"massive": dt.timedelta(hours=1)}) == \
        dt.timedelta(hours=1)


# held, now, lag, expected state, expected sessions behind
THANKSGIVING_WEEK = [
    # Wednesday 2026-11-25: close 16:00 EST = 21:00 UTC
    (D(2026, 11, 24), at(25, 20, 59), SAMPLE, "fresh", 0),  # before the close
    (D(2026, 11, 24), at(25, 21, 30), SAMPLE, "late", 1),
    (D(2026, 11, 25), at(25, 22), SAMPLE, "fresh", 0),
    (D(2026, 11, 24), at(25, 22), MASSIVE, "due", 0),  # closed, not published yet
    (D(2026, 11, 24), at(26, 1, 30), MASSIVE, "late", 1),
    # Thursday 2026-11-26: Thanksgiving, no session
    (D(2026, 11, 25), at(26, 15), SAMPLE, "fresh", 0),
    (D(2026, 11, 25), at(26, 23, 59), SAMPLE, "fresh", 0),
    (D(2026, 11, 25), at(26, 23, 59), MASSIVE, "fresh", 0),
    # Friday 2026-11-27: half day, close 13:00 EST = 18:00 UTC
    (D(2026, 11, 25), at(27, 17, 59), SAMPLE, "fresh", 0),
    (D(2026, 11, 25), at(27, 18, 1), SAMPLE, "late", 1),
    (D(2026, 11, 25), at(27, 19), MASSIVE, "due", 0),
    (D(2026, 11, 25), at(27, 22, 1), MASSIVE, "late", 1),
    (D(2026, 11, 27), at(27, 18, 1), SAMPLE, "fresh", 0),
    # the weekend
    (D(2026, 11, 27), at(28, 12), SAMPLE, "fresh", 0),
    (D(2026, 11, 27), at(29, 23), MASSIVE, "fresh", 0),
    (D(2026, 11, 25), at(29, 23), SAMPLE, "late", 1),  # only Friday is missing
    # Monday 2026-11-30 and Tuesday
    (D(2026, 11, 27), at(30, 20), SAMPLE, "fresh", 0),
    (D(2026, 11, 27), at(30, 21, 1), SAMPLE, "late", 1),
    (D(2026, 11, 25), at(30, 21, 1), SAMPLE, "late", 2),
    (D(2026, 11, 25), at(1, 21, 1, month=12), SAMPLE, "stale", 3),
    (D(2026, 11, 20), at(25, 22), SAMPLE, "stale", 3),  # Mon, Tue, Wed of the week
]


@pytest.mark.parametrize(("held", "now", "lag", "want", "behind"), THANKSGIVING_WEEK)
def test_thanksgiving_week(held, now, lag, want, behind):
    row = state_of(held, now, lag)
    assert (row["state"], row["sessions_behind"]) == (want, behind)


def test_nothing_is_stale_that_is_not():
    """Every 15 minutes from Wednesday's close to Monday's: holding Wednesday is at most
    late (Friday, then Monday missing), holding Friday is fresh until Monday's close."""
    now = at(25, 21)
    while now < at(30, 21):
        for lag in (SAMPLE, MASSIVE):
            wed = state_of(D(2026, 11, 25), now, lag)
            fri = state_of(D(2026, 11, 27), now, lag)
            assert wed["state"] in ("fresh", "due", "late"), (now, lag, wed)
            assert wed["sessions_behind"] <= 1, (now, lag, wed)
            assert fri["state"] == "fresh", (now, lag, fri)
        now += dt.timedelta(minutes=15)


def test_due_names_the_session_and_when_it_is_expected_in_exchange_time():
    row = state_of(D(2026, 11, 25), at(27, 19), MASSIVE)
    assert row["state"] == "due" and row["due_session"] == D(2026, 11, 27)
    assert row["expected_session"] == D(2026, 11, 25)
    assert ui.fmt_exchange(row["due_at"]) == "2026-11-27 17:00 EST"  # half-day close + 4 h
    fresh = state_of(D(2026, 11, 27), at(27, 19), MASSIVE)
    assert fresh["state"] == "fresh" and fresh["due_session"] is None


def test_crypto_counts_every_day():
    # The 24/7 calendar's sessions are UTC days: Thanksgiving and weekends are sessions.
    assert state_of(D(2026, 11, 25), at(26, 22), asset_class="crypto")["state"] == "fresh"
    sat = state_of(D(2026, 11, 25), at(28, 1), asset_class="crypto")
    assert (sat["state"], sat["sessions_behind"]) == ("late", 2)
    assert state_of(D(2026, 11, 25), at(29, 1), asset_class="crypto")["state"] == "stale"


def test_event_datasets_count_from_the_fetched_window():
    # A dividend may not come for months: what counts is how far the fetch reached.
    row = state_of(D(2026, 11, 25), at(27, 12), dataset="dividends")
    assert row["state"] == "fresh"


def test_failing_never_and_not_expected():
    assert state_of(D(2026, 11, 25), at(25, 22), failures=2)["state"] == "failing"
    assert state_of(None, at(25, 22))["state"] == "never"
    # a deactivated (halted, delisted) symbol expects nothing, however old its data
    assert state_of(D(2026, 1, 5), at(25, 22), active=False)["state"] == "not_expected"


def test_grid_uses_the_newest_runs_provider_lag_and_marks_deactivated(settings):
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [("AAPL", "stocks", "Apple"), ("DELI", "stocks", "Delisted")])
    b = WriteBatch()
    for sym in ("AAPL", "DELI"):
        b.upsert("symbol_status", {"symbol": sym, "dataset": "bars",
                                   "latest_session": D(2026, 11, 24),
                                   "covered_through": D(2026, 11, 24),
                                   "last_success_at": at(24, 22)})
    b.insert("runs", {"run_id": "r1", "kind": "manual", "state": "succeeded",
                      "provider": "massive", "requested_at": at(24, 22)})
    store.catalog.write(b)
    set_active(store.catalog, ["DELI"], False)
    grid = status_view.status_grid(store.catalog, at(25, 22), active_only=False)
    bars = {r["symbol"]: r for r in grid.filter(pl.col("dataset") == "bars")
            .iter_rows(named=True)}
    assert bars["AAPL"]["state"] == "due" and bars["AAPL"]["due_session"] == D(2026, 11, 25)
    assert bars["DELI"]["state"] == "not_expected"
    # the same data fetched from the sample provider (no lag) is late at that instant
    late = status_view.status_grid(store.catalog, at(25, 22), lag=SAMPLE)
    assert late.filter(pl.col("dataset") == "bars")["state"].to_list() == ["late"]
    assert "DELI" not in set(late["symbol"])
    table = status_view.status_table(store.catalog, now=at(25, 22))
    assert dict(zip(table["symbol"], table["state"], strict=True)) == {
        "AAPL": "due", "DELI": "not_expected"}


def test_legend_lists_every_state():
    legend = ui.freshness_legend()
    for s in status_view.GRID_STATES:
        assert ui.STATE_CHIP[s] in legend
    assert ":orange-badge[late]" in legend and ":green-badge[fresh]" in legend
    assert ui.chip("late", 2) == "late 2" and ui.chip("due", 0) == "due"
