"""One bad file never stops the desk.

A truncated Parquet file: views build over the readable files, the bad one is moved to
``lake/_quarantine/`` with a catalog record, its symbol × dataset reads *failing* with
"corrupt file, re-fetch", and the next run fetches its history again; ``status``, ``health``,
``run``, ``symbols list`` and every page keep working, and ``health`` names the file. A catalog
that is not a DuckDB database is moved aside and rebuilt, its universe from the lake's symbols.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from enrich.calendars import sessions
from enrich.config import load_settings
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.providers.sample.provider import SampleProvider
from enrich.store.catalog import WriteBatch
from enrich.store.lake import Lake
from enrich.store.store import Store
from enrich.store.universe import add_symbols, list_symbols
from tests.conftest import FIXED_NOW, REPO, subprocess_env

SYMS = ["AAPL", "SPY", "IBM"]  # IBM is not in the demo universe
LATER = FIXED_NOW + dt.timedelta(days=2)  # Friday (Thursday is Thanksgiving): one session more
APP = str(Path(REPO) / "app.py")
PAGES = ["pages/overview.py", "pages/symbols.py", "pages/runs.py", "pages/metrics.py",
         "pages/quality.py", "pages/health.py", "pages/controls.py", "pages/backfill.py",
         "pages/settings.py"]


def _settings(data: Path):
    return load_settings({"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off",
                          "ENRICH_HISTORY_YEARS": "1"}, dotenv_path=None)


def _engine(data: Path, now: dt.datetime) -> Engine:
    store = Store.from_settings(_settings(data))
    clock = lambda: now  # noqa: E731
    return Engine(store, SampleProvider(clock=clock), _settings(data), clock=clock)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bars_file(data: Path, symbol: str = "AAPL") -> Path:
    return data / "lake" / "bars" / "timeframe=1d" / f"symbol={symbol}" / "data.parquet"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A store after one run over a custom universe (AAPL, SPY, IBM)."""
    data = tmp_path_factory.mktemp("q") / "data"
    store = Store.from_settings(_settings(data))
    add_symbols(store.catalog, [("AAPL", None, "Apple Inc."), ("SPY", "etfs", None),
                                ("IBM", None, "International Business Machines")])
    summary = _engine(data, FIXED_NOW).run(RunParams(symbols=SYMS))
    assert summary.state == "succeeded"
    return data, store.lake.read("bars", ["AAPL"]).height


@pytest.fixture
def data(template, tmp_path):
    src, _ = template
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    Store.from_settings(_settings(dst)).catalog.refresh_views()  # views point at the copy
    return dst


def _status(store: Store, symbol: str, dataset: str) -> dict:
    rows = store.catalog.query("SELECT * FROM symbol_status WHERE symbol = ? AND dataset = ?",
                               [symbol, dataset])
    return rows.row(0, named=True)


def test_a_run_quarantines_a_corrupt_file_and_the_next_run_fetches_its_history(data, template):
    _, full_height = template
    _truncate(_bars_file(data))
    eng = _engine(data, LATER)
    first = eng.run(RunParams(symbols=["AAPL"]))
    # The symbol fails, visibly: the file is gone from the lake, kept in the quarantine.
    assert first.failed == 1 and first.errors_by_class == {"corrupt": 1}
    store = eng.store
    status = _status(store, "AAPL", "bars")
    assert status["consecutive_failures"] >= 1 and status["last_error_class"] == "corrupt"
    assert status["last_error_message"].startswith("corrupt file, re-fetch:")
    assert not _bars_file(data).exists()
    moved = list((data / "lake" / "_quarantine").rglob("*-data.parquet"))
    assert len(moved) == 1 and "symbol=AAPL" in str(moved[0])
    rec = store.catalog.query("SELECT * FROM quarantine")
    assert rec["original"].to_list() == ["lake/bars/timeframe=1d/symbol=AAPL/data.parquet"]
    assert "bars:1d" not in store.lake.read_coverage("AAPL")  # other datasets moved on …
    assert store.lake.read_coverage("AAPL")["dividends"] == LATER.date()
    assert store.lake.read("bars", ["AAPL"]).is_empty()

    second = _engine(data, LATER).run(RunParams(symbols=["AAPL"]))
    assert second.state == "succeeded"
    refetched = store.lake.read("bars", ["AAPL"])
    year = sessions("XNYS", LATER.date() - dt.timedelta(days=365), LATER.date())
    assert refetched["session"].to_list() == year  # the whole year again, through Friday
    assert len(year) > full_height - 5
    assert _status(store, "AAPL", "bars")["consecutive_failures"] == 0


def test_views_build_over_readable_files_and_quarantine_the_others(data):
    _truncate(_bars_file(data))
    store = Store.from_settings(_settings(data))
    store.catalog.refresh_views()  # what a migration or a moved data dir does
    got = store.catalog.query("SELECT DISTINCT symbol FROM bars ORDER BY 1")["symbol"]
    assert got.to_list() == ["IBM", "SPY"]
    status = _status(store, "AAPL", "bars")
    assert status["last_error_class"] == "corrupt" and status["consecutive_failures"] >= 1
    assert store.catalog.scalar("SELECT count(*) FROM quarantine") == 1


def test_a_file_that_cannot_be_moved_now_is_left_out_of_the_view_until_it_can(data):
    _truncate(_bars_file(data))
    store = Store.from_settings(_settings(data))
    other = Lake(data / "lake", lock_dir=data / "locks")  # as another process would
    with other.symbol_lock("AAPL"):  # an enrichment of AAPL holds it: no move now
        store.catalog.refresh_views()
        assert store.catalog.query("SELECT DISTINCT symbol FROM bars ORDER BY 1")[
            "symbol"].to_list() == ["IBM", "SPY"]
        assert _bars_file(data).exists()  # left out of the view, still in place
        assert store.catalog.scalar("SELECT count(*) FROM quarantine") == 0
    b = WriteBatch()
    b.execute("UPDATE scheduler_state SET paused = paused WHERE id = 1")
    store.catalog.write(b)  # the next write retries the view, and can move it now
    assert not _bars_file(data).exists()
    assert store.catalog.scalar("SELECT count(*) FROM quarantine") == 1
    view = store.catalog.scalar(
        "SELECT sql FROM duckdb_views() WHERE view_name = 'bars'")
    assert "read_parquet([" not in view  # the glob again: new symbols' files show up


def _cli(data: Path, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enrich", *args], cwd=REPO,
                          env=subprocess_env(data, ENRICH_HISTORY_YEARS="1",
                                             ENRICH_NOW=LATER.isoformat(), **env),
                          capture_output=True, text=True, timeout=300)


def test_every_command_works_with_a_truncated_file_and_health_names_it(data, tmp_path):
    moved = tmp_path / "restored"
    shutil.move(data, moved)  # a restored data dir: every view is rebuilt on open
    _truncate(_bars_file(moved, "SPY"))
    outs = {}
    for args in (("status",), ("symbols", "list"), ("health", "--json"), ("health",),
                 ("runs",)):
        p = _cli(moved, *args)
        outs[args] = p
        assert "Traceback" not in p.stderr, (args, p.stderr)
        assert p.returncode in (0, 1), (args, p.stderr)
    assert outs[("status",)].returncode == 0 and "failing" in outs[("status",)].stdout
    assert "SPY" in outs[("symbols", "list")].stdout
    h = json.loads(outs[("health", "--json")].stdout)
    assert h["ok"] is False
    waiting = [f["original"] for f in h["lake"]["awaiting_refetch"]]
    assert waiting == ["lake/bars/timeframe=1d/symbol=SPY/data.parquet"]
    assert "lake/bars/timeframe=1d/symbol=SPY/data.parquet" in outs[("health",)].stdout
    run = _cli(moved, "run", "--symbols", "SPY", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["records"] > 200  # the year of bars, fetched again
    after = json.loads(_cli(moved, "health", "--json").stdout)
    assert after["lake"]["awaiting_refetch"] == [] and after["lake"]["unreadable"] == []


def test_health_reads_footers_and_quarantines_what_nobody_read_yet(data):
    path = data / "lake" / "dividends" / "symbol=IBM" / "data.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    store = Store.from_settings(_settings(data))
    from enrich.health import health

    h = health(_settings(data), store, probe=False)
    assert [f["path"] for f in h["lake"]["quarantined_now"]] == \
        ["lake/dividends/symbol=IBM/data.parquet"]
    assert h["ok"] is False and not path.exists()
    assert _status(store, "IBM", "dividends")["last_error_class"] == "corrupt"


@pytest.fixture
def page_env(data, monkeypatch, tmp_path):
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", FIXED_NOW.isoformat())
    monkeypatch.chdir(tmp_path)
    yield data
    from enrich.service import reset_services

    reset_services()


def test_every_page_works_with_a_truncated_file_and_says_so(page_env):
    data = page_env
    _truncate(_bars_file(data))
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/symbols.py")  # the drilldown is the first to read the file
    at.query_params["symbol"] = "AAPL"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("corrupt file, re-fetch" in e for e in errors), errors
    at.run()  # next time: the status table says it, the chart is simply empty
    assert not at.exception
    status = pl.from_pandas(at.dataframe[0].value)
    bars = status.filter(pl.col("dataset") == "bars").row(0, named=True)
    assert "failing" in bars["status"]
    assert "corrupt file, re-fetch" in bars["last_error"]  # "{class}: {message}"
    for page in PAGES:
        at.switch_page(page)
        at.query_params.clear()
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        if page in ("pages/overview.py", "pages/health.py"):
            shown = " ".join(e.value for e in at.error)
            assert "could not be read" in shown, page
            table = pl.concat([pl.from_pandas(d.value) for d in at.dataframe
                               if "file" in d.value.columns])
            assert "lake/bars/timeframe=1d/symbol=AAPL/data.parquet" in table["file"].to_list()


def test_a_garbage_catalog_is_set_aside_and_rebuilt_with_the_lakes_universe(data):
    (data / "enrich.duckdb").write_bytes(b"this is not a database" * 100)
    p = _cli(data, "symbols", "list", "--json")
    assert p.returncode == 0, p.stderr
    assert [r["symbol"] for r in json.loads(p.stdout)] == sorted(SYMS)  # not the demo list
    assert "Run history, logs and statuses from before are lost" in p.stderr
    aside = list(data.glob("enrich.duckdb.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    con = duckdb.connect(str(data / "enrich.duckdb"), read_only=True)
    try:
        kinds = con.execute("SELECT kind, moved_to FROM quarantine").fetchall()
        runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        con.close()
    assert kinds == [("catalog", aside[0].name)] and runs == 0
    info = {r["symbol"]: r for r in json.loads(p.stdout)}
    assert info["SPY"]["asset_class"] == "etfs" and info["IBM"]["asset_class"] == "stocks"


def test_a_deleted_catalog_gets_its_universe_back_from_the_lake_not_the_demo(data):
    (data / "enrich.duckdb").unlink()
    run = _cli(data, "run", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["total"] == len(SYMS)
    assert "the universe was rebuilt from the lake's 3 symbols" in run.stderr
    store = Store.from_settings(_settings(data))
    assert list_symbols(store.catalog)["symbol"].to_list() == sorted(SYMS)
