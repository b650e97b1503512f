"""End to end against the loopback fake: `python -m enrich run` on real sockets."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import duckdb
import polars as pl

from enrich.store.lake import Lake
from tests.conftest import REPO, subprocess_env
from tests.fakes.massive_server import FakeMassive

NOW = "2026-11-25T22:00:00Z"
SYMS = ("AAPL", "MSFT", "SPY")


def _cli(data, fake, *args):
    env = subprocess_env(
        data, MASSIVE_API_KEY=fake.api_key, MASSIVE_BASE_URL=fake.base_url,
        ENRICH_RATE_LIMIT_PER_MIN="6000", ENRICH_HISTORY_YEARS="1", ENRICH_NOW=NOW,
        ENRICH_MAX_RETRIES="4")
    return subprocess.run([sys.executable, "-m", "enrich", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_run_three_symbols_against_the_fake_stores_exactly_the_served_rows(tmp_path):
    data = tmp_path / "data"
    with FakeMassive(symbols=SYMS, today=dt.date(2026, 11, 25)) as fake:
        fake.fail("/v2/aggs/ticker/MSFT", nth=1, status=429, retry_after="1")
        fake.fail("/v2/aggs/ticker/SPY", nth=1, status=500)
        add = _cli(data, fake, "symbols", "add", "AAPL", "MSFT", "--asset-class", "stocks")
        assert add.returncode == 0, add.stderr
        add = _cli(data, fake, "symbols", "add", "SPY", "--asset-class", "etfs")
        assert add.returncode == 0, add.stderr
        run = _cli(data, fake, "run", "--symbols", ",".join(SYMS), "--datasets", "bars",
                   "--json")
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["ok"] == 3 and summary["retries"] == 2
        assert not fake.key_in_url
        assert fake.statuses()[429] == 1 and fake.statuses()[500] == 1
        served = {s: fake.served_rows(s, "bars") for s in SYMS}

    lake = Lake(data / "lake")
    for sym in SYMS:
        got = lake.read("bars", [sym])
        want = sorted(served[sym], key=lambda r: r["t"])
        assert got.height == len(want) > 0
        assert got["close"].to_list() == [r["c"] for r in want]
        assert got["volume"].to_list() == [float(r["v"]) for r in want]
        # trading date derived in New York time: midnight ET
        ts_ms = [int(t.timestamp() * 1000) for t in got["ts"].to_list()]
        assert ts_ms == [r["t"] for r in want]
        assert (got["ts"].dt.convert_time_zone("America/New_York").dt.date()
                == got["session"]).all()

    con = duckdb.connect(str(data / "enrich.duckdb"), read_only=True)
    try:
        retried = con.execute(
            "SELECT symbol, error_class FROM fetch_log WHERE status = 'retried' ORDER BY symbol"
        ).fetchall()
        requests = con.execute(
            "SELECT sum(requests) FROM fetch_log WHERE status <> 'retried'").fetchone()[0]
    finally:
        con.close()
    assert retried == [("MSFT", "rate_limited"), ("SPY", "transient")]
    assert requests >= 5  # 3 bars calls + 2 retries (+ splits fetched with bars)


def test_the_key_appears_nowhere(tmp_path):
    """No log line, exception text, catalog row or CLI output contains the key."""
    data = tmp_path / "data"
    with FakeMassive(symbols=SYMS, today=dt.date(2026, 11, 25),
                     not_entitled=("/stocks/financials",)) as fake:
        fake.fail("/v2/aggs/ticker/AAPL", nth=1, status=401)
        outputs = []
        for args in (("symbols", "add", "AAPL", "MSFT"), ("run", "--json"),
                     ("status", "--json"), ("runs", "--json")):
            p = _cli(data, fake, *args)
            outputs += [p.stdout, p.stderr]
        key = fake.api_key
    assert all(key not in o for o in outputs)
    assert "auth" in "".join(outputs)  # the 401 was reported, without the key
    con = duckdb.connect(str(data / "enrich.duckdb"), read_only=True)
    try:
        for (table,) in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE'").fetchall():
            dump = pl.from_arrow(con.sql(f'SELECT * FROM "{table}"').to_arrow_table())
            assert key not in dump.write_csv(), table
    finally:
        con.close()
    for f in data.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".parquet", ".log", ".csv"):
            assert key.encode() not in f.read_bytes(), f
