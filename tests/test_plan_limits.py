"""Plan limits are facts, not failures (issue: the daily refresh within the quota, point 7).

The loopback fake answers 403 with the texts Massive uses for a plan's limits (reference
massive-refresh-and-correctness.md §0 g and §6, from polygon-io/issues #313 and live Basic-key
probes): "Your plan doesn't include this data timeframe" beyond the plan's history window, and
"Attempted to request today's data before end of day" for a session before its New York day
ends.
"""

from __future__ import annotations

import datetime as dt
import json

import httpx
import polars as pl
import pytest

from enrich.cli import main
from enrich.config import load_settings
from enrich.errors import HistoryLimitError, NotEntitledError, NotYetAvailableError
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.providers.massive.provider import ChainFilters, MassiveProvider
from enrich.providers.retry import RetryPolicy
from enrich.service import Services
from enrich.store import plan_limits
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from enrich.views.status import status_table
from tests.fakes.massive_server import FakeMassive

UTC = dt.UTC
D = dt.date
FRIDAY = dt.datetime(2026, 11, 20, 23, 0, tzinfo=UTC)
MONDAY = dt.datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # 18:00 New York: Monday's day not over
TUESDAY_EARLY = dt.datetime(2026, 11, 24, 5, 30, tzinfo=UTC)  # 00:30 New York
SYMS = ("AAPL", "MSFT", "SPY")


def _provider(fake, today: dt.date, **kw) -> MassiveProvider:
    return MassiveProvider(httpx.Client(timeout=30), fake.api_key, fake.base_url, None,
                           today=lambda: today, owns_client=True,
                           retry=RetryPolicy(max_retries=2, sleep=lambda s: None), **kw)


def _store(tmp_path, **changes):
    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / "data")}, dotenv_path=None)
    settings = settings.with_(provider="massive", **changes)
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [(s, "etfs" if s == "SPY" else "stocks", None) for s in SYMS])
    return store, settings


def test_the_403_texts_are_told_apart(tmp_path):
    with FakeMassive(symbols=SYMS, today=MONDAY.date(), history_days=730,
                     not_yet=MONDAY.date(), not_entitled={"/v3/snapshot"}) as fake, \
            _provider(fake, MONDAY.date()) as p:
        with pytest.raises(HistoryLimitError) as old:
            p.bars("AAPL", "1d", D(2020, 1, 2), D(2020, 2, 1))
        with pytest.raises(NotYetAvailableError):
            p.bars("AAPL", "1d", D(2026, 11, 20), MONDAY.date())
        with pytest.raises(NotEntitledError) as chain:
            p.option_chain("AAPL", MONDAY.date())
    assert isinstance(old.value, NotEntitledError)  # a kind of refusal, remembered apart
    assert type(chain.value) is NotEntitledError
    assert old.value.error_class == "history_limit"


def test_history_beyond_the_plan_is_probed_once_then_stored_from_its_window(tmp_path):
    store, settings = _store(tmp_path, history_years=10, max_concurrent_symbols=1)
    with FakeMassive(symbols=SYMS, today=FRIDAY.date(), history_days=730) as fake:
        with _provider(fake, FRIDAY.date()) as p:
            summary = Engine(store, p, settings, clock=lambda: FRIDAY).run(
                RunParams(datasets=["bars"]))
        aggs = [r for r in fake.requests if r.path.startswith("/v2/aggs/ticker/")]
    assert summary.failed == 0 and summary.ok == 3
    refused = [r for r in aggs if r.status == 403]
    # The first symbol asks 10 years: refused; the 10 and 5 year edges refused (20 and 15 lie
    # before what it asked), the 2 year edge served; then its history from there. The others
    # start inside the window at once.
    assert len(refused) == 3 and len(aggs) == 3 + 1 + 1 + 2
    limits = plan_limits.read(store.catalog, "massive")
    days = limits.history["history:stocks:bars:1d"]
    assert 729 <= days <= 731
    bars = store.lake.read("bars", level="1d")
    first = bars.group_by("symbol").agg(pl.col("session").min())
    assert (first["session"] >= FRIDAY.date() - dt.timedelta(days=days)).all()
    assert (first["session"] <= FRIDAY.date() - dt.timedelta(days=days - 5)).all()
    states = status_table(store.catalog, now=FRIDAY)
    assert set(states.filter(pl.col("dataset") == "bars")["state"]) == {"fresh"}

    # Remembered: a later first fetch (a new symbol, a new process) is never refused.
    add_symbols(store.catalog, [("NVDA", "stocks", None)])
    with FakeMassive(symbols=(*SYMS, "NVDA"), today=FRIDAY.date(), history_days=730) as fake:
        with _provider(fake, FRIDAY.date()) as p:
            Engine(store, p, settings, clock=lambda: FRIDAY).run(
                RunParams(symbols=["NVDA"], datasets=["bars"]))
        assert fake.statuses()[403] == 0 and fake.count("/v2/aggs/ticker/NVDA/") == 1


def test_todays_session_before_its_day_ends_is_due_then_fetched_after_midnight(
        tmp_path, monkeypatch, capsys):
    store, settings = _store(tmp_path, history_years=1)
    add_symbols(store.catalog, [("NVDA", "stocks", None)])
    with FakeMassive(symbols=(*SYMS, "NVDA"), today=MONDAY.date()) as fake:
        with _provider(fake, FRIDAY.date()) as p:
            Engine(store, p, settings, clock=lambda: FRIDAY).run(
                RunParams(symbols=list(SYMS), datasets=["bars"]))
        fake.not_yet = MONDAY.date()  # Monday 18:00 New York on a plan that waits for 00:00
        with _provider(fake, MONDAY.date()) as p:
            summary = Engine(store, p, settings, clock=lambda: MONDAY).run(
                RunParams(datasets=["bars"]))
        assert fake.statuses()[403] >= 2  # the grouped Monday and NVDA's first range
    assert summary.failed == 0, [r.errors for r in summary.results]
    held = store.lake.read("bars", level="1d").group_by("symbol").agg(pl.col("session").max())
    assert set(held["session"]) == {D(2026, 11, 20)}  # Thursday, Friday stored; Monday not
    assert "NVDA" in held["symbol"].to_list()  # its first fetch stopped at Friday
    assert plan_limits.read(store.catalog, "massive").next_day
    states = status_table(store.catalog, now=MONDAY).filter(pl.col("dataset") == "bars")
    assert set(states["state"]) == {"due"}, states.select("symbol", "state")
    # The operator sees it: `entitlements` lists the publication limit.
    monkeypatch.setenv("ENRICH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert main(["entitlements", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["value"] for r in listed["plan_limits"]] == ["next_day"]

    # After midnight New York time the plan serves Monday: the follow-up refresh gets it.
    with FakeMassive(symbols=(*SYMS, "NVDA"), today=MONDAY.date()) as fake, \
            _provider(fake, TUESDAY_EARLY.date()) as p:
        later = Engine(store, p, settings, clock=lambda: TUESDAY_EARLY).run(
            RunParams(datasets=["bars"]))
    assert later.failed == 0
    held = store.lake.read("bars", level="1d").group_by("symbol").agg(pl.col("session").max())
    assert set(held["session"]) == {MONDAY.date()}
    states = status_table(store.catalog, now=TUESDAY_EARLY).filter(pl.col("dataset") == "bars")
    assert set(states["state"]) == {"fresh"}


def test_the_follow_up_refresh_runs_only_for_a_next_day_plan(tmp_path):
    store, settings = _store(tmp_path)
    svc = Services(settings.with_(provider="sample", scheduler=True, schedule_utc=dt.time(1, 30)),
                   clock=lambda: MONDAY)
    svc.start()
    try:
        assert svc.follow_up_time() is None  # nothing learned: no follow-up
        assert svc._follow_up_job() is None  # the job APScheduler fires: queues nothing
        b = plan_limits.WriteBatch()
        plan_limits.record_next_day(b, "sample", "test: the plan serves after midnight")
        store.catalog.write(b)
        svc.engine.limits(reload=True)
        # 00:30 New York on Tuesday 2026-11-24 is 05:30 UTC (EST).
        assert svc.follow_up_time() == TUESDAY_EARLY
        run_id = svc._follow_up_job()
        assert run_id is not None
        assert svc.wait(run_id, timeout=120) in ("succeeded", "partial")
        assert store.catalog.scalar("SELECT kind FROM runs WHERE run_id = ?",
                                    [run_id]) == "follow-up"
    finally:
        svc.stop()


def test_a_refused_dataset_is_asked_again_after_a_week_or_on_request(tmp_path, monkeypatch,
                                                                      capsys):
    store, settings = _store(tmp_path, history_years=1)
    chain = "/v3/snapshot/options/"
    with FakeMassive(symbols=SYMS, today=D(2026, 12, 4), not_entitled={chain}) as fake:
        def run_at(when):
            with _provider(fake, when.date()) as p:
                return Engine(store, p, settings, clock=lambda: when).run()

        run_at(FRIDAY)
        asked = fake.count(chain)
        assert asked == 3
        run_at(MONDAY)  # three days later: skipped, not asked
        assert fake.count(chain) == asked
        refused = plan_limits.not_entitled_table(store.catalog)
        assert [(r["dataset"], r["symbols"]) for r in refused] == [("options_iv", 3)]
        # A week on (refusals are stamped in real time: age them): asked again, refused again.
        b = plan_limits.WriteBatch()
        b.execute("UPDATE symbol_status SET last_error_at = last_error_at - INTERVAL 8 DAY "
                  "WHERE not_entitled")
        store.catalog.write(b)
        run_at(MONDAY)
        assert fake.count(chain) == 2 * asked
        monkeypatch.setenv("ENRICH_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.chdir(tmp_path)
        assert main(["entitlements", "recheck"]) == 0
        assert "cleared 3" in capsys.readouterr().out
        run_at(MONDAY)  # re-checked on request, the same day
        assert fake.count(chain) == 3 * asked


def test_a_chain_over_the_page_cap_is_truncated_with_a_note_not_failed(tmp_path):
    store, settings = _store(tmp_path, history_years=1)
    with FakeMassive(symbols=SYMS, today=FRIDAY.date(), page_size=10) as fake:
        with _provider(fake, FRIDAY.date(), chain=ChainFilters(60, 0.25, 2)) as p:
            summary = Engine(store, p, settings, clock=lambda: FRIDAY).run(
                RunParams(symbols=["AAPL"], datasets=["bars", "options_iv"]))
        chain = [r for r in fake.requests if r.path.startswith("/v3/snapshot/options/AAPL")]
    assert summary.failed == 0
    assert len(chain) == 2  # two pages of 10 of a 30-contract chain
    first = dict(p.split("=") for p in chain[0].query.split("&"))
    assert first["expiration_date.gte"] == "2026-11-20"
    assert first["expiration_date.lte"] == "2027-01-19"
    close = store.lake.read("bars", ["AAPL"], level="1d").sort("session")["close"][-1]
    assert float(first["strike_price.gte"]) == pytest.approx(close * 0.75, rel=1e-6)
    assert float(first["strike_price.lte"]) == pytest.approx(close * 1.25, rel=1e-6)
    assert store.lake.read("options_iv", ["AAPL"]).height == 20
    note = store.catalog.scalar("SELECT error_message FROM fetch_log WHERE symbol = 'AAPL' "
                                "AND dataset = 'options_iv' AND status = 'ok'")
    assert "truncated after 2 pages" in note and "ENRICH_OPTIONS_MAX_PAGES" in note


def test_options_symbols_limit_which_underlyings_get_a_chain(tmp_path):
    store, settings = _store(tmp_path, history_years=1, options_symbols=("SPY",))
    with FakeMassive(symbols=SYMS, today=FRIDAY.date()) as fake:
        with _provider(fake, FRIDAY.date()) as p:
            Engine(store, p, settings, clock=lambda: FRIDAY).run(
                RunParams(datasets=["options_iv"]))
        assert fake.count("/v3/snapshot/options/") == 1
        assert fake.count("/v3/snapshot/options/SPY") == 1


def test_a_history_window_learned_for_one_market_never_bounds_another():
    """Found by a QA pass: a 2-year window learned from a stock's refusal cut X:BTCUSD's
    first enrichment to 2 years (730 rows instead of 5 years, "succeeded", no note): plans
    are sold per market (reference §6). An ETF's is the stocks plan."""
    limits = plan_limits.Limits({plan_limits.history_key("stocks", "bars", "1d"): 730})
    today = dt.date(2026, 12, 4)
    assert limits.floor("stocks", "bars", "1d", today) == dt.date(2024, 12, 4)
    assert limits.floor("etfs", "bars", "1d", today) == dt.date(2024, 12, 4)
    for market in ("crypto", "fx", "indices"):
        assert limits.floor(market, "bars", "1d", today) is None
    assert limits.floor("stocks", "bars", "1h", today) is None  # per timeframe, as before


def test_history_limits_learned_for_every_market_are_forgotten_by_the_migration(
        tmp_path, monkeypatch):
    """A review: the keys of limits learned before (``history:bars:1d``, from whichever
    symbol was refused first, applied to every market) were never read again but still
    shown on Health; migration 11 forgets them, and keeps the per-market ones."""
    from enrich.store import catalog as catalog_mod
    from enrich.store.catalog import Catalog, WriteBatch
    from enrich.store.migrations import MIGRATIONS

    assert MIGRATIONS[-1][0] == 11
    cat = Catalog(tmp_path / "enrich.duckdb")
    monkeypatch.setattr(catalog_mod, "MIGRATIONS", MIGRATIONS[:-1])
    cat.migrate()
    b = WriteBatch()
    for key in ("history:bars:1d", "history:dividends", "history:stocks:bars:1d",
                "history:fx:bars:1h", "publication"):
        b.upsert("plan_limits", {"provider": "massive", "limit_key": key, "history_days": 730,
                                 "value": None, "detail": "t", "found_at": dt.datetime.now(
                                     dt.UTC)})
    cat.write(b)
    monkeypatch.setattr(catalog_mod, "MIGRATIONS", MIGRATIONS)
    assert cat.migrate() == [11]
    kept = sorted(cat.query("SELECT limit_key FROM plan_limits")["limit_key"].to_list())
    assert kept == ["history:fx:bars:1h", "history:stocks:bars:1d", "publication"]
