"""Where the desk's files go: a read never creates a desk, workers touch only the run's own
data directory, and a catalog is created only by opening a store.

- A read-only command on a data directory that holds no desk (a mistyped ``ENRICH_DATA_DIR``
  or ``--data-dir``) exits 2 naming the path and creates nothing there; the commands that
  start a desk (``run``, ``symbols add|import``, ``serve``, ``backfill DATASET``) still do.
- Worker processes of a run open the run's store, never the data directory their settings
  name (``./data`` by default), wherever the run's process works from.
"""

from __future__ import annotations

import functools
import os
import sys
import types
from pathlib import Path

import pytest

from enrich import cli
from enrich.config import load_settings
from enrich.errors import ConfigError
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.providers.sample.provider import SampleProvider
from enrich.store.catalog import Catalog
from enrich.store.store import Store
from enrich.store.universe import add_symbols

# Every command that only reads (or acts on what a desk already holds), as a user types it.
READS = [
    ["status"], ["status", "--json"], ["runs"], ["runs", "list", "--limit", "5"],
    ["runs", "retry", "r1"], ["runs", "cancel", "r1"],
    ["symbols", "list"], ["symbols", "list", "--json"], ["symbols", "remove", "AAPL"],
    ["symbols", "deactivate", "AAPL"], ["symbols", "activate", "AAPL"],
    ["entitlements"], ["entitlements", "list"], ["entitlements", "recheck"],
    ["schedule"], ["schedule", "show"], ["schedule", "pause"], ["schedule", "resume"],
    ["health", "--no-probe"], ["health", "--json", "--no-probe"],
    ["backfill", "list"], ["backfill", "show", "b1"], ["backfill", "pause", "b1"],
    ["backfill", "cancel", "b1"], ["backfill", "resume", "b1"],
    ["quality"], ["quality", "--failing"], ["quality", "audit"],
    ["coverage", "--dataset", "bars"],
    ["fill", "--dataset", "bars", "--symbols", "AAPL", "--from", "2026-11-02",
     "--to", "2026-11-06"],
    ["alerts"], ["alerts", "list"], ["alerts", "show", "i1"], ["alerts", "ack", "i1"],
    ["alerts", "snooze", "i1"], ["alerts", "unsnooze", "i1"], ["alerts", "check"],
    ["alerts", "test"], ["api", "token"],
]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no developer .env; a stray ./data would land here
    monkeypatch.setenv("ENRICH_HISTORY_YEARS", "1")
    return tmp_path


@pytest.mark.parametrize("argv", READS, ids=" ".join)
def test_a_read_of_a_mistyped_data_dir_refuses_and_creates_nothing(argv, home, monkeypatch,
                                                                     capsys):
    typo = home / "desk-typo"
    monkeypatch.setenv("ENRICH_DATA_DIR", str(typo))
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no desk at "), err
    assert str(typo) in lines[0] and "ENRICH_DATA_DIR" in lines[0]
    assert "python -m enrich run" in lines[0]  # what to do
    assert out == ""
    assert not typo.exists()
    assert _tree(home) == []  # and no ./data either


def test_the_data_dir_option_is_named_when_it_is_the_typo(home, capsys):
    typo = home / "elsewhere" / "dat"
    assert cli.main(["--data-dir", str(typo), "status"]) == 2
    err = capsys.readouterr().err
    assert f"no desk at {typo}" in err and "--data-dir" in err
    assert _tree(home) == []


@pytest.mark.parametrize("argv", [["status"], ["runs"], ["symbols", "list"],
                                  ["coverage", "--dataset", "bars"]], ids=" ".join)
def test_an_empty_folder_is_no_desk_either(argv, home, monkeypatch, capsys):
    """A fresh clone's ``data/`` (only ``.gitkeep``) before the first run: a read says so."""
    data = home / "data"
    data.mkdir()
    (data / ".gitkeep").touch()
    assert cli.main(argv) == 2  # ENRICH_DATA_DIR unset: the default ./data
    err = capsys.readouterr().err
    assert f"no desk at {data.resolve()}" in err
    assert _tree(home) == ["data", "data/.gitkeep"]


def test_the_commands_that_start_a_desk_still_create_it(home, monkeypatch, capsys):
    added = home / "added"
    assert cli.main(["--data-dir", str(added), "symbols", "add", "AAPL"]) == 0
    assert (added / "enrich.duckdb").is_file()
    imported = home / "imported"
    (home / "u.csv").write_text("MSFT,stocks,Microsoft\n")
    assert cli.main(["--data-dir", str(imported), "symbols", "import", str(home / "u.csv")]) == 0
    assert (imported / "enrich.duckdb").is_file()
    seeded = home / "seeded"
    assert cli.main(["--data-dir", str(seeded), "symbols", "list", "--seed-demo"]) == 0
    assert (seeded / "enrich.duckdb").is_file()
    planned = home / "planned"  # a dry run plans on a scratch desk, as `run --dry-run` does
    assert cli.main(["--data-dir", str(planned), "backfill", "bars", "--symbol", "AAPL",
                     "--days", "5", "--dry-run"]) == 0
    assert not planned.exists()
    assert cli.main(["--data-dir", str(planned), "backfill", "bars", "--symbol", "AAPL",
                     "--days", "5"]) == 0
    assert (planned / "enrich.duckdb").is_file()
    capsys.readouterr()
    # …and a read of the desk so made answers.
    assert cli.main(["--data-dir", str(added), "symbols", "list", "--json"]) == 0
    assert '"symbol": "AAPL"' in capsys.readouterr().out


def test_a_run_creates_the_desk_and_a_lost_catalog_is_still_a_desk(home, monkeypatch, capsys):
    data = home / "new"
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    assert cli.main(["run", "--symbols", "AAPL", "--datasets", "bars", "--json"]) in (0, 1)
    assert (data / "enrich.duckdb").is_file()
    # The catalog lost (deleted by hand), the lake kept: still a desk, and a read brings the
    # universe back from the lake, as opening a store always did.
    for p in data.glob("enrich.duckdb*"):
        p.unlink()
    capsys.readouterr()
    assert cli.main(["symbols", "list", "--json"]) == 0
    assert '"symbol": "AAPL"' in capsys.readouterr().out


# -- worker processes --------------------------------------------------------------------------
class MarkedProvider(SampleProvider):
    """The sample provider, leaving a file named after each process that builds it."""

    def __init__(self, marks: str, **kw):
        super().__init__(**kw)
        self.marks = marks
        Path(marks, str(os.getpid())).touch()

    def process_factory(self):
        return functools.partial(MarkedProvider, self.marks)


def test_worker_processes_touch_only_the_runs_data_dir(tmp_path, fixed_clock, monkeypatch):
    """The run's store is elsewhere; its settings name no data directory (``./data``, the
    default): the workers enrich into the run's store and create nothing where the run's
    process works (workers start in its working directory)."""
    cwd, desk, marks = tmp_path / "cwd", tmp_path / "desk", tmp_path / "marks"
    cwd.mkdir()
    marks.mkdir()
    monkeypatch.chdir(cwd)
    settings = load_settings({"ENRICH_SCHEDULER": "off", "ENRICH_HISTORY_YEARS": "1",
                              "ENRICH_MAX_CONCURRENT_SYMBOLS": "2"}, dotenv_path=None)
    assert settings.data_dir == Path("data")
    store = Store(desk)
    syms = [("AAPL", "stocks", "Apple"), ("MSFT", "stocks", "Microsoft"),
            ("SPY", "etfs", "SPDR S&P 500")]
    add_symbols(store.catalog, syms)
    engine = Engine(store, MarkedProvider(str(marks), clock=fixed_clock), settings,
                    clock=fixed_clock)
    engine.process_min_symbols = 2
    summary = engine.run(RunParams(datasets=["bars"]))

    assert {int(p.name) for p in marks.iterdir()} - {os.getpid()}  # workers did the work
    assert (summary.state, summary.ok) == ("succeeded", 3), [
        (r.symbol, [str(e) for e in r.errors]) for r in summary.results]
    assert set(store.lake.read("bars")["symbol"].unique()) == {s for s, _, _ in syms}
    assert _tree(cwd) == []


# -- the catalog -------------------------------------------------------------------------------
def test_a_catalog_read_never_creates_the_catalog(tmp_path):
    missing = tmp_path / "nowhere" / "enrich.duckdb"
    with pytest.raises(ConfigError, match="does not exist"):
        Catalog(missing).query("SELECT 1")
    assert _tree(tmp_path) == []


def test_a_catalog_deleted_under_an_open_store_is_not_recreated_empty(tmp_path):
    """A long-lived process (the dashboard, serve) whose catalog was deleted by hand: its
    reads say so, instead of creating an empty file whose tables do not exist."""
    store = Store(tmp_path / "data")
    add_symbols(store.catalog, [("AAPL", "stocks", "Apple")])
    for p in (tmp_path / "data").glob("enrich.duckdb*"):
        p.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        store.catalog.query("SELECT * FROM symbols")
    assert not (tmp_path / "data" / "enrich.duckdb").exists()
    # Opening a store creates it again (the universe comes back from the lake, here none).
    assert Store(tmp_path / "data").catalog.scalar("SELECT count(*) FROM symbols") == 0


def test_worker_processes_of_a_dashboard_run_do_not_run_the_dashboard(tmp_path, fixed_clock,
                                                                      monkeypatch):
    """Streamlit runs app.py as the ``__main__`` module, and multiprocessing runs the parent's
    main script again in every worker process before its work (as ``__mp_main__``, in the
    parent's working directory). app.py's body started the services there — a Services
    object, its scheduler and a desk at ./data of that directory, once per worker. Here
    ``__main__`` is app.py as under Streamlit (an AppTest earlier in the process leaves it so
    too); the workers must create nothing in the working directory."""
    cwd, desk, marks = tmp_path / "cwd", tmp_path / "desk", tmp_path / "marks"
    cwd.mkdir()
    marks.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("ENRICH_DATA_DIR", raising=False)
    dashboard = types.ModuleType("__main__")
    dashboard.__file__ = str(Path(__file__).resolve().parents[1] / "app.py")
    monkeypatch.setitem(sys.modules, "__main__", dashboard)
    settings = load_settings({"ENRICH_SCHEDULER": "off", "ENRICH_HISTORY_YEARS": "1",
                              "ENRICH_MAX_CONCURRENT_SYMBOLS": "2"}, dotenv_path=None)
    store = Store(desk)
    add_symbols(store.catalog, [("AAPL", "stocks", "Apple"), ("MSFT", "stocks", "Microsoft")])
    engine = Engine(store, MarkedProvider(str(marks), clock=fixed_clock), settings,
                    clock=fixed_clock)
    engine.process_min_symbols = 2
    summary = engine.run(RunParams(datasets=["bars"]))

    assert {int(p.name) for p in marks.iterdir()} - {os.getpid()}  # workers did the work
    assert (summary.state, summary.ok) == ("succeeded", 2), [
        (r.symbol, [str(e) for e in r.errors]) for r in summary.results]
    assert _tree(cwd) == [], _tree(cwd)


def test_a_dry_run_where_there_is_no_desk_plans_the_first_run_and_creates_nothing(
        home, monkeypatch, capsys):
    """``run --dry-run`` is how a new user previews what the first run will cost: it plans
    that run (the demo universe the run would start with) in a scratch desk it deletes, and
    creates nothing where it was pointed, not even at a mistyped path (before, it created a
    desk there). The run itself then makes exactly the planned requests."""
    import json
    import tempfile

    monkeypatch.setenv("ENRICH_NOW", "2026-11-25T22:00:00Z")
    monkeypatch.setenv("TMPDIR", str(home / "tmp"))
    (home / "tmp").mkdir()
    tempfile.tempdir = None  # TMPDIR is read again
    try:
        fresh = home / "fresh"
        assert cli.main(["--data-dir", str(fresh), "run", "--dry-run", "--json"]) == 0
        out, err = capsys.readouterr()
        plan = json.loads(out)
        assert f"no desk at {fresh.resolve()} yet" in err and "nothing was created" in err
        assert plan["requests"] > 0
        assert _tree(home) == ["tmp"]  # the scratch desk is gone too
        assert cli.main(["--data-dir", str(fresh), "run", "--dry-run", "--symbols",
                         "NOPE"]) == 2
        assert "NOPE not in the universe" in capsys.readouterr().err
        assert _tree(home) == ["tmp"]
        assert cli.main(["--data-dir", str(fresh), "run", "--json"]) == 0
        ran = json.loads(capsys.readouterr().out)
        assert ran["requests"] == plan["requests"]
    finally:
        tempfile.tempdir = None
