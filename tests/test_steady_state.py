"""A daily refresh's cost does not grow with the option history a symbol holds: the chains'
sessions are read from month files' footers, the volatility summary reads only the months of
the sessions it summarizes (bench/refresh.py Part 4, --held, shows the CPU)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from enrich.checks import quality_run
from enrich.errors import CorruptFileError
from enrich.pipeline.engine import store_vol_summary
from enrich.schemas import DATASETS, conform
from enrich.store import lake as lake_module
from enrich.store.lake import DATES_KEY, Lake

SESSIONS = [dt.date(2026, 9, 30), dt.date(2026, 10, 1), dt.date(2026, 10, 2),
            dt.date(2026, 11, 20), dt.date(2026, 11, 23)]


def chain(symbol: str, as_of: dt.date) -> pl.DataFrame:
    """A two-expiry, four-strike chain of ``as_of`` in the OPTIONS_IV schema, priced enough
    for the volatility summary (an IV on every contract)."""
    rows = []
    for days in (30, 60):
        for strike in (90.0, 95.0, 105.0, 110.0):
            for kind in ("call", "put"):
                rows.append({"symbol": symbol, "as_of": as_of,
                             "contract": f"O:{symbol}{days}{kind[0].upper()}{int(strike)}",
                             "expiration": as_of + dt.timedelta(days=days), "strike": strike,
                             "contract_type": kind, "underlying_price": 100.0, "iv": 0.25,
                             "rate": 0.04, "dividend_yield": 0.0, "volume": 10.0,
                             "open_interest": 100, "adjusted": False, "partial": False,
                             "source": "snapshot"})
    return conform(pl.DataFrame(rows), DATASETS["options_iv"])


@pytest.fixture()
def held(tmp_path) -> Lake:
    lake = Lake(tmp_path / "lake")
    for day in SESSIONS:
        lake.upsert("options_iv", chain("AAPL", day))
    return lake


def test_a_month_file_names_the_sessions_it_holds_in_its_footer(held):
    files = held.files("options_iv", ["AAPL"])
    assert [f.name for f in files] == ["month=2026-09.parquet", "month=2026-10.parquet",
                                       "month=2026-11.parquet"]
    said = [pq.read_metadata(f).metadata[DATES_KEY.encode()].decode() for f in files]
    assert said == ["2026-09-30", "2026-10-01,2026-10-02", "2026-11-20,2026-11-23"]


def test_sessions_held_come_from_footers_without_decoding_a_chain(held, monkeypatch):
    cold = Lake(held.root)  # another process: nothing cached
    decoded = []
    real = lake_module.decode_file
    monkeypatch.setattr(lake_module, "decode_file",
                        lambda path: decoded.append(path) or real(path))
    monkeypatch.setattr(cold, "read_columns", lambda *a, **k: pytest.fail("decoded a chain"))
    files = cold.files("options_iv", ["AAPL"])
    days = cold.dates_held("options_iv", files)
    assert days.tolist() == SESSIONS
    assert decoded == []
    # The quality check's newest snapshot decodes the newest file alone.
    newest, every = quality_run._newest_snapshot(cold, "AAPL")
    assert every.tolist() == SESSIONS
    assert set(newest["as_of"].to_list()) == {SESSIONS[-1]}
    assert [p.name for p in decoded] == ["month=2026-11.parquet"]


def test_a_month_file_without_the_footer_list_is_read_for_its_sessions(held):
    # Written before footers listed sessions (or by another tool): its column is read.
    old = held.files("options_iv", ["AAPL"])[1]
    frame = pl.read_parquet(old)
    frame.write_parquet(old)
    assert DATES_KEY.encode() not in (pq.read_metadata(old).metadata or {})
    cold = Lake(held.root)
    assert cold.dates_held("options_iv", cold.files("options_iv", ["AAPL"])).tolist() \
        == SESSIONS
    _, every = quality_run._newest_snapshot(cold, "AAPL")
    assert every.tolist() == SESSIONS


def test_an_unreadable_older_month_file_is_still_set_aside(held):
    old = held.files("options_iv", ["AAPL"])[0]
    old.write_bytes(b"PAR1 not a parquet file")
    cold = Lake(held.root)
    with pytest.raises(CorruptFileError):
        quality_run._newest_snapshot(cold, "AAPL")
    assert not old.exists()  # quarantined: the next run fetches it again
    assert cold.dates_held("options_iv", cold.files("options_iv", ["AAPL"])).tolist() \
        == SESSIONS[1:]


def test_the_summary_of_a_session_reads_only_that_months_chains(held, monkeypatch):
    cold = Lake(held.root)
    read = []
    real = cold.read_file
    monkeypatch.setattr(cold, "read_file", lambda path: read.append(path.name) or real(path))
    written = store_vol_summary(cold, "AAPL", pl.Series([SESSIONS[-1]]))
    assert written == 1
    assert [n for n in read if n.startswith("month=")] == ["month=2026-11.parquet"]
    summary = cold.read("vol_summary", ["AAPL"])
    assert summary["as_of"].to_list() == [SESSIONS[-1]]
    # Sessions of two months read both months' files, and summarize both sessions.
    read.clear()
    assert store_vol_summary(cold, "AAPL", pl.Series([SESSIONS[0], SESSIONS[1]])) == 2
    assert sorted(n for n in read if n.startswith("month=")) == [
        "month=2026-09.parquet", "month=2026-10.parquet"]


def test_a_summary_file_that_cannot_be_read_is_rebuilt_from_every_month(held):
    store_vol_summary(held, "AAPL", pl.Series([SESSIONS[-1]]))
    (summary_file,) = held.files("vol_summary", ["AAPL"])
    summary_file.write_bytes(b"garbage")
    cold = Lake(held.root)
    store_vol_summary(cold, "AAPL", pl.Series([SESSIONS[-1]]))
    rebuilt = cold.read("vol_summary", ["AAPL"])
    assert rebuilt["as_of"].to_list() == SESSIONS  # every stored chain, not one month's


def test_read_by_month_keeps_key_order_and_ignores_months_for_other_datasets(held):
    two = held.read("options_iv", ["AAPL"], months=["2026-10", "2026-09"])
    assert two["as_of"].unique().sort().to_list() == SESSIONS[:3]
    assert two.equals(two.sort(list(DATASETS["options_iv"].key)))
    assert held.read("options_iv", ["AAPL"], months=["2025-01"]).is_empty()
    held.upsert("dividends", conform(pl.DataFrame(
        {"symbol": ["AAPL"], "ex_date": [dt.date(2026, 11, 6)], "cash_amount": [0.26]}),
        DATASETS["dividends"]))
    assert held.read("dividends", ["AAPL"], months=["1999-01"]).height == 1
    assert np.array_equal(held.dates_held("options_iv", []),
                          np.array([], dtype="datetime64[D]"))


# -- the risk-free curve, indexed once per stored frame -----------------------------------
def _curve(day: dt.date, pct: float, **more: float) -> dict:
    return {"date": day, "yield_3_month": pct, "yield_1_year": pct + 0.5, **more}


def test_chains_priced_against_one_stored_curve_index_it_once(monkeypatch):
    from enrich.quant import rates

    curves = rates.frame([_curve(dt.date(2026, 11, 20), 4.0), _curve(dt.date(2026, 11, 23), 3.0)])
    indexed = []
    real = rates._Curves
    monkeypatch.setattr(rates, "_Curves", lambda *a: indexed.append(1) or real(*a))
    t = np.array([0.25, 1.0])
    days = [dt.date(2026, 11, 23)] * 2
    first = rates.rate_to(curves, days, t, 0.01)
    second = rates.rate_to(curves, days, t, 0.01)
    assert len(indexed) == 1
    assert np.array_equal(first[0], second[0])
    assert first[0] == pytest.approx(rates.continuous(np.array([3.0, 3.5]), t))
    assert list(first[1]) == ["treasury", "treasury"]


def test_another_curve_frame_is_never_answered_from_the_last_ones_index():
    from enrich.quant import rates

    day = [dt.date(2026, 11, 23)]
    t = np.array([0.25])
    old = rates.frame([_curve(dt.date(2026, 11, 23), 3.0)])
    assert rates.rate_to(old, day, t, 0.01)[0][0] == pytest.approx(
        rates.continuous(3.0, 0.25))
    # The curve file rewritten (a restated yield): a new frame, its own values.
    new = rates.frame([_curve(dt.date(2026, 11, 23), 5.0)])
    assert rates.rate_to(new, day, t, 0.01)[0][0] == pytest.approx(
        rates.continuous(5.0, 0.25))
    # Frames made and dropped one after another (their memory, and so their id(), reused):
    # each is answered from its own yields, never from an index of a frame gone.
    del old, new
    for pct in (1.0, 2.0, 3.0, 4.0, 6.0) * 10:
        curve = rates.frame([_curve(dt.date(2026, 11, 23), pct)])
        assert rates.rate_to(curve, day, t, 0.01)[0][0] == pytest.approx(
            rates.continuous(pct, 0.25))
        del curve
    # A frame whose only row has no yield is no curve: the fallback, whatever came before.
    empty = rates.frame([{"date": dt.date(2026, 11, 23)}])
    rate, source = rates.rate_to(empty, day, t, 0.01)
    assert rate[0] == 0.01 and source[0] == "fallback"
    # Missing tenors are skipped, as a row's present ones are interpolated.
    partial = rates.frame([{"date": dt.date(2026, 11, 23), "yield_1_year": 4.0}])
    assert rates.rate_to(partial, day, np.array([2.0]), 0.01)[0][0] == pytest.approx(
        rates.continuous(4.0, 1.0))


# -- a dataset the plan does not serve yet is due, not failing ---------------------------
class _NewsNotYet:
    """The sample provider, but AAPL's news window reaches a session the plan serves only
    after its New York day ends (Massive's 403 "today's data before end of day")."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.is_demo, self.rate_limited = inner.name, True, False

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def with_priority(self, priority):
        return self

    def news(self, symbol, start, end):
        if symbol == "AAPL" and self.inner.fail_news:
            from enrich.errors import TransientError

            raise TransientError("news: upstream timeout", provider="test", endpoint="news",
                                 status=504)
        if symbol == "AAPL":
            from enrich.errors import NotYetAvailableError

            raise NotYetAvailableError("news: your plan serves a session only after its day "
                                       "ends in New York", provider="test", endpoint="news",
                                       status=403)
        return self.inner.news(symbol, start, end)


def test_a_dataset_not_served_yet_is_no_failure_anywhere(tmp_path):
    from enrich.config import load_settings
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.run_model import RunParams
    from enrich.providers.retry import RetryPolicy
    from enrich.providers.sample.provider import SampleProvider
    from enrich.store.store import Store
    from enrich.store.universe import add_symbols
    from enrich.views import status as status_view
    from tests.conftest import FIXED_NOW

    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / "data"),
                              "ENRICH_HISTORY_YEARS": "1"}, dotenv_path=None)
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [("AAPL", "stocks", None), ("MSFT", "stocks", None)])
    clock = lambda: FIXED_NOW  # noqa: E731
    inner = SampleProvider(clock=clock, retry=RetryPolicy(max_retries=0, sleep=lambda s: None))
    inner.fail_news = True  # the first run: AAPL's news fails (a failure, shown failing)
    Engine(store, _NewsNotYet(inner), settings, clock=clock).run(RunParams(universe_wide=False))
    grid = status_view.status_grid(store.catalog, FIXED_NOW)
    assert grid.filter((pl.col("symbol") == "AAPL") & (pl.col("dataset") == "news"))[
        "state"].to_list() == ["failing"]
    inner.fail_news = False  # the next: the plan does not serve the session yet
    summary = Engine(store, _NewsNotYet(inner), settings,
                     clock=clock).run(RunParams(universe_wide=False))
    assert summary.failed == 0 and summary.state == "succeeded"
    row = store.catalog.query(
        "SELECT status, error_class FROM fetch_log WHERE symbol = 'AAPL' AND dataset = 'news' "
        "AND run_id = ?", [summary.run_id]).row(0, named=True)
    assert row == {"status": "skipped", "error_class": "not_yet_available"}
    grid = status_view.status_grid(store.catalog, FIXED_NOW)
    state = dict(zip(grid["symbol"] + "/" + grid["dataset"], grid["state"], strict=True))
    assert state["AAPL/news"] == "never"  # nothing held yet: asked again next run
    assert state["MSFT/news"] != "failing" and "failing" not in set(state.values())
    status = store.catalog.query(
        "SELECT consecutive_failures, last_success_at, last_attempt_at, last_error_at "
        "FROM symbol_status WHERE symbol = 'AAPL' AND dataset = 'news'").row(0, named=True)
    # The attempt is recorded, no success claimed; the earlier failure stays on record.
    assert status["consecutive_failures"] == 0 and status["last_success_at"] is None
    assert status["last_attempt_at"] > status["last_error_at"]


def test_a_backfill_step_the_plan_refused_is_logged_skipped_not_failed(tmp_path, monkeypatch,
                                                                       capsys):
    """An options backfill on a plan without option contracts: the listing's 403 is a fact
    (fetch_log status skipped, class not_entitled), counted by no failure count."""
    from enrich.cli import main
    from enrich.config import load_settings
    from enrich.providers.ratelimit import clear_limiters
    from enrich.store.store import Store
    from enrich.views import metrics as metrics_view
    from tests.fakes.massive_server import FakeMassive

    with FakeMassive(today=dt.date(2026, 11, 25),
                     not_entitled={"/v3/reference/options/contracts"}) as fake:
        for k, v in {"ENRICH_DATA_DIR": str(tmp_path / "data"), "ENRICH_PROVIDER": "massive",
                     "MASSIVE_API_KEY": fake.api_key, "MASSIVE_BASE_URL": fake.base_url,
                     "ENRICH_RATE_LIMIT_PER_MIN": "100000",
                     "ENRICH_NOW": "2026-11-25T22:00:00+00:00"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.chdir(tmp_path)
        try:
            main(["backfill", "options", "--symbol", "AAPL", "--json"])
        finally:
            clear_limiters()
    capsys.readouterr()
    catalog = Store(load_settings(dotenv_path=None).data_dir).catalog
    rows = catalog.query("SELECT status, error_class FROM fetch_log WHERE dataset LIKE "
                         "'option%' AND status <> 'retried'")
    assert rows.height >= 1
    assert set(rows.iter_rows()) == {("skipped", "not_entitled")}
    assert metrics_view.failures_by_class(catalog).is_empty()
