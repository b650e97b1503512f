import subprocess
import sys
import time

import duckdb
import polars as pl
import pytest

from enrich.catalog import MIGRATIONS, Catalog, WriteBatch, utcnow
from enrich.errors import CatalogBusyError
from enrich.lake import Lake


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
    cat = Catalog(tmp_path / "enrich.duckdb")
    cat.migrate()
    v0 = cat.data_version()
    b = WriteBatch()
    b.insert("fetch_log", {"symbol": "A", "dataset": "bars", "started_at": utcnow(),
                           "status": "ok"})
    cat.write(b)
    assert cat.data_version() == v0 + 1
    cat.write(WriteBatch())  # an empty batch is not a write
    assert cat.data_version() == v0 + 1


def test_a_write_reads_its_follow_up_query_after_the_commit(tmp_path):
    cat = Catalog(tmp_path / "enrich.duckdb")
    cat.migrate()
    count = ("SELECT count(*) FROM fetch_log WHERE symbol = ?", ["A"])
    b = WriteBatch()
    for dataset in ("bars", "news"):
        b.insert("fetch_log", {"symbol": "A", "dataset": dataset, "started_at": utcnow(),
                               "status": "ok"})
    assert cat.write(b, then=count) == 2  # sees the batch it follows
    assert cat.write(WriteBatch(), then=count) == 2  # nothing to write: still answered
    v = cat.data_version()
    b = WriteBatch()
    b.insert("fetch_log", {"symbol": "A", "dataset": "splits", "started_at": utcnow(),
                           "status": "ok"})
    assert cat.write(b, then=("SELECT no_such_column FROM runs", [])) is None
    assert cat.data_version() == v + 1 and cat.scalar(*count) == 3  # committed regardless


def test_upsert_updates_only_given_columns(tmp_path):
    cat = Catalog(tmp_path / "enrich.duckdb")
    cat.migrate()
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
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb,time; c=duckdb.connect({str(path)!r}); print('ready', flush=True); "
         "time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        cat = Catalog(path, timeout_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(CatalogBusyError, match="held open by another program") as ei:
            cat.data_version()
        assert time.monotonic() - t0 < 10
        assert str(holder.pid) in str(ei.value) or "PID" in str(ei.value)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert Catalog(path).data_version() >= 0  # usable again once released
