"""Events the provider no longer lists inside a re-asked window leave the lake.

A dividend (or income statement) stored on a Friday and then cancelled, or re-dated to
another ex-date, while it is still inside the daily refresh's look-back window
(``ENRICH_EVENT_LOOKBACK_DAYS``, 30 days) must not stay next to its replacement: a complete
fetch of a window replaces the symbol's rows dated in it, on the per-symbol path, the
universe-wide path and a backfill chunk alike; the features' total return and the option
chain's trailing dividend yield then count it once. A partial fetch (a refused row, a failed
request) keeps the upsert: nothing stored is lost on a flaky API.

A split that goes or changes its ratio after it re-based the stored bars takes its bars with
it: they are fetched again from their first session (a re-based bar cannot be re-based back).

The provider is the offline sample with one synthetic dividend, one income statement and one
split of AAPL listed where each test says (``_Listing``), per symbol and universe-wide alike.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from enrich.config import load_settings
from enrich.errors import ProviderError
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import LogBuffer, RunParams, SymbolResult
from enrich.providers import MarketRequest, MarketRows
from enrich.providers.sample.provider import SampleProvider
from enrich.schemas import DIVIDENDS, EARNINGS, SPLITS
from enrich.store.store import Store
from enrich.store.universe import add_symbols

UTC = dt.UTC
FRIDAY = dt.datetime(2026, 11, 20, 23, 0, tzinfo=UTC)  # after Friday's close
MONDAY = dt.datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # after Monday's close
X = dt.date(2026, 11, 10)  # inside Monday's look-back for dividends (from 2026-10-22)
FILED = dt.date(2026, 11, 19)  # inside it for income statements (3 days: from 2026-11-18)
SYM = "AAPL"
SYMBOLS = (("AAPL", "stocks"), ("KO", "stocks"))
AMOUNT = 5.0  # large, so a dividend counted twice shows in the total return


@dataclass(frozen=True)
class Listed:
    """What the provider lists for AAPL beyond the sample's own rows: a dividend on
    ``dividend`` and an income statement (FY 1999 Q4, an unused key) filed on ``filed``
    (None: not listed); ``refused``: also a dividend without a cash amount on X - 2 (a row
    validation refuses); ``fail``: the dividends request fails."""

    dividend: dt.date | None = None
    filed: dt.date | None = None
    refused: bool = False
    fail: bool = False
    split: dt.date | None = None  # a 2-for-1 split of AAPL executed that day
    split_to: float = 2.0


def _extra_dividends(listed: Listed, start: dt.date, end: dt.date) -> pl.DataFrame:
    rows = []
    if listed.dividend is not None and start <= listed.dividend <= end:
        rows.append({"ex_date": listed.dividend, "cash_amount": AMOUNT})
    if listed.refused and start <= X - dt.timedelta(days=2) <= end:
        rows.append({"ex_date": X - dt.timedelta(days=2), "cash_amount": None})
    return pl.DataFrame(
        [{"symbol": SYM, "declaration_date": X - dt.timedelta(days=20), "record_date": None,
          "pay_date": None, "currency": "USD", "frequency": 0, "distribution_type": "special",
          "regular_cash_amount": None, **r} for r in rows],
        schema=DIVIDENDS.schema)


def _extra_earnings(listed: Listed, start: dt.date, end: dt.date) -> pl.DataFrame:
    rows = []
    if listed.filed is not None and start <= listed.filed <= end:
        rows.append({"symbol": SYM, "fiscal_year": 1999, "fiscal_quarter": 4,
                     "period_end": listed.filed - dt.timedelta(days=40),
                     "filing_date": listed.filed, "revenue": 1e9, "eps_basic": 1.0,
                     "eps_diluted": 1.0})
    return pl.DataFrame(rows, schema=EARNINGS.schema)


def _extra_splits(listed: Listed, start: dt.date, end: dt.date) -> pl.DataFrame:
    rows = []
    if listed.split is not None and start <= listed.split <= end:
        rows.append({"symbol": SYM, "execution_date": listed.split, "split_from": 1.0,
                     "split_to": listed.split_to, "adjustment_type": "forward_split"})
    return pl.DataFrame(rows, schema=SPLITS.schema)


def _edit(listed: Listed, ds: str, symbol: str, frame: pl.DataFrame, start: dt.date,
          end: dt.date) -> pl.DataFrame:
    if symbol != SYM or ds not in ("dividends", "earnings", "splits"):
        return frame
    if ds == "splits":
        extra = _extra_splits(listed, start, end)
        return frame if extra.is_empty() else pl.concat([frame, extra]).sort("execution_date")
    if ds == "dividends" and listed.fail:
        raise ProviderError("dividends: 502 Bad Gateway", provider="sample",
                            endpoint="dividends", status=502)
    extra = (_extra_dividends if ds == "dividends" else _extra_earnings)(listed, start, end)
    if extra.is_empty():
        return frame
    key = "ex_date" if ds == "dividends" else "filing_date"
    return pl.concat([frame, extra]).sort(key)


@dataclass(frozen=True)
class _Rows:
    inner: MarketRows
    request: MarketRequest
    listed: Listed

    @property
    def not_yet(self) -> tuple[dt.date, ...]:
        return self.inner.not_yet

    def for_symbol(self, symbol: str) -> pl.DataFrame:
        r = self.request
        return _edit(self.listed, r.dataset, symbol, self.inner.for_symbol(symbol), r.start,
                     r.end)


class _Listing(SampleProvider):
    """The sample provider listing AAPL's synthetic events as ``listed`` says."""

    def __init__(self, clock, listed: Listed):
        super().__init__(clock=clock)
        self.listed = listed

    def dividends(self, symbol, start, end):
        return _edit(self.listed, "dividends", symbol, super().dividends(symbol, start, end),
                     start, end)

    def earnings(self, symbol, start, end):
        return _edit(self.listed, "earnings", symbol, super().earnings(symbol, start, end),
                     start, end)

    def splits(self, symbol, start, end):
        return _edit(self.listed, "splits", symbol, super().splits(symbol, start, end),
                     start, end)

    def market_rows(self, request):
        return _Rows(super().market_rows(request), request, self.listed)


def _store(tmp_path, name: str) -> tuple[Store, object]:
    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / name)}, dotenv_path=None)
    settings = settings.with_(history_years=1, options_symbols=(SYM,))
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [(s, c, None) for s, c in SYMBOLS])
    return store, settings


def _friday_then_monday(tmp_path, name: str, friday: Listed, monday: Listed,
                        universe_wide: bool = True):
    store, settings = _store(tmp_path, name)
    Engine(store, _Listing(lambda: FRIDAY, friday), settings, clock=lambda: FRIDAY).run()
    summary = Engine(store, _Listing(lambda: MONDAY, monday), settings,
                     clock=lambda: MONDAY).run(RunParams(universe_wide=universe_wide))
    return store, summary


def _monday_chain(store: Store) -> pl.DataFrame:
    return store.lake.read("options_iv", [SYM]).filter(pl.col("as_of") == MONDAY.date())


@pytest.mark.parametrize("universe_wide", [True, False], ids=["universe-wide", "per-symbol"])
@pytest.mark.parametrize("monday", [Listed(X + dt.timedelta(days=1)), Listed()],
                         ids=["re-dated", "cancelled"])
def test_a_dividend_no_longer_listed_in_the_window_leaves_the_lake(tmp_path, universe_wide,
                                                                  monday):
    store, summary = _friday_then_monday(tmp_path, "edited", Listed(X, filed=FILED), monday,
                                         universe_wide)
    assert summary.failed == 0
    market = store.catalog.query(
        "SELECT count(*) FROM fetch_log WHERE run_id = ? AND symbol = '*' "
        "AND dataset = 'dividends'", [summary.run_id]).item()
    assert bool(market) == universe_wide  # the path under test served the refresh

    # What a desk that was only ever told the final listing holds.
    control, _ = _friday_then_monday(tmp_path, "control", monday, monday, universe_wide)
    for ds in ("dividends", "earnings", "features"):
        assert_frame_equal(store.lake.read(ds), control.lake.read(ds), check_exact=True)
    assert not _monday_chain(store).is_empty()
    assert_frame_equal(_monday_chain(store), _monday_chain(control), check_exact=True)
    ex = store.lake.read("dividends", [SYM])["ex_date"].to_list()
    assert X not in ex
    assert (X + dt.timedelta(days=1) in ex) == (monday.dividend is not None)
    assert store.lake.read("earnings", [SYM]).filter(pl.col("fiscal_year") == 1999).is_empty()

    # An operator sees what went: a restatement row per removed value (new value null),
    # and the step's fetch_log row says so.
    gone = store.catalog.query(
        "SELECT dataset, session, column_name, old_value, new_value FROM restatements "
        "WHERE run_id = ? ORDER BY dataset, column_name", [summary.run_id])
    assert gone.filter(pl.col("dataset") == "dividends").rows() == [
        ("dividends", X, "cash_amount", AMOUNT, None)]
    assert gone.filter(pl.col("dataset") == "earnings")["column_name"].to_list() == [
        "eps_basic", "eps_diluted", "revenue"]
    assert gone["new_value"].null_count() == gone.height
    note = store.catalog.query(
        "SELECT error_message FROM fetch_log WHERE run_id = ? AND symbol = ? "
        "AND dataset = 'dividends'", [summary.run_id, SYM]).item()
    assert "no longer listed" in note and X.isoformat() in note


@pytest.mark.parametrize("monday", [Listed(refused=True), Listed(fail=True)],
                         ids=["refused-row", "failed-request"])
def test_a_partial_fetch_removes_nothing(tmp_path, monday):
    store, summary = _friday_then_monday(tmp_path, "partial", Listed(X), monday,
                                         universe_wide=False)
    assert X in store.lake.read("dividends", [SYM])["ex_date"].to_list()
    assert store.catalog.query("SELECT count(*) FROM restatements WHERE run_id = ?",
                               [summary.run_id]).item() == 0


def test_a_backfill_chunk_replaces_its_window_too(tmp_path):
    store, settings = _store(tmp_path, "backfill")
    Engine(store, _Listing(lambda: FRIDAY, Listed(X)), settings, clock=lambda: FRIDAY).run()
    engine = Engine(store, _Listing(lambda: MONDAY, Listed(X + dt.timedelta(days=1))),
                    settings, clock=lambda: MONDAY)
    log = LogBuffer(store)
    outside = store.lake.read("dividends", [SYM]).filter(pl.col("ex_date") < X - dt.timedelta(
        days=60))
    assert not outside.is_empty()
    step = engine.fetch_window(SYM, "stocks", "dividends", "1d",
                               (X - dt.timedelta(days=20), X + dt.timedelta(days=20)), None,
                               log, SymbolResult(SYM, "ok"))
    log.flush()
    assert step.status == "ok"
    held = store.lake.read("dividends", [SYM])
    assert X not in held["ex_date"].to_list()
    assert held.filter(pl.col("ex_date") == X + dt.timedelta(days=1)).height == 1
    # Rows outside the chunk's window are untouched.
    assert_frame_equal(held.filter(pl.col("ex_date") < X - dt.timedelta(days=60)), outside)


def test_both_refresh_paths_leave_the_same_lake_after_a_re_dated_dividend(tmp_path):
    wide, s1 = _friday_then_monday(tmp_path, "wide", Listed(X), Listed(X + dt.timedelta(days=1)))
    each, s2 = _friday_then_monday(tmp_path, "each", Listed(X), Listed(X + dt.timedelta(days=1)),
                                   universe_wide=False)
    assert s1.failed == s2.failed == 0 and s1.requests < s2.requests
    for name in ("bars", "dividends", "splits", "earnings", "news", "features"):
        assert_frame_equal(wide.lake.read(name), each.lake.read(name), check_exact=True)
    assert_frame_equal(_monday_chain(wide), _monday_chain(each), check_exact=True)


@pytest.mark.parametrize("universe_wide", [True, False], ids=["universe-wide", "per-symbol"])
def test_an_event_re_dated_to_before_the_look_back_is_kept_at_its_new_date(tmp_path,
                                                                          universe_wide):
    """A dividend whose ex-date moves 60 days back and an income statement whose filing moves
    30 days back both leave the refresh's look-back window. Before, the window's complete
    answer removed them and nothing fetched them again at their new dates (the statement was
    lost until a wider fetch). Now the symbol's last year is asked once before anything is
    removed: the lake is what a desk told only the final listing holds."""
    moved = Listed(X - dt.timedelta(days=60), filed=FILED - dt.timedelta(days=30))
    store, summary = _friday_then_monday(tmp_path, "moved", Listed(X, filed=FILED), moved,
                                         universe_wide)
    assert summary.failed == 0
    control, _ = _friday_then_monday(tmp_path, "control", moved, moved, universe_wide)
    for ds in ("dividends", "earnings", "features"):
        assert_frame_equal(store.lake.read(ds), control.lake.read(ds), check_exact=True)
    statement = store.lake.read("earnings", [SYM]).filter(pl.col("fiscal_year") == 1999)
    assert statement["filing_date"].to_list() == [FILED - dt.timedelta(days=30)]
    # The dividend's old date is recorded as removed; the statement kept its key: no row.
    gone = store.catalog.query(
        "SELECT dataset, session, old_value, new_value FROM restatements WHERE run_id = ?",
        [summary.run_id])
    assert gone.rows() == [("dividends", X, AMOUNT, None)]
    # One more request each, for AAPL's two datasets only (per symbol: the window's and the
    # wider one; universe-wide: the wider one, the window came with the market's).
    asked = dict(store.catalog.query(
        "SELECT dataset, requests FROM fetch_log WHERE run_id = ? AND symbol = ? "
        "AND dataset IN ('dividends', 'earnings')", [summary.run_id, SYM]).rows())
    assert asked == ({"dividends": 1, "earnings": 1} if universe_wide
                     else {"dividends": 2, "earnings": 2})
    others = store.catalog.query(
        "SELECT max(requests) FROM fetch_log WHERE run_id = ? AND symbol = 'KO' "
        "AND dataset IN ('dividends', 'earnings')", [summary.run_id]).item()
    assert others == (0 if universe_wide else 1)


class _WiderFails(_Listing):
    """As ``_Listing``, but a request of AAPL's ``failing`` dataset (dividends or splits) over
    more than 100 days fails."""

    failing = "dividends"

    def _refuse_wide(self, ds: str, symbol: str, start: dt.date, end: dt.date) -> None:
        if ds == self.failing and symbol == SYM and (end - start).days > 100:
            raise ProviderError(f"{ds}: 502 Bad Gateway", provider="sample", endpoint=ds,
                                status=502)

    def dividends(self, symbol, start, end):
        self._refuse_wide("dividends", symbol, start, end)
        return super().dividends(symbol, start, end)

    def splits(self, symbol, start, end):
        self._refuse_wide("splits", symbol, start, end)
        return super().splits(symbol, start, end)


@pytest.mark.parametrize("universe_wide", [True, False], ids=["universe-wide", "per-symbol"])
def test_a_failed_wider_check_removes_nothing_and_keeps_the_window(tmp_path, universe_wide):
    """The wider request is a check: if it fails, the window's answer is stored as a partial
    one (it only adds), nothing is removed, and the step is not failed."""
    store, settings = _store(tmp_path, "wider")
    Engine(store, _Listing(lambda: FRIDAY, Listed(X)), settings, clock=lambda: FRIDAY).run()
    moved = Listed(X - dt.timedelta(days=60))
    summary = Engine(store, _WiderFails(lambda: MONDAY, moved), settings,
                     clock=lambda: MONDAY).run(RunParams(universe_wide=universe_wide))
    assert summary.failed == 0
    assert X in store.lake.read("dividends", [SYM])["ex_date"].to_list()
    step = store.catalog.query(
        "SELECT status, error_message FROM fetch_log WHERE run_id = ? AND symbol = ? "
        "AND dataset = 'dividends'", [summary.run_id, SYM]).row(0, named=True)
    assert step["status"] == "ok"
    assert "removed nothing: the wider check" in step["error_message"]
    assert store.catalog.query("SELECT count(*) FROM restatements WHERE run_id = ?",
                               [summary.run_id]).item() == 0


TUESDAY = dt.datetime(2026, 11, 24, 23, 0, tzinfo=UTC)  # after Tuesday's close


def _three_days(tmp_path, name: str, monday: Listed, tuesday: Listed, universe_wide: bool):
    store, settings = _store(tmp_path, name)
    Engine(store, _Listing(lambda: FRIDAY, Listed()), settings, clock=lambda: FRIDAY).run()
    for day, listed in ((MONDAY, monday), (TUESDAY, tuesday)):
        summary = Engine(store, _Listing(lambda d=day: d, listed), settings,
                         clock=lambda d=day: d).run(RunParams(universe_wide=universe_wide))
        assert summary.failed == 0
    return store, summary


def _bars(store: Store) -> pl.DataFrame:
    return store.lake.read("bars", [SYM]).drop("adjusted_asof")


@pytest.mark.parametrize("universe_wide", [True, False], ids=["universe-wide", "per-symbol"])
@pytest.mark.parametrize("tuesday", [Listed(), Listed(split=MONDAY.date(), split_to=3.0)],
                         ids=["cancelled", "ratio-corrected"])
def test_a_split_cancelled_or_corrected_after_it_re_based_the_bars_is_taken_back(
        tmp_path, universe_wide, tuesday):
    """A 2-for-1 split listed on its execution day (Monday) re-bases the stored bars before
    it (halved). On Tuesday the provider no longer lists it (cancelled), or lists another
    ratio. Before, the split stayed and so did the halved bars (splits were only ever added,
    and a re-based bar cannot be re-based back). Now the split goes (or changes) and the
    symbol's bars are fetched again, as the provider serves them: after a cancel, the lake is
    what a desk never told of the split holds."""
    store, summary = _three_days(tmp_path, "split", Listed(split=MONDAY.date()), tuesday,
                                 universe_wide)
    held = store.lake.read("splits", [SYM]).filter(
        pl.col("execution_date") == MONDAY.date())
    assert held["split_to"].to_list() == ([3.0] if tuesday.split else [])
    note = store.catalog.query(
        "SELECT error_message FROM fetch_log WHERE run_id = ? AND symbol = ? "
        "AND dataset = 'splits'", [summary.run_id, SYM]).item()
    assert "re-based back off the split" in note and "fetched again" in note
    assert MONDAY.date().isoformat() in note
    # The bars step asked the whole history again (its own request), only for AAPL.
    windows = dict(store.catalog.query(
        "SELECT symbol, window_start FROM fetch_log WHERE run_id = ? AND dataset = 'bars' "
        "AND symbol IN ('AAPL', 'KO')", [summary.run_id]).rows())
    assert windows["AAPL"] < FRIDAY.date() - dt.timedelta(days=300) < windows["KO"]
    if not tuesday.split:
        control, _ = _three_days(tmp_path, "control", Listed(), Listed(), universe_wide)
        assert_frame_equal(_bars(store), _bars(control), check_exact=True)
        for ds in ("splits", "features"):
            assert_frame_equal(store.lake.read(ds), control.lake.read(ds), check_exact=True)


class _BarsFail(_Listing):
    """As ``_Listing``, but every request of AAPL's bars fails."""

    def bars(self, symbol, *args, **kwargs):
        if symbol == SYM:
            raise ProviderError("bars: 502 Bad Gateway", provider="sample", endpoint="bars",
                                status=502)
        return super().bars(symbol, *args, **kwargs)


def test_a_split_taken_back_while_the_bars_request_fails_is_fetched_again_next_run(tmp_path):
    """The bars' fetched-through mark moves back before the split goes: when the run's own
    request for the bars fails (or the process dies before it), the next run still fetches
    their history again, and the lake ends as a desk never told of the split."""
    wednesday = TUESDAY + dt.timedelta(days=1)
    days = [(FRIDAY, _Listing, Listed()), (MONDAY, _Listing, Listed(split=MONDAY.date())),
            (TUESDAY, _BarsFail, Listed()), (wednesday, _Listing, Listed())]
    desks = {}
    for name, edited in (("failed", True), ("control", False)):
        store, settings = _store(tmp_path, name)
        for day, provider, listed in days:
            provider = provider if edited else _Listing
            summary = Engine(store, provider(lambda d=day: d, listed if edited else Listed()),
                             settings, clock=lambda d=day: d).run()
            assert summary.failed == (1 if edited and day == TUESDAY else 0)
        desks[name] = store
    assert_frame_equal(_bars(desks["failed"]), _bars(desks["control"]), check_exact=True)
    assert_frame_equal(desks["failed"].lake.read("features"),
                       desks["control"].lake.read("features"), check_exact=True)


def _days(store: Store, settings, days) -> None:
    for day, listed in days:
        at = dt.datetime.combine(day, dt.time(23, 0), tzinfo=UTC)
        summary = Engine(store, _Listing(lambda at=at: at, listed), settings,
                         clock=lambda at=at: at).run(RunParams(universe_wide=False))
        assert summary.failed == 0


def test_a_split_re_dated_from_before_the_window_into_it_is_not_applied_twice(tmp_path):
    """A split listed on 2026-10-13 (re-basing the bars before it), then listed on 2026-11-20
    instead, once its first date has left the 30-day look-back: a split new to the desk is
    first checked over the wider 400 days, which no longer list the old date, so it goes and
    the bars are taken back off it. Before, both were stored and the bars before 2026-10-13
    were re-based twice (a quarter of their price)."""
    first, moved = dt.date(2026, 10, 13), dt.date(2026, 11, 20)
    days = [(dt.date(2026, 10, 12), Listed()), (first, Listed(split=first)),
            (dt.date(2026, 11, 23), Listed(split=first)),
            (dt.date(2026, 11, 24), Listed(split=moved))]
    store, settings = _store(tmp_path, "moved")
    _days(store, settings, days)
    control, settings = _store(tmp_path, "never")
    _days(control, settings, [(d, Listed()) for d, _ in days])
    held = store.lake.read("splits", [SYM]).filter(pl.col("execution_date") > first.replace(
        month=1))["execution_date"].to_list()
    assert held == [moved]
    # The sample's own bars never carry this synthetic split: taken back off it and fetched
    # again, they are what a desk never told of it holds.
    assert_frame_equal(_bars(store), _bars(control), check_exact=True)


def test_bars_older_than_the_plan_serves_are_taken_back_off_a_cancelled_split(tmp_path):
    """The plan now serves only the last 200 days of bars: the ones before cannot be fetched
    again after a cancelled split; they are taken back off it in place (before, 115 of them
    stayed at half their price)."""
    from enrich.store import plan_limits
    from enrich.store.catalog import WriteBatch

    desks = {}
    for name, monday in (("cancelled", Listed(split=MONDAY.date())), ("control", Listed())):
        store, settings = _store(tmp_path, name)
        _days(store, settings, [(FRIDAY.date(), Listed()), (MONDAY.date(), monday)])
        batch = WriteBatch()
        plan_limits.record_history(batch, "sample", "stocks", "bars", "1d", 200, "test")
        store.catalog.write(batch)
        _days(store, settings, [(TUESDAY.date(), Listed())])
        desks[name] = store
    asked = desks["cancelled"].catalog.query(
        "SELECT window_start FROM fetch_log WHERE dataset = 'bars' AND symbol = ? "
        "ORDER BY started_at DESC LIMIT 1", [SYM]).item()
    held = _bars(desks["cancelled"])
    assert held["session"].min() < asked  # Tuesday's fetch again could not reach them
    assert_frame_equal(held, _bars(desks["control"]), check_exact=True)


def test_a_split_re_dated_earlier_re_bases_the_bars_the_plan_no_longer_serves_onto_it(
        tmp_path):
    """A split stored on Monday, listed on the Monday before instead on Tuesday, with the plan
    serving only the last 200 days: bars older than that cannot be fetched again; they are
    taken back off Monday's date and put on the new one (half the price of a desk never told
    of a split, on its basis), the ones fetched again are as served."""
    from enrich.store import plan_limits
    from enrich.store.catalog import WriteBatch

    earlier = MONDAY.date() - dt.timedelta(days=7)
    desks = {}
    for name, monday, tuesday in (("moved", Listed(split=MONDAY.date()), Listed(split=earlier)),
                                  ("never", Listed(), Listed())):
        store, settings = _store(tmp_path, name)
        _days(store, settings, [(FRIDAY.date(), Listed()), (MONDAY.date(), monday)])
        batch = WriteBatch()
        plan_limits.record_history(batch, "sample", "stocks", "bars", "1d", 200, "test")
        store.catalog.write(batch)
        _days(store, settings, [(TUESDAY.date(), tuesday)])
        desks[name] = store
    served = desks["moved"].catalog.query(
        "SELECT window_start FROM fetch_log WHERE dataset = 'bars' AND symbol = ? "
        "ORDER BY started_at DESC LIMIT 1", [SYM]).item()
    moved = desks["moved"].lake.read("bars", [SYM])
    never = desks["never"].lake.read("bars", [SYM])
    old = moved.filter(pl.col("session") < served)
    assert old.height > 0 and set(old["adjusted_asof"]) == {earlier}
    ratio = old["close"] / never.filter(pl.col("session") < served)["close"]
    assert ratio.to_list() == [0.5] * old.height
    assert_frame_equal(moved.filter(pl.col("session") >= served).drop("adjusted_asof"),
                       never.filter(pl.col("session") >= served).drop("adjusted_asof"),
                       check_exact=True)


class _SplitsWiderFails(_WiderFails):
    failing = "splits"


def test_a_new_split_is_held_back_until_the_wider_check_confirms_it(tmp_path):
    """The wider check a new split asks for fails: the split is not stored yet (stored next to
    an old date it may replace, the bars would be re-based twice, and no later run would look
    again), the step says so and is not failed; the next run asks again and stores it."""
    store, settings = _store(tmp_path, "held")
    _days(store, settings, [(FRIDAY.date(), Listed())])
    at = TUESDAY
    summary = Engine(store, _SplitsWiderFails(lambda: at, Listed(split=MONDAY.date())),
                     settings, clock=lambda: at).run(RunParams(universe_wide=False))
    assert summary.failed == 0
    step = store.catalog.query(
        "SELECT status, error_message FROM fetch_log WHERE run_id = ? AND symbol = ? "
        "AND dataset = 'splits'", [summary.run_id, SYM]).row(0, named=True)
    assert step["status"] == "ok" and "held back the splits new to the desk" in step[
        "error_message"]
    assert MONDAY.date() not in store.lake.read("splits", [SYM])["execution_date"].to_list()
    _days(store, settings, [(TUESDAY.date() + dt.timedelta(days=1), Listed(split=MONDAY.date()))])
    assert MONDAY.date() in store.lake.read("splits", [SYM])["execution_date"].to_list()
