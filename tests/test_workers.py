"""Runs in worker processes (enrich.pipeline.workers): same lake and logs as threads, isolation,
cancel."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from enrich.identity import TickerReference
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.pipeline.workers import process_count, usable_cpus
from enrich.providers.sample.provider import SampleProvider
from enrich.schemas import DATASETS
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from tests.conftest import REPO, subprocess_env

UNIVERSE = [("AAPL", "stocks", "Apple"), ("SPY", "etfs", "SPDR S&P 500"),
            ("NVDA", "stocks", "NVIDIA"), ("X:BTCUSD", "crypto", "Bitcoin"),
            ("MSFT", "stocks", "Microsoft"), ("QQQ", "etfs", "Invesco QQQ"),
            ("AAAA", "stocks", "Crashes its worker")]


class MarkedProvider(SampleProvider):
    """Leaves a file named after the process that built it; ``crash`` kills that process
    when it is asked for those bars."""

    def __init__(self, marks: str, crash: str | None = None, **kw):
        super().__init__(**kw)
        self.marks, self.crash = marks, crash
        Path(marks, str(os.getpid())).touch()

    def ticker_reference(self, symbol):
        if symbol == "AAAA":  # not in the sample's own universe: known to this test
            return TickerReference("AAAA", "Crashes its worker", "stocks", "CS", True,
                                   source="test")
        return super().ticker_reference(symbol)

    def bars(self, symbol, timeframe, start, end):
        if symbol == self.crash:
            os._exit(3)  # a worker killed mid-symbol (out of memory, kill -9)
        return super().bars(symbol, timeframe, start, end)

    def process_factory(self):
        return functools.partial(MarkedProvider, self.marks, self.crash)


def engine(settings, clock, tmp_path: Path, processes: bool, crash: str | None = None):
    settings = settings.with_(history_years=3, max_concurrent_symbols=2)
    store = Store.from_settings(settings)
    add_symbols(store.catalog, UNIVERSE)
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    eng = Engine(store, MarkedProvider(str(marks), crash, clock=clock), settings, clock=clock)
    eng.process_min_symbols = 2 if processes else 10_000
    return eng, marks


def worker_pids(marks: Path) -> set[int]:
    return {int(p.name) for p in marks.iterdir()} - {os.getpid()}


def test_a_process_run_leaves_what_a_thread_run_leaves(settings, fixed_clock, tmp_path):
    syms = [s for s, _, _ in UNIVERSE if s != "AAAA"]
    by_threads, _ = engine(settings.with_(data_dir=tmp_path / "t"), fixed_clock, tmp_path, False)
    t = by_threads.run(RunParams(symbols=syms))
    by_procs, marks = engine(settings.with_(data_dir=tmp_path / "p"), fixed_clock, tmp_path, True)
    p = by_procs.run(RunParams(symbols=syms))

    assert len(worker_pids(marks)) == 2  # the work ran in two other processes
    assert (t.state, t.ok, t.records) == (p.state, p.ok, p.records) == ("succeeded", 6, t.records)
    for name in DATASETS:
        a, b = by_threads.store.lake.read(name), by_procs.store.lake.read(name)
        assert a.height > 0 and a.equals(b), name
    for table in ("tasks", "fetch_log", "compute_log", "symbol_status", "quality_log",
                  "session_coverage"):
        sql = f"SELECT count(*) FROM {table}"
        n = by_threads.store.catalog.scalar(sql)
        assert n > 0 and by_procs.store.catalog.scalar(sql) == n, table
    # The run's own row has the counts the workers reported.
    row = by_procs.store.catalog.query(
        "SELECT state, symbols_ok, records_written FROM runs WHERE run_id = ?", [p.run_id])
    assert row.row(0) == ("succeeded", 6, p.records)
    # A second run finds nothing new, in processes too.
    again = by_procs.run(RunParams(symbols=syms))
    assert again.records == 0 and again.skipped == 6


def test_a_dead_worker_fails_only_the_symbols_in_hand(settings, fixed_clock, tmp_path):
    eng, marks = engine(settings, fixed_clock, tmp_path, True, crash="AAAA")
    summary = eng.run(RunParams())
    by_sym = {r.symbol: r for r in summary.results}
    assert sorted(by_sym) == sorted(s for s, _, _ in UNIVERSE)
    assert by_sym["AAAA"].state == "failed"
    assert "worker process" in str(by_sym["AAAA"].errors[0])
    # At most the symbols then queued to the broken pool (2 workers × 2 each) fail; a new
    # pool enriches the rest.
    assert summary.state == "partial" and 1 <= summary.failed <= 4
    assert summary.ok == len(UNIVERSE) - summary.failed
    assert len(worker_pids(marks)) >= 3  # the first pool's two workers, then a new one
    tasks = eng.store.catalog.query(
        "SELECT symbol, state, error_message FROM tasks WHERE run_id = ?", [summary.run_id])
    assert tasks.height == len(UNIVERSE)
    failed = tasks.filter(tasks["state"] == "failed")
    assert "AAAA" in failed["symbol"].to_list() and failed.height == summary.failed
    ok = [r.symbol for r in summary.results if r.state == "ok"]
    assert set(eng.store.lake.read("bars")["symbol"].unique()) == set(ok)


class StuckProvider(MarkedProvider):
    """Marks its process, then never answers for bars: workers stay busy until stopped."""

    def bars(self, symbol, timeframe, start, end):
        time.sleep(600)
        return super().bars(symbol, timeframe, start, end)

    def process_factory(self):
        return functools.partial(StuckProvider, self.marks)


_KILLED_RUN = """
import datetime as dt, sys
from enrich.config import load_settings
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from tests.test_workers import UNIVERSE, StuckProvider
settings = load_settings({"ENRICH_DATA_DIR": sys.argv[1], "ENRICH_SCHEDULER": "off"},
                         dotenv_path=None).with_(max_concurrent_symbols=2)
store = Store.from_settings(settings)
add_symbols(store.catalog, UNIVERSE[:-1])
clock = lambda: dt.datetime(2026, 11, 25, 22, tzinfo=dt.UTC)
eng = Engine(store, StuckProvider(sys.argv[2], clock=clock), settings, clock=clock)
eng.process_min_symbols = 2
eng.run(RunParams())
"""


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie, not reaped yet, counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")
def test_workers_exit_when_the_run_process_is_killed(tmp_path):
    # Found by a QA pass: `kill -9` of a run left its forkserver's workers running for good.
    marks = tmp_path / "marks"
    marks.mkdir()
    run = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(tmp_path / "data"),
                            str(marks)], env=subprocess_env(tmp_path / "data"), cwd=REPO,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # a generous bound for a loaded machine
        while len(worker_pids(marks) - {run.pid}) < 2:
            assert run.poll() is None and time.monotonic() < deadline, "no workers started"
            time.sleep(0.05)
        workers = worker_pids(marks) - {run.pid}
        assert not any(_gone(pid) for pid in workers)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 60
        while not all(_gone(pid) for pid in workers):
            assert time.monotonic() < deadline, "workers outlived their run"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # whatever is left: the forkserver, workers
        run.wait()


def test_cancel_stops_handing_out_symbols(settings, fixed_clock, tmp_path):
    eng, _ = engine(settings, fixed_clock, tmp_path, True)
    cancel = threading.Event()
    summary = eng.run(RunParams(symbols=["AAPL", "SPY", "NVDA", "X:BTCUSD", "MSFT", "QQQ"]),
                      cancel=cancel, progress=lambda n, total, res: cancel.set())
    states = [r.state for r in summary.results]
    assert summary.state == "cancelled" and len(states) == 6
    # The first result cancels; only symbols already handed to workers still finish.
    assert 1 <= states.count("ok") <= 4 and states.count("cancelled") >= 2
    running = eng.store.catalog.scalar(
        "SELECT count(*) FROM tasks WHERE run_id = ? AND state = 'running'", [summary.run_id])
    assert running == 0


@pytest.mark.parametrize(("n", "workers", "rate_limited", "factory", "expected"), [
    (500, 5, False, True, min(5, usable_cpus() + 1)),  # one spare for disk waits
    (10, 5, False, True, 0),       # a small run: starting processes costs more than it saves
    (500, 5, True, True, 0),       # a network provider shares one rate limiter: threads
    (500, 5, False, False, 0),     # a provider that cannot be rebuilt in a worker
    (500, 1, False, True, 0),      # one worker asked for
])
def test_when_a_run_uses_processes(n, workers, rate_limited, factory, expected):
    class P:
        pass

    p = P()
    p.rate_limited = rate_limited
    p.process_factory = (lambda: object) if factory else (lambda: None)
    got = process_count(p, n, workers)
    assert got == (expected if usable_cpus() > 1 else 0)
