"""Engine acceptance: end-to-end runs on the sample provider in a tmp data dir."""

from __future__ import annotations

import datetime as dt
import threading
import time

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from enrich.errors import NotFoundError, TransientError
from enrich.pipeline import engine as engine_mod
from enrich.pipeline.engine import Engine
from enrich.pipeline.requests import request_cancel
from enrich.pipeline.run_model import RunParams
from enrich.providers.retry import RetryPolicy
from enrich.providers.sample.provider import SampleProvider
from enrich.schemas import DATASETS
from enrich.store.catalog import utcnow
from enrich.store.store import Store
from enrich.store.universe import add_symbols, ensure_demo_universe

UTC = dt.UTC
SYMS = ["AAPL", "SPY", "X:BTCUSD", "NVDA"]


def make_engine(settings, now, provider=None, **kw):
    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    clock = (lambda: now) if isinstance(now, dt.datetime) else now
    provider = provider or SampleProvider(clock=clock)
    return Engine(store, provider, settings, clock=clock, **kw)


def lake_snapshot(store: Store) -> dict[str, pl.DataFrame]:
    return {name: store.lake.read(name) for name in DATASETS}


def test_first_run_fills_every_dataset_and_catalog_answers(settings, fixed_clock):
    eng = make_engine(settings.with_(history_years=3), fixed_clock())  # NVDA split 2024
    summary = eng.run(RunParams(symbols=SYMS))
    assert summary.state == "succeeded" and summary.ok == 4 and summary.failed == 0
    cat = eng.store.catalog
    counts = {d: cat.scalar(f"SELECT count(*) FROM {d}") for d in DATASETS}
    assert all(counts[d] > 0 for d in DATASETS), counts
    # Views agree with the lake, the run and its tasks are recorded.
    assert counts["bars"] == eng.store.lake.read("bars").height
    assert cat.scalar("SELECT count(*) FROM tasks WHERE run_id = ?", [summary.run_id]) == 4
    assert cat.scalar("SELECT state FROM runs WHERE run_id = ?", [summary.run_id]) == "succeeded"
    # crypto has bars on weekends; stocks do not
    btc = eng.store.lake.read("bars", ["X:BTCUSD"])
    assert (btc["session"].dt.weekday() >= 6).any()
    aapl = eng.store.lake.read("bars", ["AAPL"])
    assert not (aapl["session"].dt.weekday() >= 6).any()
    assert dt.date(2026, 7, 3) not in aapl["session"].to_list()  # Independence Day observed
    # Freshness: all fresh right after the run.
    states = cat.query("SELECT DISTINCT sessions_behind FROM symbol_status")
    assert states["sessions_behind"].to_list() == [0]


def test_second_run_changes_no_row_and_says_nothing_new(settings, fixed_clock):
    eng = make_engine(settings.with_(history_years=1), fixed_clock())
    eng.run(RunParams(symbols=SYMS))
    before = lake_snapshot(eng.store)
    mtimes = {p: p.stat().st_mtime_ns for p in eng.store.lake.root.rglob("*.parquet")}
    second = eng.run(RunParams(symbols=SYMS))
    assert second.records == 0 and second.skipped == 4 and second.state == "succeeded"
    assert "nothing new" in eng.store.catalog.scalar(
        "SELECT message FROM runs WHERE run_id = ?", [second.run_id])
    statuses = eng.store.catalog.query(
        "SELECT DISTINCT status FROM fetch_log WHERE run_id = ?", [second.run_id])
    assert statuses["status"].to_list() == ["up_to_date"]
    after = lake_snapshot(eng.store)
    for name in DATASETS:
        assert_frame_equal(before[name], after[name])
    assert {p: p.stat().st_mtime_ns for p in eng.store.lake.root.rglob("*.parquet")} == mtimes


def test_incremental_runs_equal_one_full_run_across_a_split(tmp_path, settings):
    """NVDA split 10:1 on 2024-06-10: stored bars are re-derived onto the new basis."""
    early = dt.datetime(2024, 6, 3, 22, tzinfo=UTC)
    late = dt.datetime(2024, 7, 1, 22, tzinfo=UTC)
    s1 = settings.with_(history_years=1)
    now = {"t": early}
    eng = make_engine(s1, lambda: now["t"])
    eng.run(RunParams(symbols=["NVDA"]))
    first_close = eng.store.lake.read("bars", ["NVDA"])["close"][-1]
    now["t"] = late
    eng.run(RunParams(symbols=["NVDA"]))
    inc_bars = eng.store.lake.read("bars", ["NVDA"])
    inc_feat = eng.store.lake.read("features", ["NVDA"])

    s2 = s1.with_(data_dir=tmp_path / "full")
    full = make_engine(s2, late)
    # Same first-fetch window start as the incremental store.
    full.run(RunParams(symbols=["NVDA"], lookback_days=(late.date() - inc_bars["session"][0]).days
                       - 0))
    full_bars = full.store.lake.read("bars", ["NVDA"]).filter(
        pl.col("session") >= inc_bars["session"][0])
    assert inc_bars.height == full_bars.height
    # the pre-split close fell by the split ratio
    assert inc_bars.filter(pl.col("session") == dt.date(2024, 6, 3))["close"][0] == \
        pytest.approx(first_close / 10, rel=1e-12)
    assert_frame_equal(inc_bars.drop("adjusted_asof"), full_bars.drop("adjusted_asof"),
                       rel_tol=1e-9, abs_tol=0)
    full_feat = full.store.lake.read("features", ["NVDA"])
    assert_frame_equal(inc_feat.select("session", "ma20", "log_return"),
                       full_feat.filter(pl.col("session") >= inc_bars["session"][0])
                       .select("session", "ma20", "log_return"), rel_tol=1e-9, abs_tol=1e-12)
    # no log return across the split date looks like a crash
    assert inc_feat["log_return"].drop_nulls().abs().max() < 0.5


class FailingFor:
    """Wraps a provider and fails chosen symbols' bars with a non-retryable error."""

    def __init__(self, inner, symbols):
        self.inner, self.symbols = inner, set(symbols)
        self.name, self.is_demo, self.rate_limited = inner.name, True, False

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def bars(self, symbol, *a, **k):
        if symbol in self.symbols:
            raise NotFoundError(f"unknown symbol {symbol}", provider="test", endpoint="bars",
                                status=404)
        return self.inner.bars(symbol, *a, **k)


def test_one_symbols_failure_never_stops_the_others(settings, fixed_clock):
    inner = SampleProvider(clock=fixed_clock)
    eng = make_engine(settings.with_(history_years=1), fixed_clock(),
                      provider=FailingFor(inner, {"SPY"}))
    summary = eng.run(RunParams(symbols=SYMS))
    assert summary.state == "partial" and summary.failed_symbols == ["SPY"]
    assert summary.ok == 3 and summary.errors_by_class == {"not_found": 1}
    row = eng.store.catalog.query(
        "SELECT consecutive_failures, last_error_class, last_error_message FROM symbol_status "
        "WHERE symbol = 'SPY' AND dataset = 'bars'").row(0)
    assert row[0] == 1 and row[1] == "not_found" and "SPY" in row[2]
    task = eng.store.catalog.query(
        "SELECT state, error_class FROM tasks WHERE run_id = ? AND symbol = 'SPY'",
        [summary.run_id]).row(0)
    assert task == ("failed", "not_found")
    assert eng.store.lake.read("bars", ["AAPL"]).height > 0


def test_transient_failures_are_retried_and_logged(settings, fixed_clock):
    # The provider retries each request under its policy (here without sleeping).
    provider = SampleProvider(clock=fixed_clock, failure_rate=0.3, seed=7,
                              retry=RetryPolicy(max_retries=8, sleep=lambda s: None))
    eng = make_engine(settings.with_(history_years=1, max_retries=8), fixed_clock(),
                      provider=provider)
    summary = eng.run(RunParams(symbols=SYMS))
    assert summary.failed == 0 and summary.retries > 0
    retried = eng.store.catalog.query(
        "SELECT count(*) AS n, min(error_class) AS c FROM fetch_log "
        "WHERE run_id = ? AND status = 'retried'", [summary.run_id]).row(0)
    assert retried == (summary.retries, "transient")
    assert eng.store.catalog.scalar(
        "SELECT max(attempt) FROM fetch_log WHERE run_id = ? AND status = 'ok'",
        [summary.run_id]) > 1


class FlakyReference(SampleProvider):
    """The ticker reference of AAPL fails once (503), then answers: deterministic, unlike
    ``failure_rate``, whose draws follow the order the run's threads ask in."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.failed = False

    def ticker_reference(self, symbol):
        def fault():
            if symbol == "AAPL" and not self.failed:
                self.failed = True
                raise TransientError("reference unavailable", provider=self.name,
                                     endpoint="ticker_reference", status=503)
        self.request("ticker_reference_check", symbol, fault)
        return super().ticker_reference(symbol)


def test_a_retried_reference_request_is_logged_like_a_datasets(settings, fixed_clock):
    provider = FlakyReference(clock=fixed_clock,
                              retry=RetryPolicy(max_retries=2, sleep=lambda s: None))
    eng = make_engine(settings.with_(history_years=1), fixed_clock(), provider=provider)
    summary = eng.run(RunParams(symbols=SYMS))
    assert summary.failed == 0 and provider.failed
    rows = eng.store.catalog.query(
        "SELECT symbol, dataset, error_class FROM fetch_log "
        "WHERE run_id = ? AND status = 'retried'", [summary.run_id])
    assert rows.rows() == [("AAPL", "reference", "transient")]
    assert summary.retries == rows.height


def test_unknown_symbol_is_refused_with_a_hint(settings, fixed_clock):
    eng = make_engine(settings, fixed_clock())
    with pytest.raises(Exception, match="symbols add ZZZZ"):
        eng.run(RunParams(symbols=["ZZZZ"]))
    add_symbols(eng.store.catalog, [("ZZZZ", "stocks", None)])
    assert eng.resolve_symbols(RunParams(symbols=["zzzz"])) == [("ZZZZ", "stocks")]


def test_asset_class_decides_datasets(settings, fixed_clock):
    eng = make_engine(settings.with_(history_years=1), fixed_clock())
    summary = eng.run(RunParams(asset_class="crypto"))
    assert sorted(r.symbol for r in summary.results) == ["X:BTCUSD", "X:ETHUSD"]
    fetched = set(eng.store.catalog.query(
        "SELECT DISTINCT dataset FROM fetch_log WHERE run_id = ?",
        [summary.run_id])["dataset"])
    assert fetched == {"bars", "news", "reference"}  # and each one's ticker reference, once


class Unpublished:
    """The provider has not published the latest session's bar yet."""

    def __init__(self, inner, hide):
        self.inner, self.hide = inner, hide
        self.name, self.is_demo, self.rate_limited = inner.name, True, False

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def bars(self, symbol, timeframe, start, end):
        return self.inner.bars(symbol, timeframe, start, min(end, self.hide - dt.timedelta(1)))


def test_an_unpublished_session_is_asked_for_again(settings, fixed_clock):
    last = dt.date(2026, 11, 25)
    inner = SampleProvider(clock=fixed_clock)
    eng = make_engine(settings.with_(history_years=1), fixed_clock(),
                      provider=Unpublished(inner, last))
    eng.run(RunParams(symbols=["AAPL"], datasets=["bars"]))
    assert eng.store.lake.read("bars", ["AAPL"])["session"].max() == dt.date(2026, 11, 24)
    assert eng.store.lake.read_coverage("AAPL")["bars:1d"] == dt.date(2026, 11, 24)
    behind = eng.store.catalog.scalar(
        "SELECT sessions_behind FROM symbol_status WHERE symbol = 'AAPL' AND dataset = 'bars'")
    assert behind == 1
    eng.provider = inner  # now it is published
    again = eng.run(RunParams(symbols=["AAPL"], datasets=["bars"]))
    assert again.records > 0
    assert eng.store.lake.read("bars", ["AAPL"])["session"].max() == last


def test_a_cancel_asked_through_the_catalog_stops_the_run(settings, fixed_clock, monkeypatch):
    """Another process cancels by writing to the catalog; the run's flusher reads it back."""
    monkeypatch.setattr(engine_mod, "FLUSH_INTERVAL_S", 0.05)
    eng = make_engine(settings.with_(history_years=1), fixed_clock())
    params = RunParams(symbols=SYMS)
    run_id = eng.create_run(params, "manual")
    cancel, out = threading.Event(), []
    lock = eng.store.lake.symbol_lock("AAPL")
    lock.acquire()  # the run waits on AAPL, so it is still running when the cancel comes
    try:
        t = threading.Thread(target=lambda: out.append(
            eng.run(params, run_id=run_id, cancel=cancel, max_workers=1)))
        t.start()
        deadline = time.monotonic() + 120
        while eng.store.catalog.scalar("SELECT state FROM runs WHERE run_id = ?",
                                       [run_id]) != "running":
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.02)
        assert request_cancel(eng.store.catalog, run_id, "test", utcnow()) == "running"
        assert cancel.wait(120), "the run never read the cancel from the catalog"
    finally:
        lock.release()
    t.join(120)
    assert out and out[0].state == "cancelled" and out[0].ok == 0


def test_a_cancel_after_the_last_symbol_leaves_the_run_as_it_ended(settings, fixed_clock):
    """A cancel that comes once every symbol is done stopped nothing: the run is recorded as
    it ran, not as cancelled ("cancelled after 2 of 2 symbols" would be a wrong state)."""
    eng = make_engine(settings.with_(history_years=1), fixed_clock())
    cancel = threading.Event()

    def progress(n: int, total: int, res) -> None:
        if n == total:  # after the last symbol's result, before the run's final state
            cancel.set()

    summary = eng.run(RunParams(symbols=["AAPL", "NVDA"]), cancel=cancel, progress=progress,
                      max_workers=1)
    assert cancel.is_set()
    assert (summary.state, summary.ok, summary.skipped) == ("succeeded", 2, 0)
    row = eng.store.catalog.query("SELECT state, message FROM runs WHERE run_id = ?",
                                  [summary.run_id]).row(0, named=True)
    assert row["state"] == "succeeded" and "cancelled" not in row["message"], row
