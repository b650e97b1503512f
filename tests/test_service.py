"""Services in one process: trigger, overlapping runs, cancel, retry, scheduled job failures,
health and the process-wide instance. Runs use the sample provider behind small wrappers that
block, slow down or fail chosen symbols."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

import polars as pl
import pytest
from apscheduler.triggers.interval import IntervalTrigger

from enrich import service as service_mod
from enrich.errors import NotFoundError
from enrich.pipeline.requests import request_cancel
from enrich.pipeline.run_model import FINAL_STATES
from enrich.providers.sample.provider import SampleProvider
from enrich.service import Services, get_services, reset_services
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from enrich.views import runs as runs_view
from tests.conftest import FIXED_NOW

DATA_METHODS = {"bars", "dividends", "splits", "earnings", "news", "option_chain"}
SYMS = ["AAPL", "MSFT", "NVDA", "KO"]
TIMEOUT = 120  # seconds: a generous bound for a loaded 2-core machine, never a measure


class HookedProvider:
    """The sample provider with ``before(method, symbol)`` called ahead of every data call."""

    def __init__(self, before: Callable[[str, str], None] | None = None):
        self._inner = SampleProvider(clock=lambda: FIXED_NOW)
        self.before = before

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in DATA_METHODS:
            return attr

        def call(symbol, *args, **kw):
            if self.before is not None:
                self.before(name, symbol)
            return attr(symbol, *args, **kw)
        return call


class Gate:
    """Blocks the first data call for ``symbol`` until released; says when it got there.

    The bound only keeps a failed test from holding the run's thread for ever: it is longer
    than any wait of the test that holds the gate, so a slow machine never opens it early."""

    def __init__(self, symbol: str):
        self.symbol = symbol
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, method: str, symbol: str) -> None:
        if symbol == self.symbol and not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(300), "the test never released the gate"


@pytest.fixture
def svc_settings(settings):
    return settings.with_(history_years=1, now_override=FIXED_NOW)


@pytest.fixture
def services():
    made: list[Services] = []
    gates: list[Gate] = []

    def make(settings, before=None, symbols=SYMS, setup=None, **kw) -> Services:
        svc = Services(settings, provider=HookedProvider(before), **kw)
        add_symbols(svc.store.catalog, [(s, None, None) for s in symbols])
        made.append(svc)
        if isinstance(before, Gate):
            gates.append(before)
        if setup is not None:
            setup(svc)  # before it starts: its scheduler may fire at once
        return svc.start()

    yield make
    for gate in gates:  # a failed test's run is not left blocked in a fetch
        gate.release.set()
    for svc in made:
        svc.stop(timeout=1.0)


def run_row(store: Store, run_id: str) -> dict:
    return store.catalog.query("SELECT * FROM runs WHERE run_id = ?", [run_id]).row(
        0, named=True)


def tasks_of(store: Store, run_id: str) -> pl.DataFrame:
    return store.catalog.query(
        "SELECT symbol, state, started_at, finished_at, records FROM tasks WHERE run_id = ? "
        "ORDER BY symbol", [run_id])


def wait_for(pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_trigger_returns_at_once_while_the_run_proceeds(svc_settings, services, monkeypatch):
    gate = Gate("AAPL")
    svc = services(svc_settings, gate)
    # "At once" is shown by what trigger does not wait for, not by a stopwatch (a loaded
    # machine makes any time bound flaky): it returns while the run's row is still unwritten
    # (the catalog write is held here) and so before the run can start. Were trigger to
    # write the row or run the run itself, it would block on the held write.
    create_run, written = svc.engine.create_run, threading.Event()

    def held_create_run(*args, **kw):
        assert written.wait(300), "the test never let the row be written"
        return create_run(*args, **kw)

    monkeypatch.setattr(svc.engine, "create_run", held_create_run)
    try:
        run_id = svc.trigger(symbols=["AAPL"], lookback=30)
        assert run_id in svc.active_runs()
        assert svc.wait(run_id, timeout=0.1) == "queued"  # its row is not even written
        assert not gate.reached.is_set()
    finally:
        written.set()
    assert gate.reached.wait(TIMEOUT)  # the run is executing in the background, blocked in a fetch
    assert svc.store.catalog.scalar("SELECT state FROM runs WHERE run_id = ?",
                                    [run_id]) == "running"
    assert svc.wait(run_id, timeout=0.1) == "running"
    gate.release.set()
    assert svc.wait(run_id, timeout=TIMEOUT) == "succeeded"
    assert svc.active_runs() == []
    row = run_row(svc.store, run_id)
    assert (row["kind"], row["symbols_total"], row["symbols_ok"]) == ("manual", 1, 1)


def test_two_overlapping_runs_never_enrich_a_symbol_at_once(svc_settings, services):
    svc = services(svc_settings.with_(max_concurrent_symbols=3),
                   lambda method, symbol: time.sleep(0.03))
    first = svc.trigger(symbols=["AAPL", "MSFT", "NVDA"], lookback=30)
    second = svc.trigger(symbols=["NVDA", "MSFT", "KO"], lookback=30)
    assert svc.wait(first, TIMEOUT) == "succeeded" and svc.wait(second, TIMEOUT) == "succeeded"

    a, b = tasks_of(svc.store, first), tasks_of(svc.store, second)
    for sym in ("MSFT", "NVDA"):  # in both runs: one after the other, never overlapping
        ta = a.filter(pl.col("symbol") == sym).row(0, named=True)
        tb = b.filter(pl.col("symbol") == sym).row(0, named=True)
        assert ta["finished_at"] <= tb["started_at"] or tb["finished_at"] <= ta["started_at"], (
            sym, ta, tb)
        # Whichever came second found it up to date.
        assert sorted([ta["state"], tb["state"]]) == ["ok", "skipped"]
    for run_id, tasks in ((first, a), (second, b)):
        row = run_row(svc.store, run_id)
        assert row["symbols_total"] == 3 and row["symbols_failed"] == 0
        assert row["symbols_ok"] == (tasks["state"] == "ok").sum()
        assert row["symbols_skipped"] == (tasks["state"] == "skipped").sum()
        assert row["symbols_ok"] + row["symbols_skipped"] == 3
    assert svc.store.lake.read("bars")["symbol"].unique().sort().to_list() == sorted(SYMS)


def test_a_cancelled_runs_message_counts_every_symbol_that_ended():
    # Found by a QA pass: "cancelled after 192 of 341 symbols" beside 191 enriched, 24 up to
    # date and 1 failed: the up-to-date ones were left out.
    import datetime as dt

    from enrich.pipeline.run_model import RunSummary, SymbolResult, describe

    now = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    results = [SymbolResult(f"S{i:04d}", state) for i, state in enumerate(
        ["ok"] * 191 + ["skipped"] * 24 + ["failed"] + ["cancelled"] * 125)]
    summary = RunSummary(run_id="r", state="cancelled", total=341, ok=191, failed=1,
                         skipped=149, records=5, requests=9, retries=0,
                         errors_by_class={"provider": 1}, started_at=now, finished_at=now,
                         results=results)
    assert describe(summary) == ("cancelled after 216 of 341 symbols: 191 enriched, 24 up to "
                                 "date, 1 failed (provider: 1); 125 not started")


def test_cancel_mid_run_keeps_finished_symbols_and_ends_cancelled(svc_settings, services):
    gate = Gate("MSFT")  # the second of four symbols, one at a time
    svc = services(svc_settings.with_(max_concurrent_symbols=1), gate)
    run_id = svc.trigger(symbols=SYMS, lookback=30)
    assert gate.reached.wait(TIMEOUT)
    assert svc.cancel(run_id) is True
    gate.release.set()
    assert svc.wait(run_id, TIMEOUT) == "cancelled"

    row = run_row(svc.store, run_id)
    # AAPL finished before the cancel and MSFT was mid-way: both complete; the rest never start.
    # The two never started are counted nowhere (not "up to date": they were not run).
    assert (row["symbols_total"], row["symbols_ok"], row["symbols_skipped"],
            row["symbols_failed"]) == (4, 2, 0, 0)
    assert runs_view.run_detail(svc.store.catalog, run_id)["symbols_not_attempted"] == 2
    assert row["cancel_requested_by"] == "dashboard"
    assert "cancelled after 2 of 4 symbols: 2 enriched, 0 up to date; 2 not started" \
        in row["message"]
    assert set(svc.store.lake.read("bars")["symbol"].unique()) == {"AAPL", "MSFT"}
    assert set(tasks_of(svc.store, run_id)["state"]) == {"ok"}
    assert svc.cancel(run_id) is False  # already ended


def test_cancel_through_the_catalog_stops_a_run_owned_here(svc_settings, services,
                                                           monkeypatch):
    """What `python -m enrich runs cancel` does from another process."""
    gate = Gate("MSFT")
    svc = services(svc_settings.with_(max_concurrent_symbols=1), gate)
    cancels: list[threading.Event] = []  # the event the run stops on, as the engine gets it
    engine_run = svc.engine.run

    def run(*args, cancel, **kw):
        cancels.append(cancel)
        return engine_run(*args, cancel=cancel, **kw)

    monkeypatch.setattr(svc.engine, "run", run)
    run_id = svc.trigger(symbols=SYMS, lookback=30)
    assert gate.reached.wait(TIMEOUT)
    other = Store.from_settings(svc_settings)
    assert request_cancel(other.catalog, run_id, "cli", dt.datetime.now(dt.UTC)) == "running"
    # The engine polls the flag with its progress flush (every second): MSFT is held until
    # the run has read it (a fixed sleep let a slow machine release MSFT first, and the run
    # then went on to a third symbol).
    [cancel] = cancels
    assert cancel.wait(TIMEOUT), "the run never read the cancel from the catalog"
    gate.release.set()
    assert svc.wait(run_id, TIMEOUT) == "cancelled"
    assert run_row(svc.store, run_id)["symbols_ok"] == 2


def test_cancel_a_queued_run_before_it_starts(svc_settings, services):
    gate = Gate("AAPL")
    svc = services(svc_settings, gate, run_workers=1)
    busy = svc.trigger(symbols=["AAPL"], lookback=30)
    assert gate.reached.wait(TIMEOUT)
    queued = svc.trigger(symbols=["KO"], lookback=30)
    wait_for(lambda: svc.store.catalog.scalar(
        "SELECT count(*) FROM runs WHERE run_id = ?", [queued]) == 1)
    assert svc.cancel(queued) is True
    at_once = svc.trigger(symbols=["NVDA"], lookback=30)  # its row is not even written yet
    assert svc.cancel(at_once, by="api") is True
    gate.release.set()
    assert svc.wait(queued, TIMEOUT) == "cancelled" and svc.wait(at_once, TIMEOUT) == "cancelled"
    assert svc.wait(busy, TIMEOUT) == "succeeded"
    for run_id, by in ((queued, "dashboard"), (at_once, "api")):
        assert tasks_of(svc.store, run_id).is_empty()
        row = run_row(svc.store, run_id)
        assert row["cancel_requested_by"] == by, row
        assert row["message"] == f"cancelled by {by} before it started"
        assert svc.cancel(run_id) is False  # already ended


def test_a_cancel_that_reaches_the_catalog_after_the_run_ended_is_refused(
        svc_settings, services, monkeypatch):
    """The race behind a flaky API test: the cancelling thread is held up before its catalog
    write until the run has ended. The answer and the row must agree: the run ran to its end,
    so the cancel is refused and nobody is recorded as having cancelled it (before the fix, the
    run was flagged in memory first, stopped, and was recorded cancelled without who asked)."""
    gate = Gate("MSFT")
    svc = services(svc_settings.with_(max_concurrent_symbols=1), gate)
    run_id = svc.trigger(symbols=SYMS, lookback=30)
    assert gate.reached.wait(TIMEOUT)
    real = service_mod.request_cancel

    def held_up(catalog, rid, by, now):
        gate.release.set()
        assert svc.wait(run_id, TIMEOUT) in FINAL_STATES
        return real(catalog, rid, by, now)

    monkeypatch.setattr(service_mod, "request_cancel", held_up)
    assert svc.cancel(run_id) is False
    row = run_row(svc.store, run_id)
    assert (row["state"], row["symbols_ok"], row["cancel_requested_by"]) == ("succeeded", 4, None)


def test_retry_failed_runs_exactly_the_failed_symbols(svc_settings, services):
    broken = {"MSFT", "KO"}

    def fail_some(method: str, symbol: str) -> None:
        if symbol in broken and method == "bars":
            raise NotFoundError(f"no such ticker {symbol}", provider="sample", endpoint=method)

    svc = services(svc_settings, fail_some)
    first = svc.trigger(symbols=SYMS, datasets=["bars"], lookback=30)
    assert svc.wait(first, TIMEOUT) == "partial"
    failed = tasks_of(svc.store, first).filter(pl.col("state") == "failed")["symbol"]
    assert sorted(failed) == sorted(broken)

    broken.clear()  # the provider is fixed
    retry = svc.retry_failed(first)
    assert svc.wait(retry, TIMEOUT) == "succeeded"
    row = run_row(svc.store, retry)
    assert (row["kind"], row["parent_run_id"]) == ("retry", first)
    assert '"datasets"' in row["params"] and '"lookback_days"' in row["params"]
    assert tasks_of(svc.store, retry)["symbol"].to_list() == ["KO", "MSFT"]
    assert (row["symbols_total"], row["symbols_ok"]) == (2, 2)
    h = svc.health(probe=False)
    assert h["failures_24h"] == {"not_found": 2}
    with pytest.raises(Exception, match="no failed symbols"):
        svc.retry_failed(retry)


def test_a_scheduled_job_that_raises_is_a_failed_run_and_firing_goes_on(svc_settings, services):
    calls = {"n": 0}

    def break_the_first_call(svc: Services) -> None:
        # Before the service starts: its first fire comes a second later, which a loaded
        # machine could let pass before a patch made after start().
        real = svc.engine.resolve_symbols

        def flaky(params):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("boom: the universe could not be read")
            return real(params)

        svc.engine.resolve_symbols = flaky

    svc = services(svc_settings.with_(scheduler=True), symbols=["AAPL"], heartbeat_s=0.5,
                   trigger=IntervalTrigger(seconds=1), setup=break_the_first_call)

    def scheduled() -> pl.DataFrame:
        return svc.store.catalog.query(
            "SELECT state, message FROM runs WHERE kind = 'scheduled' ORDER BY requested_at")

    wait_for(lambda: "succeeded" in scheduled()["state"].to_list())
    runs = scheduled()
    assert runs["state"][0] == "failed" and "boom" in runs["message"][0]
    assert runs["state"].to_list()[1] == "succeeded"


def test_health_with_the_scheduler_off(svc_settings, services):
    svc = services(svc_settings.with_(api_key="sk_live_abcdefgh12345678"))
    h = svc.health()
    assert h["scheduler"]["state"] == "stopped" and svc.next_fire_time() is None
    assert h["schedule"]["next_fire_utc"] is None
    assert h["catalog"]["ok"] and h["catalog"]["query_ms"] >= 0
    assert h["provider"]["ok"] and h["provider"]["is_demo"]
    assert h["api_key"] == "sk••••••78" and "abcdefgh" not in str(h)
    assert h["last_run"] is None and h["failures_24h"] == {}
    assert h["ok"] is True and h["service"]["scheduler_enabled"] is False


def test_get_services_is_one_started_instance_per_settings(svc_settings, tmp_path):
    try:
        a = get_services(svc_settings, provider=HookedProvider())
        assert get_services(svc_settings) is a and get_services() is a
        other = svc_settings.with_(data_dir=tmp_path / "other")
        b = get_services(other, provider=HookedProvider())
        assert b is not a and a.stopped and not b.stopped
    finally:
        reset_services()
    assert b.stopped


def test_a_recheck_of_stored_data_runs_on_the_services_one_at_a_time(
        svc_settings, services, monkeypatch, caplog):
    # The Quality page's "Re-check stored data" and POST /quality/audit ask the services:
    # one re-check at a time per process (a second ask while it runs starts nothing), and a
    # failing one is logged, not lost in a bare thread.
    from enrich.checks import quality_run

    svc = services(svc_settings)
    started, release, calls = threading.Event(), threading.Event(), []

    def audit(store, symbols=None, datasets=None):
        calls.append((symbols, datasets))
        started.set()
        assert release.wait(TIMEOUT), "the test never released the re-check"
        if len(calls) == 2:
            raise RuntimeError("disk went away")

    monkeypatch.setattr(quality_run, "audit", audit)
    assert svc.audit(["AAPL"], ["bars"]) is True
    assert started.wait(TIMEOUT)
    assert svc.audit_running() and svc.audit() is False  # nothing started
    release.set()
    wait_for(lambda: not svc.audit_running())
    assert calls == [(["AAPL"], ["bars"])]
    with caplog.at_level("ERROR", logger="enrich.service"):
        assert svc.audit() is True
        wait_for(lambda: not svc.audit_running())
    assert calls[1] == (None, None)
    assert any("re-check of stored data failed" in r.getMessage() for r in caplog.records)
