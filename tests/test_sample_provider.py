"""The sample provider: deterministic, calendar-true, split-consistent demo data."""

from __future__ import annotations

import datetime as dt
import math
import threading

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from enrich import calendars
from enrich.errors import NotFoundError, ProviderError, TransientError
from enrich.providers import OPTION_CONTRACTS, Provider
from enrich.providers.sample.provider import SampleProvider
from enrich.quant import rates
from enrich.quant.american import american_price
from enrich.schemas import BARS, DIVIDENDS, EARNINGS, NEWS, OPTIONS_IV, RATES, SPLITS
from enrich.symbols import DEMO_UNIVERSE

# Friday 2025-06-20 22:00 UTC: after that session's close (and Juneteenth on the 19th).
NOW = dt.datetime(2025, 6, 20, 22, 0, tzinfo=dt.UTC)
D = dt.date
PRICES = ["open", "high", "low", "close", "vwap"]


def clock():
    return NOW


@pytest.fixture
def sample() -> SampleProvider:
    return SampleProvider(clock=clock)


def test_is_a_demo_provider_with_the_protocol(sample):
    assert isinstance(sample, Provider)
    assert (sample.name, sample.is_demo, sample.rate_limited) == ("sample", True, False)
    probe = sample.probe()
    assert probe.ok and probe.status == "demo" and probe.latency_ms < 1
    assert "demo" in probe.message


def test_frames_are_in_the_lake_schemas(sample):
    frames = [
        (BARS, sample.bars("AAPL", "1d", D(2024, 1, 1), D(2024, 3, 1))),
        (BARS, sample.bars("AAPL", "1h", D(2024, 1, 1), D(2024, 1, 3))),
        (DIVIDENDS, sample.dividends("AAPL", D(2020, 1, 1), D(2025, 1, 1))),
        (SPLITS, sample.splits("AAPL", D(2000, 1, 1), D(2025, 1, 1))),
        (EARNINGS, sample.earnings("AAPL", D(2020, 1, 1), D(2025, 1, 1))),
        (NEWS, sample.news("AAPL", D(2025, 1, 1), D(2025, 2, 1))),
        (OPTIONS_IV, sample.option_chain("AAPL", D(2025, 6, 18))),
    ]
    for dataset, frame in frames:
        assert frame.schema == pl.Schema(dataset.schema), dataset.name
        assert frame.height > 0, dataset.name
        assert frame.select(dataset.key).is_duplicated().sum() == 0, dataset.name
    empty = sample.bars("AAPL", "1d", D(2024, 3, 2), D(2024, 3, 3))  # a weekend
    assert empty.schema == pl.Schema(BARS.schema) and empty.is_empty()


def test_same_request_same_rows_on_two_instances():
    a, b = SampleProvider(clock=clock), SampleProvider(clock=clock)
    for call in (
        lambda p: p.bars("MSFT", "1d", D(2010, 1, 1), D(2025, 6, 20)),
        lambda p: p.bars("MSFT", "5m", D(2025, 6, 2), D(2025, 6, 6)),
        lambda p: p.dividends("KO", D(2000, 1, 1), D(2025, 6, 20)),
        lambda p: p.earnings("KO", D(2000, 1, 1), D(2025, 6, 20)),
        lambda p: p.news("KO", D(2024, 1, 1), D(2025, 6, 20)),
        lambda p: p.option_chain("SPY", D(2025, 6, 18)),
    ):
        assert_frame_equal(call(a), call(b))


def test_known_values_are_pinned(sample):
    """Pins one close so a change of the model (which rewrites every lake) is deliberate."""
    bar = sample.bars("AAPL", "1d", D(2024, 1, 2), D(2024, 1, 2))
    assert bar["close"].item() == pytest.approx(185.6)  # the anchor on REF_DAY
    assert bar["ts"].item() == dt.datetime(2024, 1, 2, 5, 0, tzinfo=dt.UTC)


def test_a_later_request_extends_history_without_a_split():
    full = SampleProvider(clock=clock).bars("AAPL", "1d", D(2021, 1, 1), D(2023, 12, 31))
    p = SampleProvider(clock=clock)
    first = p.bars("AAPL", "1d", D(2021, 1, 1), D(2022, 5, 17))
    second = p.bars("AAPL", "1d", D(2022, 5, 18), D(2023, 12, 31))
    assert first["adjusted_asof"].unique().to_list() == [D(2022, 5, 17)]
    joined = pl.concat([first, second]).drop("adjusted_asof")
    assert_frame_equal(joined, full.drop("adjusted_asof"))


@pytest.mark.parametrize("symbol, split_day, ratio", [
    ("NVDA", D(2024, 6, 10), 10.0), ("TSLA", D(2022, 8, 25), 3.0), ("AAPL", D(2020, 8, 31), 4.0)])
def test_a_later_request_over_a_split_equals_the_first_piece_adjusted(symbol, split_day, ratio):
    p = SampleProvider(clock=clock)
    before_end = split_day - dt.timedelta(days=3)
    first = p.bars(symbol, "1d", D(2019, 1, 1), before_end)
    second = p.bars(symbol, "1d", before_end + dt.timedelta(days=1), D(2024, 12, 31))
    full = p.bars(symbol, "1d", D(2019, 1, 1), D(2024, 12, 31))
    adjusted = first.with_columns(
        [pl.col(c) / ratio for c in PRICES] + [pl.col("volume") * ratio])
    joined = pl.concat([adjusted, second]).drop("adjusted_asof")
    assert_frame_equal(joined, full.drop("adjusted_asof"), rel_tol=1e-12, abs_tol=0)
    # Unadjusted for the split, the first piece ends about ratio x higher than the second starts.
    assert first["close"][-1] / second["close"][0] == pytest.approx(ratio, rel=0.3)
    assert full["adjusted_asof"].unique().to_list() == [D(2024, 12, 31)]


def test_splits_are_real_where_known_and_cover_some_unknown_symbols(sample):
    nvda = sample.splits("NVDA", D(2000, 1, 1), D(2030, 1, 1))
    assert nvda.select("execution_date", "split_from", "split_to", "adjustment_type").rows() == [
        (D(2021, 7, 20), 1.0, 4.0, "forward_split"), (D(2024, 6, 10), 1.0, 10.0, "forward_split")]
    assert sample.splits("NVDA", D(2022, 1, 1), D(2024, 6, 9)).is_empty()
    assert sample.splits("MSFT", D(2000, 1, 1), D(2030, 1, 1)).is_empty()
    synthetic = [sample.splits(f"ZZ{i}", D(2000, 1, 1), D(2030, 1, 1)) for i in range(2000)]
    with_split = [f for f in synthetic if f.height]
    assert 20 <= len(with_split) <= 90  # about 1 in 40
    for f in with_split:
        day = f["execution_date"].item()
        assert calendars.is_session("XNYS", day) and day <= NOW.date()
        s_from, s_to = f["split_from"].item(), f["split_to"].item()
        assert f["adjustment_type"].item() == ("forward_split" if s_to > s_from
                                               else "reverse_split")


def test_xnys_sessions_holidays_and_half_days(sample):
    bars = sample.bars("SPY", "1d", D(2024, 1, 1), D(2024, 12, 31))
    sessions = bars["session"].to_list()
    assert sessions == calendars.sessions("XNYS", D(2024, 1, 1), D(2024, 12, 31))
    assert D(2024, 7, 4) not in sessions and D(2024, 11, 28) not in sessions
    assert D(2024, 11, 29) in sessions  # half-day
    assert all(d.weekday() < 5 for d in sessions)
    # ts is the session's midnight in New York, as a UTC instant (EST and EDT).
    ts = dict(zip(bars["session"], bars["ts"], strict=True))
    assert ts[D(2024, 1, 2)] == dt.datetime(2024, 1, 2, 5, tzinfo=dt.UTC)
    assert ts[D(2024, 7, 1)] == dt.datetime(2024, 7, 1, 4, tzinfo=dt.UTC)
    half = sample.bars("SPY", "5m", D(2024, 11, 29), D(2024, 11, 29))
    assert half.height == 42  # 09:30-13:00 ET
    assert half["ts"].max() == dt.datetime(2024, 11, 29, 17, 55, tzinfo=dt.UTC)
    full = sample.bars("SPY", "5m", D(2024, 11, 27), D(2024, 11, 27))
    assert full.height == 78
    assert full["ts"].min() == dt.datetime(2024, 11, 27, 14, 30, tzinfo=dt.UTC)


def test_crypto_trades_every_day(sample):
    bars = sample.bars("X:BTCUSD", "1d", D(2024, 1, 1), D(2024, 12, 31))
    assert bars.height == 366
    assert bars["ts"][0] == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert (bars["open"][1:] == bars["close"][:-1]).all()  # continuous trading
    assert sample.bars("X:BTCUSD", "1h", D(2024, 3, 10), D(2024, 3, 10)).height == 24


def test_ohlc_is_sane_for_every_demo_symbol_over_the_whole_history(sample):
    for info in DEMO_UNIVERSE:
        bars = sample.bars(info.symbol, "1d", D(2000, 1, 1), D(2025, 6, 20))
        assert bars.height > 6000, info.symbol
        bad = bars.filter(
            ~pl.all_horizontal([pl.col(c) > 0 for c in PRICES])
            | (pl.col("low") > pl.min_horizontal("open", "close", "vwap"))
            | (pl.col("high") < pl.max_horizontal("open", "close", "vwap"))
            | (pl.col("volume") < 0) | (pl.col("trades") < 0)
            | ~pl.all_horizontal([pl.col(c).is_finite() for c in PRICES]))
        assert bad.is_empty(), (info.symbol, bad.head())
        assert bars["ts"].is_sorted() and bars["ts"].n_unique() == bars.height
        daily = np.diff(np.log(bars["close"].to_numpy()))
        if info.symbol == "META":  # the ticker as traded: another security's until 2022
            daily = np.diff(np.log(bars.filter(pl.col("session") >= D(2022, 6, 9))["close"]
                                   .to_numpy()))
        assert np.abs(daily).max() < 0.5, info.symbol  # no jumps: split-adjusted
        assert 0.05 < daily.std() * math.sqrt(252) < 1.5, info.symbol


def test_etfs_are_calmer_than_crypto(sample):
    def vol(symbol):  # annualised over the symbol's own sessions
        close = sample.bars(symbol, "1d", D(2015, 1, 1), D(2025, 1, 1))["close"].to_numpy()
        return np.diff(np.log(close)).std() * math.sqrt(len(close) / 10)

    assert vol("SPY") < vol("TSLA") < vol("X:BTCUSD")


def test_half_days_trade_less(sample):
    bars = sample.bars("SPY", "1d", D(2010, 1, 1), D(2024, 12, 31))
    halves = [d for d in bars["session"] if d.month in (7, 11, 12) and d.day in (3, 24, 26)
              and calendars.session_close_utc("XNYS", d).hour < 19]
    half_volume = bars.filter(pl.col("session").is_in(halves))["volume"].mean()
    assert len(halves) > 10 and half_volume < 0.75 * bars["volume"].mean()


@pytest.mark.parametrize("timeframe", ["1h", "5m"])
def test_intraday_bars_add_up_to_the_daily_bar(sample, timeframe):
    days = (D(2024, 11, 27), D(2024, 11, 29))  # a full day and a half-day
    daily = sample.bars("NVDA", "1d", *days)
    intra = sample.bars("NVDA", timeframe, *days)
    assert (intra["timeframe"] == timeframe).all()
    assert intra["ts"].is_sorted() and intra["ts"].n_unique() == intra.height
    agg = intra.group_by("session").agg(
        pl.col("open").first(), pl.col("high").max(), pl.col("low").min(),
        pl.col("close").last(), pl.col("volume").sum(), pl.col("trades").sum(),
    ).sort("session")
    cols = ["session", "open", "high", "low", "close", "volume", "trades"]
    assert_frame_equal(agg.select(cols), daily.select(cols), check_dtypes=False)
    assert intra.select(
        (pl.col("low") <= pl.min_horizontal("open", "close", "vwap"))
        & (pl.col("high") >= pl.max_horizontal("open", "close", "vwap"))).to_series().all()


def test_no_bar_before_the_session_has_closed():
    before_close = SampleProvider(clock=lambda: dt.datetime(2024, 7, 5, 15, tzinfo=dt.UTC))
    bars = before_close.bars("AAPL", "1d", D(2024, 6, 1), D(2024, 12, 31))
    assert bars["session"].max() == D(2024, 7, 3)  # the 4th is a holiday, the 5th not closed
    assert bars["adjusted_asof"].unique().to_list() == [D(2024, 7, 3)]
    after_close = SampleProvider(clock=lambda: dt.datetime(2024, 7, 5, 21, tzinfo=dt.UTC))
    assert after_close.bars("AAPL", "1d", D(2024, 6, 1), D(2024, 12, 31))["session"].max() \
        == D(2024, 7, 5)
    assert before_close.bars("AAPL", "5m", D(2024, 7, 5), D(2024, 7, 5)).is_empty()
    assert before_close.bars("AAPL", "1d", D(2024, 8, 1), D(2024, 8, 31)).is_empty()


def test_dividends_are_quarterly_and_inside_the_range(sample):
    div = sample.dividends("JNJ", D(2010, 1, 1), D(2024, 12, 31))
    assert div.height == 60  # 15 years x 4
    assert div["ex_date"].min() >= D(2010, 1, 1) and div["ex_date"].max() <= D(2024, 12, 31)
    gaps = div["ex_date"].diff().dt.total_days().drop_nulls()
    assert gaps.min() >= 80 and gaps.max() <= 100
    assert (div["declaration_date"] < div["ex_date"]).all()
    assert (div["record_date"] >= div["ex_date"]).all()
    assert (div["pay_date"] > div["record_date"]).all()
    assert (div["cash_amount"] > 0).all() and (div["currency"] == "USD").all()
    assert (div["frequency"] == 4).all() and (div["distribution_type"] == "recurring").all()
    assert all(calendars.is_session("XNYS", d) for d in div["ex_date"])
    for symbol in ("TSLA", "AMZN", "BRK.B", "NFLX", "X:BTCUSD", "GLD"):
        assert sample.dividends(symbol, D(2000, 1, 1), D(2025, 6, 20)).is_empty(), symbol
    assert sample.dividends("GOOGL", D(2000, 1, 1), D(2024, 1, 1)).is_empty()
    assert sample.dividends("GOOGL", D(2024, 1, 1), D(2025, 6, 20)).height >= 3


def test_dividends_are_declared_per_then_current_share(sample):
    div = sample.dividends("AAPL", D(2019, 1, 1), D(2021, 12, 31))
    before = div.filter(pl.col("ex_date") < D(2020, 8, 31))["cash_amount"]
    after = div.filter(pl.col("ex_date") > D(2020, 8, 31))["cash_amount"]
    assert before[-1] / after[0] == pytest.approx(4, rel=0.1)  # the 4:1 split
    # Yield about the profile's 0.5 %: four dividends over a close of the year.
    close = sample.bars("AAPL", "1d", D(2021, 12, 31), D(2021, 12, 31))["close"].item()
    yearly = div.filter(pl.col("ex_date").dt.year() == 2021)["cash_amount"].sum()
    assert 0.001 < yearly / close < 0.02


def test_nothing_is_returned_before_it_is_known():
    p = SampleProvider(clock=lambda: dt.datetime(2022, 1, 10, 22, tzinfo=dt.UTC))
    late = D(2030, 1, 1)
    assert p.dividends("KO", D(2021, 1, 1), late)["declaration_date"].max() <= D(2022, 1, 10)
    assert p.earnings("KO", D(2021, 1, 1), late)["filing_date"].max() <= D(2022, 1, 10)
    assert p.splits("NVDA", D(2000, 1, 1), late).height == 1
    news = p.news("KO", D(2022, 1, 1), late)
    assert news["published_utc"].max() <= dt.datetime(2022, 1, 10, 22, tzinfo=dt.UTC)


def test_earnings_quarters_are_ordered(sample):
    e = sample.earnings("AAPL", D(2015, 1, 1), D(2024, 12, 31))
    assert e.height == 40
    assert e["filing_date"].is_between(D(2015, 1, 1), D(2024, 12, 31)).all()
    assert e["period_end"].is_sorted() and e["filing_date"].is_sorted()
    quarters = (e["fiscal_year"] * 4 + e["fiscal_quarter"]).to_numpy()
    assert (np.diff(quarters) == 1).all()
    assert set(e["fiscal_quarter"]) == {1, 2, 3, 4}
    # Apple's fiscal year ends in September: Q4 of FY2024 ends 2024-09-30.
    q4 = e.filter((pl.col("fiscal_year") == 2024) & (pl.col("fiscal_quarter") == 4))
    assert q4["period_end"].item() == D(2024, 9, 30)
    lag = (e["filing_date"] - e["period_end"]).dt.total_days()
    assert lag.min() >= 25 and lag.max() <= 50
    assert (e["eps_basic"] >= e["eps_diluted"]).all() and (e["revenue"] > 0).all()
    first, last = e["revenue"].head(4).sum(), e["revenue"].tail(4).sum()
    assert last > first  # growing
    for symbol in ("SPY", "X:BTCUSD", "GLD"):
        assert sample.earnings(symbol, D(2000, 1, 1), D(2025, 6, 20)).is_empty()


def test_event_windows_are_exactly_the_matching_rows(sample):
    """Dividends and earnings answer a window by working out only its quarters (their dates
    rise with the quarter); that must keep exactly the rows a filter of the whole history
    would."""
    windows = [(D(2010, 2, 3), D(2012, 5, 17)), (D(2024, 12, 31), D(2025, 1, 2)),
               (D(2023, 3, 1), D(2030, 1, 1)), (D(2020, 1, 1), D(2019, 1, 1))]
    for symbol in ["AAPL", "KO", "JNJ", "SPY", "GOOGL"] + [f"EVT{i}" for i in range(40)]:
        divs = sample.dividends(symbol, D(1990, 1, 1), D(2040, 1, 1))
        earns = sample.earnings(symbol, D(1990, 1, 1), D(2040, 1, 1))
        for dates in (divs["ex_date"], divs["declaration_date"], earns["filing_date"]):
            assert (dates.diff().dt.total_days().drop_nulls() > 0).all(), symbol
        for a, b in windows:
            assert_frame_equal(sample.dividends(symbol, a, b),
                               divs.filter(pl.col("ex_date").is_between(a, b)))
            assert_frame_equal(sample.earnings(symbol, a, b),
                               earns.filter(pl.col("filing_date").is_between(a, b)))


def test_several_news_items_a_week(sample):
    news = sample.news("TSLA", D(2024, 1, 1), D(2024, 12, 29))  # Monday to Sunday
    per_week = news.group_by(pl.col("published_utc").dt.truncate("1w")).len()["len"]
    assert per_week.len() == 52 and per_week.min() >= 2 and per_week.max() <= 5
    assert news["published_utc"].dt.date().is_between(D(2024, 1, 1), D(2024, 12, 29)).all()
    assert news["published_utc"].is_sorted() and news["id"].n_unique() == news.height
    assert news["url"].str.starts_with("https://example.com/demo-news/").all()
    assert (news["url"].str.split("/").list.last() == news["id"]).all()
    assert news["title"].str.contains("TSLA|Tesla").all()
    assert set(news["sentiment"]) <= {"positive", "neutral", "negative"}
    assert news["sentiment_reasoning"].str.len_chars().min() > 10
    # A day's items are out before that day's close, even on a half-day: a fetch after the
    # close has them all.
    for row in news.filter(pl.col("published_utc").dt.date().is_in(
            calendars.sessions("XNYS", D(2024, 1, 1), D(2024, 12, 31)))).iter_rows(named=True):
        assert row["published_utc"] < calendars.session_close_utc(
            "XNYS", row["published_utc"].date())
    # A sub-range returns the same items with the same ids.
    part = sample.news("TSLA", D(2024, 3, 1), D(2024, 3, 31))
    assert_frame_equal(part, news.filter(
        pl.col("published_utc").dt.date().is_between(D(2024, 3, 1), D(2024, 3, 31))))


def test_news_sentiment_follows_the_days_move(sample):
    news = sample.news("NVDA", D(2015, 1, 1), D(2024, 12, 31)).with_columns(
        session=pl.col("published_utc").dt.convert_time_zone("America/New_York").dt.date())
    bars = sample.bars("NVDA", "1d", D(2015, 1, 1), D(2024, 12, 31)).with_columns(
        ret=pl.col("close").log().diff())
    joined = news.join(bars.select("session", "ret"), on="session").drop_nulls("ret")
    mean = joined.group_by("sentiment").agg(pl.col("ret").mean())
    by = dict(mean.iter_rows())
    assert by["positive"] > by["neutral"] > by["negative"]


def test_option_chain_quotes_american_prices_of_the_model(sample):
    as_of = D(2025, 6, 18)
    chain = sample.option_chain("AAPL", as_of)
    spot = sample.bars("AAPL", "1d", as_of, as_of)["close"].item()
    assert (chain["underlying_price"] == spot).all()
    assert (chain["symbol"] == "AAPL").all() and (chain["as_of"] == as_of).all()
    exps = chain["expiration"].unique().sort().to_list()
    assert 5 <= len(exps) <= 8 and exps[0] > as_of
    assert all(calendars.is_session("XNYS", e) for e in exps)
    assert D(2025, 7, 3) in exps  # Friday the 4th is a holiday: Thursday expiry
    strikes = chain["strike"].unique().sort().to_numpy()
    assert 15 <= len(strikes) <= 25
    assert strikes.min() < 0.8 * spot and strikes.max() > 1.2 * spot
    assert chain["contract"][0].startswith("O:AAPL")
    assert (chain["open_interest"] >= 0).all()
    # The closing snapshot: terms, quotes on a cent grid, IV left to enrich.quant.snapshots.
    close = calendars.session_close_utc("XNYS", as_of)
    assert (chain["snapshot_at"] == close).all() and (chain["quote_at"] < close).all()
    assert set(chain["exercise_style"]) == {"american"}
    assert set(chain["shares_per_contract"]) == {100.0}
    assert chain["iv"].is_null().all() and chain["delta"].is_null().all()
    bid, ask = chain["bid"].to_numpy(), chain["ask"].to_numpy()
    assert ((bid >= 0) & (ask > bid)).all()
    assert np.allclose(np.round(bid * 100), bid * 100) and np.allclose(np.round(ask * 100),
                                                                         ask * 100)
    # The quotes straddle the American price at the model IV, the demo curve's rate to each
    # expiry (as enrich.quant.rates reads it) and the profile's dividend yield.
    t = ((chain["expiration"] - chain["as_of"]).dt.total_days() / 365).to_numpy()
    r, source = rates.rate_to(sample.treasury_yields(as_of, as_of), chain["as_of"], t, 0.04)
    assert set(source) == {"treasury"}
    model = american_price(spot, chain["strike"].to_numpy(), t, r, 0.005,
                           chain["provider_iv"].to_numpy(),
                           (chain["contract_type"] == "call").to_numpy())
    assert ((bid <= model + 1e-9) & (model <= ask + 1e-9)).all()
    traded = chain.filter(pl.col("trade_price").is_not_null())
    assert traded.height > 0.5 * chain.height
    assert ((traded["trade_price"] >= traded["bid"]) & (traded["trade_price"] <= traded["ask"])
            & (traded["trade_at"] < close) & (traded["volume"] > 0)).all()


def test_option_chain_during_the_session_is_priced_at_the_clock(sample):
    as_of = D(2025, 6, 20)
    noon = dt.datetime(2025, 6, 20, 16, 7, tzinfo=dt.UTC)  # 12:07 in New York
    live = SampleProvider(clock=lambda: noon)
    chain = live.option_chain("AAPL", as_of)
    assert (chain["snapshot_at"] == noon).all()
    five = sample.bars("AAPL", "5m", as_of, as_of)  # the day's bars, known after its close
    last = five.filter(pl.col("ts") + dt.timedelta(minutes=5) <= noon)["close"][-1]
    assert (chain["underlying_price"] == last).all()
    closing = sample.option_chain("AAPL", as_of)  # the clock is past that close
    assert (closing["underlying_price"] != last).all()
    assert closing["volume"].sum() > chain["volume"].sum()  # the day is not over at noon
    assert live.option_chain("AAPL", D(2025, 6, 23)).is_empty()  # not begun at the clock


def test_option_chain_has_a_skew(sample):
    as_of = D(2025, 6, 18)
    chain = sample.option_chain("MSFT", as_of).filter(pl.col("contract_type") == "put")
    spot = chain["underlying_price"][0]
    for (exp,), g in chain.group_by("expiration"):
        atm = g.sort((pl.col("strike") - spot).abs())["provider_iv"][0]
        otm = g.filter(pl.col("strike") < 0.9 * spot)["provider_iv"]
        assert (otm > atm).all(), exp
    near = chain.filter(pl.col("expiration") == chain["expiration"].min())
    far = chain.filter(pl.col("expiration") == chain["expiration"].max())
    atm_near = near.sort((pl.col("strike") - spot).abs())["provider_iv"][0]
    atm_far = far.sort((pl.col("strike") - spot).abs())["provider_iv"][0]
    assert atm_near < atm_far  # mild upward term structure


def test_treasury_curve_is_deterministic_and_realistic(sample):
    curve = sample.treasury_yields(D(2000, 1, 1), D(2030, 1, 1))
    assert curve.schema == pl.Schema(RATES.schema)
    assert curve["date"].max() == NOW.date()  # known through the latest completed session
    assert curve["date"].to_list() == calendars.sessions("XNYS", D(2000, 1, 3), NOW.date())
    assert_frame_equal(curve.filter(pl.col("date").dt.year() == 2021),
                       sample.treasury_yields(D(2021, 1, 1), D(2021, 12, 31)))
    by_year = curve.group_by(pl.col("date").dt.year().alias("y")).agg(
        pl.col("yield_3_month").mean()).sort("y")
    mean = dict(by_year.iter_rows())
    assert mean[2021] < 0.3 and mean[2024] > 4.5  # near zero, then above 4.5 %
    assert curve.select(pl.all().exclude("symbol", "date").is_null().sum()).row(0) == \
        (0,) * 11


def test_option_chain_is_empty_when_there_is_nothing_to_show(sample):
    assert sample.option_chain("X:BTCUSD", D(2025, 6, 18)).is_empty()
    assert sample.option_chain("AAPL", D(2025, 6, 21)).is_empty()  # a Saturday
    assert sample.option_chain("AAPL", D(2025, 6, 23)).is_empty()  # after the clock
    assert sample.option_chain("AAPL", D(2025, 6, 19)).is_empty()  # Juneteenth
    assert sample.option_chain("BRK.B", D(2025, 6, 18))["contract"][0].startswith("O:BRKB")


def test_option_contracts_and_bars_follow_the_same_model(sample):
    as_of = D(2025, 6, 18)
    chain = sample.option_chain("QQQ", as_of)
    contracts = sample.option_contracts("QQQ", as_of)
    assert contracts.columns == OPTION_CONTRACTS.columns
    assert_frame_equal(contracts, chain.select(contracts.columns))
    narrow = sample.option_contracts("QQQ", as_of, strikes=(340.0, 360.0),
                                     expirations=(as_of, D(2025, 7, 31)))
    assert narrow["strike"].is_between(340, 360).all() and narrow.height > 0
    assert narrow["expiration"].max() <= D(2025, 7, 31)
    near = chain.filter(pl.col("expiration") == chain["expiration"].max())
    row = near.sort((pl.col("strike") - pl.col("underlying_price")).abs()).row(0, named=True)
    bars = sample.option_bars(row["contract"], D(2025, 1, 1), D(2025, 12, 31))
    assert bars.schema == pl.Schema(BARS.schema) and (bars["symbol"] == row["contract"]).all()
    assert bars["session"].min() < as_of and bars["session"].max() == NOW.date()
    assert bars["session"].is_in(calendars.sessions("XNYS", D(2025, 1, 1), NOW.date())).all()
    on_day = bars.filter(pl.col("session") == as_of)
    assert row["bid"] <= on_day["close"].item() <= row["ask"]  # the closing quote's model
    assert bars.select(
        (pl.col("low") <= pl.min_horizontal("open", "close", "vwap"))
        & (pl.col("high") >= pl.max_horizontal("open", "close", "vwap"))).to_series().all()
    # After expiry nothing more; the expiry day is priced at intrinsic value.
    expired = sample.option_bars(row["contract"].replace("O:", ""), D(2025, 1, 1), D(2026, 1, 1))
    assert expired["session"].max() <= row["expiration"]
    with pytest.raises(NotFoundError):
        sample.option_bars("O:NOPE", D(2025, 1, 1), D(2025, 2, 1))


def test_option_bars_of_an_expired_contract_end_at_expiry(sample):
    listed = sample.option_contracts("SPY", D(2025, 1, 17))
    expiry = D(2025, 3, 21)
    assert expiry in listed["expiration"]  # the March monthly, two months ahead
    spot = sample.bars("SPY", "1d", D(2025, 1, 17), D(2025, 1, 17))["close"].item()
    pair = listed.filter(pl.col("expiration") == expiry).sort(
        (pl.col("strike") - spot).abs()).head(2)  # the call and the put nearest the money
    assert set(pair["contract_type"]) == {"call", "put"}
    bars = [sample.option_bars(c, D(2024, 1, 1), D(2025, 6, 20)) for c in pair["contract"]]
    assert max(b["session"].max() for b in bars) == expiry  # the one in the money at expiry
    assert all(b["session"].max() <= expiry for b in bars)
    assert all(b["session"].min() >= D(2024, 12, 1) for b in bars)  # listed ~3 months ahead
    last = max(bars, key=lambda b: b["session"].max()).row(-1, named=True)
    close = sample.bars("SPY", "1d", expiry, expiry)["close"].item()
    assert last["close"] == pytest.approx(abs(close - pair["strike"][0]))  # intrinsic value


def test_failures_are_injected_at_about_the_rate_and_deterministically():
    def outcomes(p: SampleProvider) -> list[bool]:
        out = []
        for i in range(2000):
            try:
                p.splits(f"S{i % 50}", D(2020, 1, 1), D(2020, 2, 1))
                out.append(False)
            except TransientError as exc:
                assert exc.retryable and exc.provider == "sample" and exc.endpoint == "splits"
                out.append(True)
        return out

    a = outcomes(SampleProvider(failure_rate=0.3, clock=clock, seed=1))
    b = outcomes(SampleProvider(failure_rate=0.3, clock=clock, seed=1))
    c = outcomes(SampleProvider(failure_rate=0.3, clock=clock, seed=2))
    assert a == b and a != c
    assert 0.25 < sum(a) / len(a) < 0.35
    assert not any(outcomes(SampleProvider(clock=clock)))


def test_retries_eventually_succeed():
    p = SampleProvider(failure_rate=0.5, clock=clock, seed=3)
    for symbol in ("AAPL", "SPY", "X:BTCUSD"):
        for _attempt in range(60):
            try:
                bars = p.bars(symbol, "1d", D(2025, 1, 1), D(2025, 2, 1))
                break
            except TransientError:
                continue
        else:
            pytest.fail("never succeeded")
        assert bars.height > 0


def test_request_counts_are_per_thread_and_reset_on_take(sample):
    sample.bars("AAPL", "1d", D(2025, 1, 1), D(2025, 2, 1))
    sample.news("AAPL", D(2025, 1, 1), D(2025, 2, 1))
    sample.option_chain("AAPL", D(2025, 6, 18))
    seen = {}

    def other():
        sample.splits("AAPL", D(2000, 1, 1), D(2025, 1, 1))
        seen["other"] = sample.take_request_count()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen["other"] == 1
    assert sample.take_request_count() == 3
    assert sample.take_request_count() == 0
    failing = SampleProvider(failure_rate=1.0, clock=clock)
    with pytest.raises(TransientError):
        failing.dividends("KO", D(2020, 1, 1), D(2021, 1, 1))
    assert failing.take_request_count() == 1  # a failed request is still a request


def test_threads_share_the_caches_safely():
    symbols = [f"THR{i}" for i in range(6)]  # fresh symbols: the caches start cold
    p = SampleProvider(clock=clock)

    def fetch(order):
        return {s: (p.bars(s, "1d", D(2015, 1, 1), D(2025, 6, 20)), p.news(s, D(2025, 1, 1),
                D(2025, 6, 20)), p.option_chain(s, D(2025, 6, 18))) for s in order}

    results = [None] * 8
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, fetch(symbols[i % 6:] + symbols[:i % 6]))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    serial = fetch(symbols)
    for result in results:
        for s in symbols:
            for got, want in zip(result[s], serial[s], strict=True):
                assert_frame_equal(got, want)


def test_bad_input_gets_a_typed_error(sample):
    with pytest.raises(NotFoundError, match="invalid symbol"):
        sample.bars("NOT A SYMBOL", "1d", D(2025, 1, 1), D(2025, 2, 1))
    with pytest.raises(ProviderError, match="timeframe"):
        sample.bars("AAPL", "1w", D(2025, 1, 1), D(2025, 2, 1))
    with pytest.raises(ValueError):
        SampleProvider(failure_rate=1.5)
    # Tickers are case-sensitive (KIMpL is not KIMPL): spaces go, case stays.
    lower = sample.bars(" aapl ", "1d", D(2025, 1, 2), D(2025, 1, 3))
    assert (lower["symbol"] == "aapl").all()


def test_grouped_daily_rows_are_the_range_bars_of_those_sessions(sample):
    """A universe-wide bars request computes only its sessions' rows; they must be the rows
    the per-symbol range gives for them (also for a ticker whose security changed, META,
    and one traded as another's, FB)."""
    from enrich.providers import MarketRequest

    start, end = D(2022, 4, 25), D(2022, 6, 17)
    held = calendars.sessions("XNYS", start, end)
    for sessions in ((held[0], held[3], held[-1]), tuple(held), (held[5],)):
        symbols = frozenset({"AAPL", "NVDA", "META", "FB", "SPY", "S0042"})
        rows = sample.market_rows(MarketRequest("bars", "stocks", start, end, symbols,
                                                sessions))
        for symbol in sorted(symbols):
            whole = sample.bars(symbol, "1d", start, end)
            assert_frame_equal(rows.for_symbol(symbol),
                               whole.filter(pl.col("session").is_in(list(sessions))))


def test_option_chain_rows_are_a_call_and_a_put_per_expiration_and_strike(sample):
    chain = sample.option_chain("MSFT", D(2025, 6, 18))
    letter = chain["contract"].str.slice(-9, 1)
    assert ((letter == "C") == (chain["contract_type"] == "call")).all()
    assert chain["contract_type"].to_list() == ["call", "put"] * (chain.height // 2)
    pairs = chain.select("expiration", "strike").unique()
    assert pairs.height * 2 == chain.height
    assert chain.select("expiration", "strike").equals(
        chain.sort("expiration", "strike", maintain_order=True).select("expiration", "strike"))
