"""Crash safety and multi-process use, with real child processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from enrich.schemas import DATASETS
from enrich.store.catalog import Catalog
from enrich.store.lake import Lake
from tests.conftest import REPO, subprocess_env

NOW = "2026-11-25T22:00:00Z"


def run_cli(data_dir, *args, timeout=300, **env):
    return subprocess.run(
        [sys.executable, "-m", "enrich", *args],
        env=subprocess_env(data_dir, ENRICH_NOW=NOW, **env), cwd=REPO,
        capture_output=True, text=True, timeout=timeout)


def read_lake(data_dir) -> dict[str, pl.DataFrame]:
    lake = Lake(data_dir / "lake")
    return {name: lake.read(name) for name in DATASETS}


@pytest.mark.slow
def test_sigkill_mid_run_leaves_consistent_store_and_next_run_completes(tmp_path):
    data = tmp_path / "killed"
    env = dict(ENRICH_HISTORY_YEARS="4", ENRICH_MAX_CONCURRENT_SYMBOLS="2")
    errlog = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "enrich", "run"], cwd=REPO,
        env=subprocess_env(data, ENRICH_NOW=NOW, **env),
        stdout=subprocess.DEVNULL, stderr=errlog)
    try:
        # Kill once some, but not all, symbols have written data.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            bars = data / "lake" / "bars" / "timeframe=1d"
            if bars.is_dir() and len(list(bars.iterdir())) >= 5:
                break
            time.sleep(0.02)
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        errlog.close()

    # Every visible Parquet file is whole; the catalog opens; the run is still 'running'.
    for f in (data / "lake").rglob("*.parquet"):
        pl.read_parquet(f)
    cat = Catalog(data / "enrich.duckdb")
    killed = cat.query("SELECT run_id, state FROM runs")
    assert killed["state"].to_list() == ["running"]

    second = run_cli(data, "run", "--json", **env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["state"] == "succeeded"
    states = dict(cat.query("SELECT run_id, state FROM runs").iter_rows())
    assert states[killed["run_id"][0]] == "interrupted"

    # Any tool can query every dataset view and the operational tables with plain DuckDB.
    con = duckdb.connect(str(data / "enrich.duckdb"), read_only=True)
    try:
        for table in (*DATASETS, "runs", "tasks", "fetch_log", "compute_log", "symbol_status"):
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table
    finally:
        con.close()

    # The resumed store equals one that was never interrupted.
    clean = tmp_path / "clean"
    ref = run_cli(clean, "run", "--json", **env)
    assert ref.returncode == 0, ref.stderr
    got, want = read_lake(data), read_lake(clean)
    for name in DATASETS:
        assert_frame_equal(got[name], want[name], check_row_order=True)


@pytest.mark.slow
def test_two_processes_on_overlapping_symbols(tmp_path):
    data = tmp_path / "data"
    env = subprocess_env(data, ENRICH_NOW=NOW, ENRICH_HISTORY_YEARS="2")
    # Seed the universe first so both processes see the same one.
    seed = run_cli(data, "symbols", "list", "--seed-demo", ENRICH_HISTORY_YEARS="2")
    assert seed.returncode == 0, seed.stderr
    a = subprocess.Popen([sys.executable, "-m", "enrich", "run", "--json",
                          "--symbols", "AAPL,MSFT,SPY,NVDA,KO,X:BTCUSD"],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    b = subprocess.Popen([sys.executable, "-m", "enrich", "run", "--json",
                          "--symbols", "SPY,NVDA,KO,X:BTCUSD,TSLA,JPM"],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        out_a, err_a = a.communicate(timeout=300)
        out_b, err_b = b.communicate(timeout=300)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    ra, rb = json.loads(out_a), json.loads(out_b)
    assert ra["failed"] == rb["failed"] == 0
    cat = Catalog(data / "enrich.duckdb")
    # No log row lost: one fetch row per applicable dataset per symbol per run.
    curve_fetches = 0
    for run in (ra, rb):
        n_tasks = cat.scalar("SELECT count(*) FROM tasks WHERE run_id = ?", [run["run_id"]])
        assert n_tasks == 6
        # (A symbol's ticker-reference row is logged by whichever run asked for it first.)
        per_symbol = cat.query(
            "SELECT symbol, count(*) AS n FROM fetch_log WHERE run_id = ? "
            "AND dataset != 'reference' GROUP BY symbol", [run["run_id"]])
        # crypto: bars, news; etfs: no earnings. The Treasury curve (UST, one row): fetched
        # by the run that found it missing; the other run may find it held already.
        expected = {"X:BTCUSD": 2, "SPY": 5, "UST": 1}
        for sym, n in per_symbol.iter_rows():
            assert n == expected.get(sym, 6), (sym, n)
        curve_fetches += "UST" in per_symbol["symbol"].to_list()
    assert curve_fetches >= 1
    # Exactly one row per natural key in every dataset.
    for name, ds in DATASETS.items():
        key = ", ".join(ds.key)
        dupes = cat.scalar(
            f"SELECT count(*) FROM (SELECT {key} FROM {name} GROUP BY {key} HAVING count(*) > 1)")
        assert dupes == 0, name
    assert cat.scalar("SELECT count(DISTINCT symbol) FROM bars") == 8
    assert os.path.exists(data / "enrich.duckdb")
