import concurrent.futures as cf
import datetime as dt
import gc
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from enrich.errors import CatalogBusyError
from enrich.store import catalog
from enrich.store.catalog import WAITING_NOTE, Catalog, WriteBatch, utcnow
from enrich.store.lake import Lake
from enrich.store.migrations import MIGRATIONS
from tests.conftest import REPO


def migrated(tmp_path) -> Catalog:
    cat = Catalog(tmp_path / "enrich.duckdb")
    cat.migrate()
    return cat


def fetched(symbol: str = "A", dataset: str = "bars", **more) -> dict:
    """A fetch_log row."""
    return {"symbol": symbol, "dataset": dataset, "started_at": utcnow(), "status": "ok", **more}


def test_migrations_are_numbered_recorded_and_idempotent(tmp_path):
    cat = Catalog(tmp_path / "enrich.duckdb")
    assert cat.migrate() == [m[0] for m in MIGRATIONS]
    assert cat.migrate() == []
    versions = cat.query("SELECT version FROM schema_migrations ORDER BY version")
    assert versions["version"].to_list() == [m[0] for m in MIGRATIONS]
    tables = set(cat.query("SELECT table_name FROM information_schema.tables")["table_name"])
    for t in ("symbols", "runs", "tasks", "fetch_log", "compute_log", "symbol_status",
              "backfill_progress", "scheduler_state", "data_version"):
        assert t in tables


def test_every_write_bumps_the_data_version(tmp_path):
    cat = migrated(tmp_path)
    v0 = cat.data_version()
    b = WriteBatch()
    b.insert("fetch_log", fetched())
    cat.write(b)
    assert cat.data_version() == v0 + 1
    cat.write(WriteBatch())  # an empty batch is not a write
    assert cat.data_version() == v0 + 1


def test_a_write_reads_its_follow_up_query_after_the_commit(tmp_path):
    cat = migrated(tmp_path)
    count = ("SELECT count(*) FROM fetch_log WHERE symbol = ?", ["A"])
    b = WriteBatch()
    for dataset in ("bars", "news"):
        b.insert("fetch_log", fetched("A", dataset))
    assert cat.write(b, then=count) == 2  # sees the batch it follows
    assert cat.write(WriteBatch(), then=count) == 2  # nothing to write: still answered
    v = cat.data_version()
    b = WriteBatch()
    b.insert("fetch_log", fetched("A", "splits"))
    assert cat.write(b, then=("SELECT no_such_column FROM runs", [])) is None
    assert cat.data_version() == v + 1 and cat.scalar(*count) == 3  # committed regardless


def test_upsert_updates_only_given_columns(tmp_path):
    cat = migrated(tmp_path)
    b = WriteBatch()
    b.upsert("symbol_status", {"symbol": "A", "dataset": "bars", "rows_held": 5,
                               "last_error_class": "auth"})
    cat.write(b)
    b = WriteBatch()
    b.upsert("symbol_status", {"symbol": "A", "dataset": "bars", "rows_held": 7})
    cat.write(b)
    row = cat.query("SELECT rows_held, last_error_class, not_entitled FROM symbol_status").row(0)
    assert row == (7, "auth", False)


def test_views_cover_every_dataset_even_before_data(tmp_path):
    cat = Catalog(tmp_path / "enrich.duckdb", lake_root=tmp_path / "lake")
    cat.migrate()
    for ds in ("bars", "dividends", "splits", "earnings", "news", "options_iv", "features"):
        assert cat.query(f"SELECT count(*) AS n FROM {ds}")["n"][0] == 0
    Lake(tmp_path / "lake").upsert("dividends", pl.DataFrame(
        {"symbol": ["A"], "ex_date": [utcnow().date()], "cash_amount": [1.0]}))
    cat.refresh_views()
    assert cat.query("SELECT count(*) AS n FROM dividends")["n"][0] == 1
    # and a plain duckdb connection sees the same
    con = duckdb.connect(str(tmp_path / "enrich.duckdb"))
    try:
        assert con.execute("SELECT count(*) FROM dividends").fetchone()[0] == 1
    finally:
        con.close()


def test_busy_catalog_fails_with_the_holder_named(tmp_path):
    path = tmp_path / "enrich.duckdb"
    Catalog(path).migrate()
    # The holder keeps the file until told (it slept 30 s, which a slow machine could outlast
    # before the catalog gave up); giving up is shown by an answer while it still holds the
    # file, within a generous bound, not by a stopwatch.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb,sys; c=duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        cat = Catalog(path, timeout_s=0.5)
        pool = cf.ThreadPoolExecutor(1)
        try:
            err = pool.submit(cat.data_version).exception(timeout=120)
        finally:
            pool.shutdown(wait=False)
        assert holder.poll() is None  # it gave up while the file was still held
        assert isinstance(err, CatalogBusyError) and "held open by another program" in str(err)
        assert str(holder.pid) in str(err) or "PID" in str(err)
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdin.close()
        holder.stdout.close()
    assert Catalog(path).data_version() >= 0  # usable again once released


def test_last_row_per_key_wins_within_a_batch_column_by_column(tmp_path):
    cat = migrated(tmp_path)
    b = WriteBatch()
    b.upsert("symbol_status", {"symbol": "A", "dataset": "bars", "rows_held": 5,
                               "last_error_class": "auth"})
    b.upsert("symbol_status", {"symbol": "B", "dataset": "bars", "rows_held": 1})
    b.upsert("symbol_status", {"symbol": "A", "dataset": "bars", "rows_held": 7})
    b.execute("UPDATE symbol_status SET sessions_behind = rows_held + 1")  # after the rows
    cat.write(b)
    rows = cat.query("SELECT symbol, rows_held, last_error_class, sessions_behind, not_entitled "
                     "FROM symbol_status ORDER BY symbol").rows()
    assert rows == [("A", 7, "auth", 8, False), ("B", 1, None, 2, False)]


def test_values_of_other_python_types_are_converted_as_before(tmp_path):
    """Plain values are staged typed from the table; anything else is inferred, then CAST."""
    cat = migrated(tmp_path)
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    b = WriteBatch()
    b.insert("fetch_log", {"symbol": "A", "dataset": "bars", "started_at": at, "status": "ok",
                           "duration_ms": 3, "records": 5, "window_start": dt.date(2026, 1, 2)})
    b.insert("fetch_log", {"symbol": "B", "dataset": "bars", "status": "ok",
                           "started_at": dt.datetime(2026, 1, 2, 5, 4, 5, 678901,
                                                     tzinfo=dt.timezone(dt.timedelta(hours=2))),
                           "duration_ms": np.float64(3.0), "records": np.int64(5),
                           "window_start": "2026-01-02"})
    b.upsert("session_coverage", {"symbol": "A", "dataset": "bars", "gaps": [["x", "y"]],
                                  "failed_sessions": []})
    cat.write(b)
    rows = cat.query("SELECT symbol, started_at, duration_ms, records, window_start "
                     "FROM fetch_log ORDER BY symbol").rows()
    assert rows[0][1:] == rows[1][1:] == (at, 3.0, 5, dt.date(2026, 1, 2))
    assert cat.query("SELECT CAST(gaps AS VARCHAR) AS g FROM session_coverage")["g"][0] == \
        '[["x", "y"]]'
    with pytest.raises(ValueError, match="unknown columns"):
        b = WriteBatch()
        b.insert("fetch_log", {"symbol": "A", "nope": 1})
        cat.write(b)


def test_a_failed_write_leaves_nothing_and_releases_the_file(tmp_path):
    cat = migrated(tmp_path)
    v0 = cat.data_version()
    b = WriteBatch()
    b.insert("fetch_log", fetched())
    b.upsert("tasks", {"run_id": "r", "symbol": "A"})  # no state: NOT NULL
    with pytest.raises(duckdb.Error):
        cat.write(b)
    assert cat.data_version() == v0
    assert cat.scalar("SELECT count(*) FROM fetch_log") == 0
    con = duckdb.connect(str(tmp_path / "enrich.duckdb"))  # nothing holds the file
    con.close()


def test_a_migration_refreshes_the_cached_table_shapes(tmp_path, monkeypatch):
    cat = migrated(tmp_path)
    b = WriteBatch()
    b.insert("fetch_log", fetched())
    cat.write(b)
    monkeypatch.setattr(catalog, "MIGRATIONS", [
        *MIGRATIONS, (999, "test", "ALTER TABLE fetch_log ADD COLUMN note VARCHAR;")])
    assert cat.migrate() == [999]
    b = WriteBatch()
    b.insert("fetch_log", fetched("B", note="new"))
    cat.write(b)
    assert cat.scalar("SELECT note FROM fetch_log WHERE symbol = 'B'") == "new"


def test_nested_connections_share_the_attached_file(tmp_path):
    cat = migrated(tmp_path)
    with cat.connect() as outer:
        assert cat.data_version() == 0  # a nested access of the same thread
        assert outer.execute("SELECT current_database()").fetchone()[0] == "enrich"
    con = duckdb.connect(str(tmp_path / "enrich.duckdb"))  # released at the outer block's end
    con.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_survives_the_parents_catalog(tmp_path):
    """The DuckDB instance a Catalog keeps between accesses lost its threads in a forked child;
    destroying it there would crash the child (SIGSEGV)."""
    cat = migrated(tmp_path)
    cat.data_version()
    # Garbage earlier tests left in reference cycles (any library's objects with threads) is
    # freed here, where its threads live: collected in the child, it crashed the child before
    # this catalog was reached (seen after ~400 tests, with filelock 4.3's at-fork hook
    # allocating first). What is tested is the catalog's own instance.
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            cat = None  # the parent's catalog (and what it holds) is freed here
            gc.collect()
            code = 0 if Catalog(tmp_path / "enrich.duckdb").data_version() == 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cat.data_version() == 0


_WAIT_FOR_CATALOG = """
import sys
from enrich.store.catalog import Catalog
from enrich.errors import CatalogBusyError
try:
    Catalog(sys.argv[1], timeout_s=float(sys.argv[2])).data_version()
    print("ok", flush=True)
except CatalogBusyError as exc:
    print(exc, flush=True)
"""


def test_a_held_catalog_names_its_holder_in_every_process(tmp_path):
    """A notebook holds the file; enrich process A waits for it holding the catalog's lock;
    enrich process B, waiting on A, names the notebook too (and A), not "another process"."""
    path = tmp_path / "enrich.duckdb"
    Catalog(path).migrate()
    env = {**os.environ, "PYTHONPATH": REPO}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb,sys; c=duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = None
    try:
        assert holder.stdout.readline().strip() == "ready"
        first = subprocess.Popen([sys.executable, "-c", _WAIT_FOR_CATALOG, str(path), "120"],
                                 stdout=subprocess.PIPE, text=True, env=env)
        note = Path(str(path) + ".lock" + WAITING_NOTE)
        deadline = time.monotonic() + 60
        while not note.exists():  # A holds the lock and has met the notebook
            assert time.monotonic() < deadline and first.poll() is None, "A never waited"
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-c", _WAIT_FOR_CATALOG, str(path), "0.5"],
                                capture_output=True, text=True, env=env, timeout=60)
        said = second.stdout
        assert f"PID {holder.pid}" in said, said  # the notebook, named …
        assert f"enrich process {first.pid}" in said, said  # … and who waits for it
    finally:
        holder.stdin.close()  # the notebook closes: A gets the catalog
        try:
            holder.wait(timeout=60)
            if first is not None:
                out, _ = first.communicate(timeout=120)
                assert out.strip() == "ok"
        finally:  # no child outlives a failed test
            for p in (holder, first):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait(timeout=30)
            holder.stdout.close()
            if first is not None and first.stdout:
                first.stdout.close()
    assert not Path(str(path) + ".lock" + WAITING_NOTE).exists()
