"""Data-quality checks and restatements.

A clean sample enrichment of the demo universe fails no check. Each defect injected into the
stored sample data (a gap, a duplicate session, an unexplained jump, a bad OHLC bar, a bad
IV, …) makes exactly the matching check fail. Checks run after every fetch and write one row
per check per symbol × dataset; a re-fetch that changes stored history is a restatement,
while a move to a newer split basis is a re-base.
"""

from __future__ import annotations

import datetime as dt
import shutil

import polars as pl
import pytest

from enrich.checks import quality, quality_run
from enrich.config import load_settings
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.providers.sample.provider import SampleProvider
from enrich.store.store import Store
from enrich.store.universe import ensure_demo_universe
from enrich.symbols import DATASETS_BY_CLASS, DEMO_UNIVERSE
from enrich.views import quality as quality_view
from tests.conftest import FIXED_NOW

UTC = dt.UTC


def enrich(settings, now=FIXED_NOW, provider=None, symbols=None, **params):
    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    clock = lambda: now  # noqa: E731
    engine = Engine(store, provider or SampleProvider(clock=clock), settings, clock=clock)
    return store, engine.run(RunParams(symbols=symbols, **params), kind="manual")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The demo universe enriched once from the sample provider (one year)."""
    data = tmp_path_factory.mktemp("clean") / "data"
    settings = load_settings({"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off"},
                             dotenv_path=None).with_(history_years=1)
    store, summary = enrich(settings)
    assert summary.state == "succeeded"
    return data, summary


@pytest.fixture
def copy(clean, tmp_path):
    """A private copy of the clean store, to inject defects into."""
    src, _ = clean
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return Store(dst)


def failing(store: Store, symbol: str, datasets=None) -> dict[tuple[str, str], float]:
    """Re-check one symbol; (dataset, check) -> observed of every failing check."""
    res = quality_run.audit(store, [symbol], datasets)
    return {(r["dataset"], r["check"]): r["observed"]
            for r in res.filter(~pl.col("passed")).iter_rows(named=True)}


def bars_of(store: Store, symbol: str = "AAPL") -> pl.DataFrame:
    return store.lake.read("bars", [symbol], level="1d")


def put_bars(store: Store, frame: pl.DataFrame, symbol: str = "AAPL") -> None:
    store.lake.replace_symbol("bars", symbol, frame, level="1d")


# -- the clean universe ----------------------------------------------------------------------
def test_clean_demo_universe_fails_no_check(clean):
    data, summary = clean
    store = Store(data)
    status = store.catalog.query("SELECT * FROM quality_status")
    assert status.filter(~pl.col("passed")).is_empty(), \
        status.filter(~pl.col("passed")).select("symbol", "dataset", "check_name", "detail")
    # Every applicable check ran for every symbol × dataset, once per fetch step.
    expected = sum(1 for s in DEMO_UNIVERSE for ds in DATASETS_BY_CLASS[s.asset_class]
                   for c in quality.CHECKS if c.dataset == ds)
    assert status.height == expected
    logged = store.catalog.scalar("SELECT count(*) FROM quality_log WHERE run_id = ?",
                                  [summary.run_id])
    assert logged == expected  # one row per check per symbol × dataset, not per bar
    # A re-check of everything stored agrees.
    assert quality_run.audit(store).filter(~pl.col("passed")).is_empty()
    scores = quality_view.quality_scores(store.catalog)
    assert scores["score"].min() == 1.0


def test_thresholds_live_in_one_frozen_place():
    with pytest.raises(AttributeError):
        quality.THRESHOLDS.jump = 0.5  # type: ignore[misc]
    assert {c.severity for c in quality.CHECKS} <= set(quality.SEVERITY_WEIGHT)
    assert len({(c.dataset, c.name) for c in quality.CHECKS}) == len(quality.CHECKS)


# -- one defect, one failing check -------------------------------------------------------------
def test_a_gap_fails_missing_sessions_only(copy):
    bars = bars_of(copy)
    sessions = bars["session"].to_list()
    gone = sessions[100:103]
    put_bars(copy, bars.filter(~pl.col("session").is_in(gone)))
    assert failing(copy, "AAPL") == {("bars", "missing_sessions"): 3.0}
    detail = copy.catalog.scalar(
        "SELECT detail FROM quality_status WHERE symbol = 'AAPL' AND check_name = "
        "'missing_sessions'")
    assert f"{gone[0]}–{gone[-1]} (3)" in detail
    gaps = copy.catalog.scalar("SELECT gaps FROM session_coverage WHERE symbol = 'AAPL' "
                               "AND dataset = 'bars'")
    assert gone[0].isoformat() in gaps and gone[-1].isoformat() in gaps


def test_a_duplicate_session_fails_duplicate_sessions_only(copy):
    bars = bars_of(copy)
    twin = bars.slice(50, 1).with_columns(pl.col("ts") + dt.timedelta(hours=1))
    put_bars(copy, pl.concat([bars, twin]))
    assert failing(copy, "AAPL") == {("bars", "duplicate_sessions"): 1.0}


def test_an_unexplained_jump_fails_jump_only_and_a_split_explains_it(copy):
    bars = bars_of(copy)
    day = bars["session"][120]
    px = ["open", "high", "low", "close", "vwap"]
    jumped = bars.with_columns(
        [pl.when(pl.col("session") >= day).then(pl.col(c) * 1.6).otherwise(pl.col(c))
         .alias(c) for c in px])
    put_bars(copy, jumped)
    got = failing(copy, "AAPL")
    assert set(got) == {("bars", "jump")} and got[("bars", "jump")] > 0.5
    assert str(day) in copy.catalog.scalar(
        "SELECT detail FROM quality_status WHERE symbol = 'AAPL' AND check_name = 'jump'")
    copy.lake.upsert("splits", pl.DataFrame({
        "symbol": ["AAPL"], "execution_date": [day], "split_from": [5.0], "split_to": [8.0],
        "adjustment_type": ["forward_split"]}))
    assert failing(copy, "AAPL") == {}


def test_a_bad_ohlc_bar_fails_ohlc_only(copy):
    bars = bars_of(copy)
    bad = bars.with_columns(pl.when(pl.int_range(pl.len()) == 77)
                            .then(pl.min_horizontal("open", "close") * 0.99)
                            .otherwise(pl.col("high")).alias("high"))
    put_bars(copy, bad)
    assert failing(copy, "AAPL") == {("bars", "ohlc"): 1.0}


def test_negative_volume_fails_non_positive_only(copy):
    bars = bars_of(copy)
    put_bars(copy, bars.with_columns(pl.when(pl.int_range(pl.len()) == 10)
                                     .then(-5.0).otherwise(pl.col("volume")).alias("volume")))
    assert failing(copy, "AAPL") == {("bars", "non_positive"): 1.0}


def test_repeated_closes_fail_repeated_closes_only(copy):
    bars = bars_of(copy)
    i = pl.int_range(pl.len())
    flat = bars["close"][60]
    put_bars(copy, bars.with_columns(
        [pl.when((i >= 60) & (i < 66)).then(flat).otherwise(pl.col(c)).alias(c)
         for c in ("open", "high", "low", "close", "vwap")]))
    assert failing(copy, "AAPL") == {("bars", "repeated_closes"): 6.0}


# -- the checks that would have caught wrong data for an instrument (issue 13) --------------
def _shift_days(frame: pl.DataFrame, days: int) -> pl.DataFrame:
    return frame.with_columns(pl.col("ts") + dt.timedelta(days=days),
                              pl.col("session") + dt.timedelta(days=days))


def test_a_bar_on_a_day_that_is_no_session_fails_off_calendar_only(copy):
    bars = bars_of(copy)
    friday = bars.filter(pl.col("session").dt.weekday() == 5).slice(10, 1)
    put_bars(copy, pl.concat([bars, _shift_days(friday, 1)]))  # the same bar on Saturday
    saturday = friday["session"][0] + dt.timedelta(days=1)
    assert failing(copy, "AAPL") == {("bars", "off_calendar"): 1.0}
    assert saturday.isoformat() in copy.catalog.scalar(
        "SELECT detail FROM quality_status WHERE symbol = 'AAPL' AND check_name = "
        "'off_calendar'")
    # Forex trades Sunday to Friday: a Saturday bar is none of its sessions, a Sunday is one
    # (crypto's calendar has every day).
    fx = bars_of(copy, "C:EURUSD")
    assert (fx["session"].dt.weekday() == 7).any() and not (fx["session"].dt.weekday() == 6).any()
    fri = fx.filter(pl.col("session").dt.weekday() == 5).slice(3, 1)
    put_bars(copy, pl.concat([fx, _shift_days(fri, 1)]), "C:EURUSD")
    assert failing(copy, "C:EURUSD") == {("bars", "off_calendar"): 1.0}
    btc = bars_of(copy, "X:BTCUSD")
    assert (btc["session"].dt.weekday() == 6).any()
    assert failing(copy, "X:BTCUSD") == {}


def test_a_zero_volume_bar_fails_zero_volume_only_where_volume_is_expected(copy):
    bars = bars_of(copy)
    put_bars(copy, bars.with_columns(pl.when(pl.int_range(pl.len()) == 40).then(0.0)
                                     .otherwise(pl.col("volume")).alias("volume")))
    assert failing(copy, "AAPL") == {("bars", "zero_volume"): 1.0}
    # An index carries no volume at all (null): nothing to judge.
    spx = bars_of(copy, "I:SPX")
    assert spx["volume"].null_count() == spx.height
    assert failing(copy, "I:SPX") == {}
    assert "carry no volume" in copy.catalog.scalar(
        "SELECT detail FROM quality_status WHERE symbol = 'I:SPX' AND check_name = "
        "'zero_volume'")


@pytest.mark.parametrize(("column", "factor"), [("high", 1.6), ("low", 0.5)])
def test_a_bad_print_fails_bad_print_only(copy, column, factor):
    bars = bars_of(copy)
    put_bars(copy, bars.with_columns(pl.when(pl.int_range(pl.len()) == 90)
                                     .then(pl.col(column) * factor)
                                     .otherwise(pl.col(column)).alias(column)))
    got = failing(copy, "AAPL")
    assert set(got) == {("bars", "bad_print")} and got[("bars", "bad_print")] > 8
    assert str(bars["session"][90]) in copy.catalog.scalar(
        "SELECT detail FROM quality_status WHERE symbol = 'AAPL' AND check_name = 'bad_print'")


def test_a_partial_last_session_fails_partial_session_only(copy):
    bars = bars_of(copy)
    last = bars.height - 1
    put_bars(copy, bars.with_columns(pl.when(pl.int_range(pl.len()) == last)
                                     .then(pl.col("volume") * 0.05)
                                     .otherwise(pl.col("volume")).alias("volume")))
    got = failing(copy, "AAPL")
    assert set(got) == {("bars", "partial_session")}
    assert got[("bars", "partial_session")] < quality.THRESHOLDS.partial_session


def test_a_forex_sunday_is_judged_against_sundays(copy):
    """Sunday's forex session opens at 17:00 New York: a few percent of a weekday's quotes
    is its normal volume, not a partial session."""
    fx = bars_of(copy, "C:EURUSD")
    sunday = fx.filter(pl.col("session").dt.weekday() == 7)["session"][-1]
    upto = fx.filter(pl.col("session") <= sunday)
    weekdays = upto.filter(pl.col("session").dt.weekday() < 6)["volume"].median()
    assert upto["volume"][-1] < 0.25 * weekdays  # far below a weekday's
    results, _ = quality.check_bars(upto, copy.lake.read("splits", ["C:EURUSD"]), "FX",
                                    asset_class="fx")
    partial = next(r for r in results if r.check == "partial_session")
    assert partial.passed and "short session" in partial.detail
    cut = upto.with_columns(pl.when(pl.col("session") == sunday).then(pl.col("volume") * 0.05)
                            .otherwise(pl.col("volume")).alias("volume"))
    results, _ = quality.check_bars(cut, copy.lake.read("splits", ["C:EURUSD"]), "FX",
                                    asset_class="fx")
    assert [r.check for r in results if not r.passed] == ["partial_session"]


def test_a_price_level_break_across_a_gap_fails_ticker_reuse_only(copy):
    """Another security's history under the ticker: it stopped trading, the ticker was idle,
    then the current one started at another price level. The gap and the move are that
    check's evidence, not missing sessions or a jump."""
    bars = bars_of(copy)
    i = pl.int_range(pl.len())
    px = ["open", "high", "low", "close", "vwap"]
    old = bars.with_columns([pl.when(i < 100).then(pl.col(c) / 15).otherwise(pl.col(c))
                             .alias(c) for c in px])
    put_bars(copy, old.filter((i < 100) | (i >= 110)))  # ten sessions without a bar
    got = failing(copy, "AAPL")
    assert got == {("bars", "ticker_reuse"): 1.0}
    detail = copy.catalog.scalar("SELECT detail FROM quality_status WHERE symbol = 'AAPL' "
                                 "AND check_name = 'ticker_reuse'")
    assert f"{bars['session'][99]} → {bars['session'][110]}" in detail
    # A split in the gap explains the level: no break.
    copy.lake.upsert("splits", pl.DataFrame({
        "symbol": ["AAPL"], "execution_date": [bars["session"][110]], "split_from": [1.0],
        "split_to": [15.0], "adjustment_type": ["forward_split"]}))
    assert failing(copy, "AAPL") == {("bars", "missing_sessions"): 10.0}


def test_a_bad_iv_fails_iv_range_only_and_bad_greeks_fail_greeks(copy):
    chain = copy.lake.read("options_iv", ["AAPL"])
    calls = pl.col("contract_type") == "call"
    first_call = chain.filter(calls)["contract"][0]
    bad = chain.with_columns(pl.when(pl.col("contract") == first_call).then(7.5)
                             .otherwise(pl.col("iv")).alias("iv"))
    copy.lake.upsert("options_iv", bad)
    assert failing(copy, "AAPL") == {("options_iv", "iv_range"): 1.0}
    put = chain.filter(~calls)["contract"][0]
    copy.lake.upsert("options_iv", chain.with_columns(
        pl.when(pl.col("contract") == put).then(0.3).otherwise(pl.col("delta")).alias("delta")))
    assert failing(copy, "AAPL") == {("options_iv", "greeks"): 1.0}


def test_a_call_delta_above_one_passes_where_a_negative_yield_allows_it():
    # Found by a QA pass: the desk's own greeks failed its check on demo data. A parity-
    # implied yield q < 0 makes a deep call's delta e^(-qT) N(d1) > 1 (the chains below:
    # S0067 and S0117 of 2026-12-04, priced with q = -0.0855 and -0.000714).
    from enrich.checks.quality import check_options

    def chain(delta: float, q: float | None, days: int) -> pl.DataFrame:
        return pl.DataFrame({
            "as_of": [dt.date(2026, 12, 4)],
            "expiration": [dt.date(2026, 12, 4) + dt.timedelta(days=days)],
            "contract": ["O:X"], "contract_type": ["call"], "iv": [0.4], "delta": [delta],
            "gamma": [0.01], "dividend_yield": [q]})

    def greeks_ok(frame: pl.DataFrame) -> bool:
        return {r.check: r.passed for r in check_options(frame)}["greeks"]

    assert greeks_ok(chain(1.00252, -0.0855, 27))  # e^(0.0855 * 27 / 365) = 1.00634
    assert greeks_ok(chain(1.00001, -0.000714, 7))  # 1.0000137
    assert not greeks_ok(chain(1.00252, 0.01, 27))  # q > 0: at most 1
    assert not greeks_ok(chain(1.00252, None, 27))
    assert not greeks_ok(chain(1.00700, -0.0855, 27))  # beyond e^(-qT)
    put = chain(-1.00252, -0.0855, 27).with_columns(contract_type=pl.lit("put"))
    assert greeks_ok(put) and not greeks_ok(put.with_columns(dividend_yield=pl.lit(0.0)))


def test_dividend_defects(copy):
    divs = copy.lake.read("dividends", ["KO"])
    assert divs.height >= 3
    big = divs.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(500.0)
                            .otherwise(pl.col("cash_amount")).alias("cash_amount"))
    copy.lake.replace_symbol("dividends", "KO", big)
    assert failing(copy, "KO") == {("dividends", "dividend_size"): 1.0}
    late = divs.with_columns(pl.lit("KO").alias("symbol")).tail(1).with_columns(
        pl.lit(dt.date(2027, 3, 1)).alias("ex_date"))
    copy.lake.replace_symbol("dividends", "KO", pl.concat([divs, late]))
    assert failing(copy, "KO") == {("dividends", "ex_date_range"): 1.0}


def test_news_duplicates_and_earnings_order(copy):
    news = copy.lake.read("news", ["MSFT"])
    twin = news.head(1).with_columns(pl.lit("dup-id").alias("id"))
    copy.lake.upsert("news", twin)
    assert failing(copy, "MSFT") == {("news", "news_duplicates"): 1.0}
    copy.lake.replace_symbol("news", "MSFT", news)
    earn = copy.lake.read("earnings", ["MSFT"]).sort("fiscal_year", "fiscal_quarter")
    ends = earn["period_end"].to_list()
    ends[1], ends[2] = ends[2], ends[1]
    copy.lake.replace_symbol("earnings", "MSFT", earn.with_columns(
        pl.Series("period_end", ends), pl.max_horizontal("filing_date", pl.Series(ends))
        .alias("filing_date")))
    got = failing(copy, "MSFT")
    assert set(got) == {("earnings", "earnings_order")}


def test_results_do_not_depend_on_row_order(clean):
    """The checks put rows in order themselves: shuffled bars (with or without a duplicated
    session) give the same results and coverage, and items repeated at one time are quoted
    in the same order on every run."""
    data, _ = clean
    store = Store(data)
    bars, splits = bars_of(store), store.lake.read("splits", ["AAPL"])
    divs = store.lake.read("dividends", ["AAPL"])
    twin = bars.slice(30, 1).with_columns(pl.col("ts") + dt.timedelta(hours=1))
    for frame in (bars, pl.concat([bars, twin])):
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=1)
        assert (quality.check_bars(shuffled, splits, "XNYS")
                == quality.check_bars(frame, splits, "XNYS"))
        assert (quality.check_dividends(divs, shuffled, splits)
                == quality.check_dividends(divs, frame, splits))
    news = store.lake.read("news", ["MSFT"])
    at = news["published_utc"][0]
    repeated = pl.concat([news.head(3), news.head(3)]).with_columns(
        pl.lit(at).alias("published_utc"))
    details = {quality.check_news(repeated)[0].detail for _ in range(5)}
    assert len(details) == 1 and details.pop().startswith("3 repeated news items: ")


# -- after every fetch, through the engine -----------------------------------------------------
class Defective:
    """The sample provider whose AAPL bars skip two sessions and jump 40 % on another."""

    def __init__(self, inner: SampleProvider):
        self.inner = inner
        self.name, self.is_demo, self.rate_limited = inner.name, True, False

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def bars(self, symbol, timeframe, start, end):
        f = self.inner.bars(symbol, timeframe, start, end)
        if symbol != "AAPL" or f.height < 60:
            return f
        i = pl.int_range(pl.len())
        f = f.with_columns([pl.when(i >= 50).then(pl.col(c) * 1.4).otherwise(pl.col(c))
                            .alias(c) for c in ("open", "high", "low", "close", "vwap")])
        return f.filter(~i.is_in([20, 21]))


def test_checks_run_after_each_fetch_and_feed_scores(settings):
    clock = lambda: FIXED_NOW  # noqa: E731
    store, summary = enrich(settings.with_(history_years=1),
                            provider=Defective(SampleProvider(clock=clock)),
                            symbols=["AAPL", "MSFT"], lookback_days=120)
    assert summary.state == "succeeded"  # quality findings never fail a fetch
    log = store.catalog.query("SELECT * FROM quality_log WHERE run_id = ?", [summary.run_id])
    per = log.group_by("symbol", "dataset", "check_name").len()
    assert per["len"].max() == 1  # one row per check per symbol × dataset
    bad = log.filter(~pl.col("passed"))
    assert sorted(zip(bad["symbol"], bad["check_name"], strict=True)) == [
        ("AAPL", "jump"), ("AAPL", "missing_sessions")]
    assert bad.filter(pl.col("check_name") == "missing_sessions")["observed"][0] == 2
    scores = quality_view.quality_scores(store.catalog)
    aapl_bars = scores.filter((pl.col("symbol") == "AAPL") & (pl.col("dataset") == "bars"))
    weights = quality.SEVERITY_WEIGHT
    total = sum(weights[c.severity] for c in quality.CHECKS if c.dataset == "bars")
    assert aapl_bars["score"][0] == pytest.approx(
        (total - weights["error"] - weights["warning"]) / total)
    assert aapl_bars["failed"][0] == 2
    assert scores.filter(pl.col("symbol") == "MSFT")["score"].min() == 1.0
    per_symbol = quality_view.symbol_quality(store.catalog)
    assert per_symbol.filter(pl.col("symbol") == "AAPL")["failed"][0] == 2
    # The drilldown lists each failing check with its evidence.
    checks = quality_view.symbol_checks(store.catalog, "AAPL")
    failed = checks.filter(~pl.col("passed"))
    assert failed["check_name"].to_list() == ["missing_sessions", "jump"]  # errors first
    assert "moves beyond ±25% without a split: " in failed["detail"][1]
    # A second run with nothing new fetches nothing and checks nothing.
    _, again = enrich(settings.with_(history_years=1),
                      provider=Defective(SampleProvider(clock=clock)), symbols=["AAPL"])
    assert store.catalog.scalar("SELECT count(*) FROM quality_log WHERE run_id = ?",
                                [again.run_id]) == 0


def test_a_crashing_check_is_recorded_not_raised(settings, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("check exploded")

    monkeypatch.setattr(quality_run, "run_checks", boom)
    store, summary = enrich(settings, symbols=["SPY"], lookback_days=30)
    assert summary.state == "succeeded"
    row = store.catalog.query("SELECT status, error_message FROM compute_log "
                              "WHERE dataset = 'quality'").row(0)
    assert row == ("failed", "check exploded")


def test_quality_trend_and_aggregates(clean):
    data, _ = clean
    store = Store(data)
    agg = quality_view.quality_by_dataset(store.catalog)
    assert set(agg["dataset"]) == {"bars", "dividends", "earnings", "news", "options_iv"}
    assert agg["failed_checks"].sum() == 0 and agg["mean_score"].min() == 1.0
    trend = quality_view.quality_daily(store.catalog, FIXED_NOW + dt.timedelta(days=400), days=900)
    assert trend.height >= 1 and trend["pass_rate"].min() == 1.0
    by_check = quality_view.quality_by_check(store.catalog)
    assert by_check.height == len(quality.CHECKS)


# -- restatements -----------------------------------------------------------------------------
class Restating:
    """The sample provider, but one AAPL session's close (and high) is revised upwards."""

    def __init__(self, inner: SampleProvider, day: dt.date):
        self.inner, self.day = inner, day
        self.name, self.is_demo, self.rate_limited = inner.name, True, False

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def bars(self, symbol, timeframe, start, end):
        f = self.inner.bars(symbol, timeframe, start, end)
        if symbol != "AAPL":
            return f
        on = pl.col("session") == self.day
        return f.with_columns(
            pl.when(on).then(pl.col("close") * 1.02).otherwise(pl.col("close")).alias("close"),
            pl.when(on).then(pl.max_horizontal("high", pl.col("close") * 1.02))
            .otherwise(pl.col("high")).alias("high"))


class NewSplit:
    """The sample provider with a 2-for-1 AAPL split on 2026-06-01 once the clock passes it,
    bars adjusted for it as of the request's end (like a real feed)."""

    SPLIT = dt.date(2026, 6, 1)

    def __init__(self, inner: SampleProvider, clock):
        self.inner, self.clock = inner, clock
        self.name, self.is_demo, self.rate_limited = inner.name, True, False

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def _known(self) -> bool:
        return self.clock().date() > self.SPLIT

    def splits(self, symbol, start, end):
        f = self.inner.splits(symbol, start, end)
        if symbol == "AAPL" and self._known() and start <= self.SPLIT <= end:
            f = pl.concat([f, pl.DataFrame({
                "symbol": ["AAPL"], "execution_date": [self.SPLIT], "split_from": [1.0],
                "split_to": [2.0], "adjustment_type": ["forward_split"]})])
        return f

    def bars(self, symbol, timeframe, start, end):
        f = self.inner.bars(symbol, timeframe, start, end)
        if symbol != "AAPL" or not self._known():
            return f
        before = pl.col("session") < self.SPLIT
        return f.with_columns(
            [pl.when(before).then(pl.col(c) / 2).otherwise(pl.col(c)).alias(c)
             for c in ("open", "high", "low", "close", "vwap")]
            + [pl.when(before).then(pl.col("volume") * 2).otherwise(pl.col("volume"))
               .alias("volume")])


def test_a_refetch_that_changes_history_is_a_restatement(settings):
    settings = settings.with_(history_years=1)
    store, first = enrich(settings, symbols=["AAPL"], lookback_days=90)
    day = store.lake.read("bars", ["AAPL"])["session"][30]
    old_close = store.lake.read("bars", ["AAPL"]).filter(pl.col("session") == day)["close"][0]
    feats_before = store.lake.read("features", ["AAPL"], level="1d")
    (store.lake.root / "_coverage" / "AAPL.json").unlink()  # forget: re-fetch the window
    clock = lambda: FIXED_NOW  # noqa: E731
    _, second = enrich(settings, provider=Restating(SampleProvider(clock=clock), day),
                       symbols=["AAPL"], lookback_days=90)
    rest = quality_view.symbol_restatements(store.catalog, "AAPL")
    assert {"close"} <= set(rest["column_name"]) <= {"close", "high"}
    row = rest.filter(pl.col("column_name") == "close").row(0, named=True)
    assert row["session"] == day and row["run_id"] == second.run_id
    assert row["old_value"] == pytest.approx(old_close)
    assert row["new_value"] == pytest.approx(old_close * 1.02)
    assert row["change"] == pytest.approx(0.02)
    # The dependent features were recomputed from the restated close.
    feats = store.lake.read("features", ["AAPL"], level="1d")
    assert not feats.filter(pl.col("session") == day)["log_return"].equals(
        feats_before.filter(pl.col("session") == day)["log_return"])
    assert store.catalog.scalar(
        "SELECT records FROM compute_log WHERE run_id = ? AND dataset = 'features'",
        [second.run_id]) > 0
    # A plain re-fetch of unchanged history restates nothing.
    (store.lake.root / "_coverage" / "AAPL.json").unlink()
    _, third = enrich(settings, provider=Restating(SampleProvider(clock=clock), day),
                      symbols=["AAPL"], lookback_days=90)
    assert store.catalog.scalar("SELECT count(*) FROM restatements WHERE run_id = ?",
                                [third.run_id]) == 0


def test_a_split_rebase_is_not_a_restatement(settings):
    settings = settings.with_(history_years=1)
    early = dt.datetime(2026, 5, 15, 22, 0, tzinfo=UTC)
    box = {"now": early}
    clock = lambda: box["now"]  # noqa: E731
    provider = NewSplit(SampleProvider(clock=clock), clock)
    store, _ = enrich(settings, now=early, provider=provider, symbols=["AAPL"],
                      lookback_days=60)
    held = store.lake.read("bars", ["AAPL"]).height  # all before the split
    box["now"] = FIXED_NOW
    (store.lake.root / "_coverage" / "AAPL.json").unlink()  # re-fetch the old sessions too
    _, second = enrich(settings, now=FIXED_NOW, provider=provider, symbols=["AAPL"],
                       lookback_days=250)
    assert store.catalog.scalar("SELECT count(*) FROM restatements") == 0
    rebased = store.catalog.query(
        "SELECT records, error_message FROM compute_log WHERE run_id = ? "
        "AND status = 'rebased' ORDER BY records DESC", [second.run_id])
    # The re-fetched sessions arrived on the new basis (noticed before the upsert); the few
    # older ones the window missed were re-based by the engine's derive step.
    assert rebased["records"].sum() == held
    assert rebased["error_message"][0] == "re-fetched bars on a newer split basis"
    assert quality_view.symbol_restatements(store.catalog, "AAPL").is_empty()
    assert quality_view.symbol_rebases(store.catalog, "AAPL")["records"].sum() == held


# -- the pages ---------------------------------------------------------------------------------
@pytest.fixture
def app_env(monkeypatch, copy):
    from enrich.service import reset_services

    monkeypatch.setenv("ENRICH_DATA_DIR", str(copy.data_dir))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", FIXED_NOW.isoformat())
    monkeypatch.chdir(copy.data_dir.parent)
    yield copy
    reset_services()


def open_page(page: str, **query):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=60).run()
    at.switch_page(page)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame_with(at, column: str):
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert found, [list(d.value.columns) for d in at.dataframe]
    return found[0]


def test_pages_show_scores_failing_checks_and_restatements(app_env):
    from enrich.store.catalog import WriteBatch

    store = app_env
    bars = bars_of(store)
    put_bars(store, bars.filter(~pl.col("session").is_in(bars["session"][40:42].implode())))
    quality_run.audit(store, ["AAPL"], ["bars"])
    b = WriteBatch()
    b.insert("restatements", {"run_id": "r-test", "symbol": "AAPL", "dataset": "bars",
                              "session": bars["session"][10], "column_name": "close",
                              "old_value": 100.0, "new_value": 101.0, "change": 0.01,
                              "detected_at": FIXED_NOW})
    store.catalog.write(b)

    at = open_page("pages/symbols.py")
    table = frame_with(at, "quality")
    row = table[table["symbol"] == "AAPL"].iloc[0]
    # Quality is a chip with its words, coloured by threshold (tests/test_operator.py).
    assert list(row["quality"]) != ["100%"] and row["failing_checks"] == "bars/missing_sessions"
    assert list(table[table["symbol"] == "MSFT"].iloc[0]["quality"]) == ["100%"]
    assert any("late" in e.value and "stale" in e.value for e in at.markdown)  # the legend

    at = open_page("pages/symbols.py", symbol="AAPL")
    status = at.dataframe[0].value
    assert list(status[status["dataset"] == "bars"].iloc[0]["quality"]) != ["100%"]
    assert status["expected_session"].notna().all()
    failing = frame_with(at, "title")
    assert list(failing["check_name"]) == ["missing_sessions"]
    assert "2 sessions without a bar" in failing["detail"].iloc[0]
    rest = frame_with(at, "column_name")
    assert list(rest["column_name"]) == ["close"] and rest["new_value"].iloc[0] == 101.0

    at = open_page("pages/metrics.py")
    by_ds = frame_with(at, "mean_score")
    assert set(by_ds["dataset"]) >= {"bars", "news"}
    assert int(by_ds["failed_checks"].sum()) == 1
    assert any(ch.proto.id.endswith("quality_daily") for ch in at.get("plotly_chart"))
    by_check = frame_with(at, "last_failure")
    assert by_check.set_index("check_name").loc["missing_sessions", "failing"] == 1
