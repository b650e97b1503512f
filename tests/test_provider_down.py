"""A run or a backfill whose provider refuses the key, or cannot be reached, stops and says why.

Before, each symbol asked each of its datasets anyway: a wrong key earned a 401 for every
request (six a symbol, at the plan's pace: ten hours of refusals for 500 symbols on the default
five requests a minute), and a machine without network spent every request's retries on it,
symbol after symbol. Now a run stops at the first refusal of the key, or after
``UNREACHABLE_STREAK`` symbols (or universe-wide requests) in a row reached no provider; it
ends ``failed`` with the reason and what to do, leaves the symbols it did not attempt as they
were, and the next run fetches what is missing. A backfill stops likewise and resumes.

The loopback fake (``tests/fakes/massive_server.py``) answers 401 for a key it does not know,
as Massive does (reference ``massive-rest-api.md``, errors table); an address where nothing
listens refuses the connection, as a machine without network (DNS failure, a proxy) fails.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time

import duckdb
import httpx
import pytest

from enrich import cli
from enrich.backfill.jobs import Backfiller, BackfillRequest
from enrich.config import load_settings
from enrich.errors import AuthError, ProviderUnreachableError, TransientError
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import UNREACHABLE_STREAK, Halt, RunParams, StepResult
from enrich.providers.massive.provider import MassiveProvider
from enrich.providers.retry import RetryPolicy
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from tests.fakes.massive_server import FakeMassive, market_tickers

UTC = dt.UTC
FRIDAY = dt.datetime(2026, 11, 20, 23, 0, tzinfo=UTC)  # after Friday's close
SYMS = market_tickers(10)
MAX_RETRIES = 2


def _desk(tmp_path, name: str = "data") -> tuple[Store, object]:
    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / name)}, dotenv_path=None)
    settings = settings.with_(history_years=1, max_concurrent_symbols=1)
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [(s, "stocks", None) for s in SYMS])
    return store, settings


def _provider(key: str, base_url: str) -> MassiveProvider:
    retry = RetryPolicy(max_retries=MAX_RETRIES, sleep=lambda s: None)
    return MassiveProvider(httpx.Client(timeout=10), key, base_url, None,
                           today=lambda: FRIDAY.date(), retry=retry, owns_client=True)


def _closed_port() -> str:
    """An address on this machine where nothing listens (the connection is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _run_row(store: Store, run_id: str) -> tuple[str, str]:
    con = duckdb.connect(str(store.data_dir / "enrich.duckdb"), read_only=True)
    try:
        return con.execute("SELECT state, message FROM runs WHERE run_id = ?",
                           [run_id]).fetchone()
    finally:
        con.close()


def test_a_refused_key_stops_the_run_at_the_first_refusal(tmp_path):
    store, settings = _desk(tmp_path)
    with FakeMassive(symbols=SYMS, today=FRIDAY.date()) as fake:
        with _provider("not-the-key", fake.base_url) as p:
            summary = Engine(store, p, settings, clock=lambda: FRIDAY).run(RunParams())
        refused = fake.statuses()[401]
    assert refused == 1  # was one a dataset a symbol: 60 here
    assert summary.state == "failed"
    assert "rejected the API key" in summary.stopped and "MASSIVE_API_KEY" in summary.stopped
    assert summary.failed + summary.not_attempted == len(SYMS)
    assert summary.not_attempted >= len(SYMS) - 1
    state, message = _run_row(store, summary.run_id)
    assert state == "failed" and message.startswith("stopped early: ")
    assert "not attempted (left as they were)" in message
    assert "not-the-key" not in message
    assert store.lake.read("bars", list(SYMS)).is_empty()


def _slow(n: int, total: int, res) -> None:
    """A run's thread slowed down, as on a loaded machine (CI): before, its one worker ran
    symbols ahead of the stop the run's thread had not taken in yet (10 retries, not 6)."""
    time.sleep(0.2)


@pytest.mark.parametrize("progress", [None, _slow], ids=["quiet", "loaded"])
def test_a_provider_out_of_reach_stops_the_run_after_a_few_in_a_row(tmp_path, progress):
    store, settings = _desk(tmp_path)
    with _provider("some-key", _closed_port()) as p:
        summary = Engine(store, p, settings, clock=lambda: FRIDAY).run(RunParams(),
                                                                       progress=progress)
    assert summary.state == "failed"
    assert "could not be reached" in summary.stopped
    assert "check the network" in summary.stopped
    assert summary.errors_by_class.keys() <= {"unreachable"}
    # Each of the streak's steps spent its retries, and nothing more was tried but by a
    # symbol the worker had already begun when the streak ended (one worker here). Before:
    # every dataset of every symbol, 6 x 10 x 3 attempts, and the universe-wide requests'.
    in_flight = settings.max_concurrent_symbols
    assert 0 < summary.retries <= (UNREACHABLE_STREAK + in_flight) * MAX_RETRIES
    # No attempt reached the provider: none is a request of the plan's quota.
    assert summary.requests == 0
    assert summary.failed + summary.not_attempted == len(SYMS)
    assert summary.not_attempted >= len(SYMS) - UNREACHABLE_STREAK - in_flight


def test_the_cli_exits_1_and_says_why_it_stopped(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    _desk(tmp_path)
    with FakeMassive(symbols=SYMS, today=FRIDAY.date()) as fake:
        for name, value in {"ENRICH_DATA_DIR": str(data), "MASSIVE_API_KEY": "not-the-key",
                            "MASSIVE_BASE_URL": fake.base_url, "ENRICH_MAX_RETRIES": "0",
                            "ENRICH_RATE_LIMIT_PER_MIN": "6000",
                            "ENRICH_NOW": FRIDAY.isoformat()}.items():
            monkeypatch.setenv(name, value)
        code = cli.main(["run", "--json"])
        refused = fake.statuses()[401]
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and refused == 1
    assert out["state"] == "failed" and "MASSIVE_API_KEY" in out["stopped"]
    assert out["not_attempted"] + out["failed"] == len(SYMS)
    assert out["message"].startswith("stopped early: ")


def test_a_backfill_stops_at_a_refused_key_and_resumes_with_the_right_one(tmp_path):
    store, settings = _desk(tmp_path)
    request = BackfillRequest("dividends", SYMS[:4], since=dt.date(2025, 1, 1),
                              until=FRIDAY.date(), chunk_days=60)
    with FakeMassive(symbols=SYMS, today=FRIDAY.date()) as fake:
        with _provider("not-the-key", fake.base_url) as p:
            bf = Backfiller(store, p, settings, clock=lambda: FRIDAY)
            plan = bf.plan(request)
            stopped = bf.run(plan)
        assert fake.statuses()[401] == 1  # one chunk asked, not all of them
        assert stopped.state == "failed" and stopped.message.startswith("stopped early: ")
        assert "backfill resume" in stopped.message
        assert stopped.left == stopped.total - 1  # the others left pending, as they were
        with _provider(fake.api_key, fake.base_url) as p:
            bf = Backfiller(store, p, settings, clock=lambda: FRIDAY)
            resumed = bf.run(bf.plan(request), retry_failed=True)
            rest = bf.run(bf.plan(request))
    # The failed chunk (the first symbol's ticker reference: none is held yet); the rest:
    # every other chunk, each symbol's features after its dividends.
    assert resumed.state == "succeeded" and resumed.done == 1
    assert rest.state == "succeeded" and rest.done == stopped.total - 1


# -- what stops a run, step by step --------------------------------------------------------------
def _out_of_reach() -> StepResult:
    return StepResult("bars", "failed", error=ProviderUnreachableError("AAPL bars: cannot reach"))


def test_the_streak_counts_only_symbols_that_reached_no_provider_in_a_row():
    import threading

    cancel = threading.Event()
    halt = Halt(cancel)
    for _ in range(UNREACHABLE_STREAK - 1):
        halt.saw([_out_of_reach()])
    halt.saw([StepResult("bars", "up_to_date")])  # asked nothing: neither way
    halt.saw([StepResult("bars", "ok"), _out_of_reach()])  # an answer: the provider is there
    for _ in range(UNREACHABLE_STREAK - 1):
        halt.saw([_out_of_reach()])
    halt.saw([StepResult("bars", "failed", error=TransientError("HTTP 503"))])  # answered
    assert halt.reason is None and not cancel.is_set()
    for _ in range(UNREACHABLE_STREAK):
        halt.saw([_out_of_reach()])
    assert cancel.is_set() and "could not be reached" in halt.reason


@pytest.mark.parametrize("steps_before", [0, 1, 5])
def test_a_refused_key_stops_at_once_and_the_first_reason_is_kept(steps_before):
    import threading

    cancel = threading.Event()
    halt = Halt(cancel)
    for _ in range(steps_before):
        halt.saw([StepResult("bars", "ok")])
    halt.saw([StepResult("news", "failed", error=AuthError("rejected the API key"))])
    first = halt.reason
    for _ in range(UNREACHABLE_STREAK):
        halt.saw([_out_of_reach()])
    assert cancel.is_set() and first is not None and "rejected the API key" in first
    assert halt.reason == first
