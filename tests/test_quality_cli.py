"""``quality``, ``quality audit``, ``coverage`` and ``fill`` on the command line: the same
read models and action as the Quality page and ``/api/v1/quality|coverage|fills``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from enrich.backfill import heatmap as coverage
from enrich.store.store import Store
from enrich.views import quality as quality_view
from tests.conftest import FIXED_NOW, subprocess_env
from tests.test_alerts import settings_for
from tests.test_coverage import drop_sessions
from tests.test_quality import enrich


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    data = tmp_path_factory.mktemp("qcli") / "data"
    # 60 days of history: the 30-session windows below lie inside what was fetched.
    store, summary = enrich(settings_for(data), symbols=["AAPL", "MSFT"], lookback_days=60)
    assert summary.state == "succeeded"
    store.catalog.query("UPDATE symbols SET active = symbol IN ('AAPL', 'MSFT')")
    gone = store.lake.read("bars", ["AAPL"], level="1d")["session"].to_list()[-12:-10]
    drop_sessions(store, "AAPL", gone)
    return data, gone


@pytest.fixture
def data(template, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(template[0], dst)
    return dst


def run(data: Path, *args: str) -> subprocess.CompletedProcess:
    env = subprocess_env(data, ENRICH_NOW=FIXED_NOW.isoformat(), ENRICH_HISTORY_YEARS=1)
    return subprocess.run([sys.executable, "-m", "enrich", *args], env=env, cwd=data.parent,
                          capture_output=True, text=True, timeout=300)


def test_quality_json_is_the_read_model_and_failing_exits_1(data):
    store = Store(data)
    p = run(data, "quality", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    report = quality_view.quality_report(store.catalog)
    assert [(r["symbol"], r["failed"]) for r in out["symbols"]] == [
        (r["symbol"], r["failed"]) for r in report["symbols"].to_dicts()] == [
        ("AAPL", 1), ("MSFT", 0)]
    p = run(data, "quality", "--failing", "--json")
    assert p.returncode == 1  # something fails: scripts can test for it
    assert [(r["symbol"], r["check_name"]) for r in json.loads(p.stdout)["failing"]] == [
        ("AAPL", "missing_sessions")]
    p = run(data, "quality", "--symbol", "MSFT", "--failing")
    assert p.returncode == 0 and "failing checks\nnone" in p.stdout
    p = run(data, "quality", "--symbol", "AAPL")
    assert "missing_sessions" in p.stdout and "bars" in p.stdout
    assert run(data, "quality", "--symbol", "NOPE").returncode == 2
    # Tickers keep their case; one typed in another case finds the held spelling.
    p = run(data, "quality", "--symbol", "aapl", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["symbol"] == "AAPL"
    assert [c["check_name"] for c in json.loads(p.stdout)["checks"] if not c["passed"]] == [
        "missing_sessions"]


def test_coverage_lists_the_gaps_as_rows(data, template):
    gone = template[1]
    p = run(data, "coverage", "--dataset", "bars", "--sessions", "30", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    report = coverage.gaps_report(Store(data).catalog, "bars", FIXED_NOW, 30)
    assert out["totals"] == report["totals"] and out["totals"]["missing"] == 2
    assert out["gaps"] == [{"symbol": "AAPL", "state": "missing",
                            "first_session": gone[0].isoformat(),
                            "last_session": gone[-1].isoformat(), "sessions": 2,
                            "never_fetched": False}]
    p = run(data, "coverage", "--dataset", "bars", "--sessions", "30")
    assert f"AAPL    missing  {gone[0]}" in p.stdout
    assert run(data, "coverage", "--dataset", "quotes").returncode == 2
    assert run(data, "coverage", "--dataset", "bars", "--sessions", "0").returncode == 2


def test_audit_and_fill_close_the_gap(data, template):
    gone = template[1]
    p = run(data, "quality", "audit", "--symbol", "AAPL", "--dataset", "bars")
    assert p.returncode == 0 and "1 failing" in p.stdout, p.stdout + p.stderr
    p = run(data, "fill", "--dataset", "bars", "--symbols", "AAPL", "--from",
            gone[-1].isoformat(), "--to", gone[0].isoformat())
    assert p.returncode == 2 and "before --from" in p.stderr
    assert run(data, "fill", "--dataset", "bars", "--symbols", "NOPE", "--from",
               gone[0].isoformat(), "--to", gone[-1].isoformat()).returncode == 2
    p = run(data, "fill", "--dataset", "bars", "--symbols", "aapl", "--from",  # held: AAPL
            gone[0].isoformat(), "--to", gone[-1].isoformat())
    assert p.returncode == 0, p.stderr
    assert "2 missing cells: backfill bars" in p.stderr and "succeeded" in p.stdout
    out = json.loads(run(data, "coverage", "--dataset", "bars", "--sessions", "30",
                         "--json").stdout)
    assert out["gaps"] == [] and out["totals"]["missing"] == 0
    assert run(data, "quality", "--failing").returncode == 0
    p = run(data, "fill", "--dataset", "bars", "--symbols", "AAPL", "--from",
            gone[0].isoformat(), "--to", gone[-1].isoformat())
    assert p.returncode == 0 and "nothing to fill" in p.stdout
