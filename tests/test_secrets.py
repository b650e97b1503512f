"""The key never leaves the process: a loopback fake echoes it in every field the Massive API
has — ``error``, ``message``, ``request_id``, ``X-Request-Id``, ``next_url``, an HTML body,
the status line — and afterwards the key, and every 8-character piece of it (in any letter
case), is absent from the whole data directory (catalog file and lake), from the output of
every CLI command, and from every page of the dashboard (AppTest, every element rendered,
dataframes included).

Error shapes from ``/work/shared/reference/massive-rest-api.md`` ("Errors", "Pagination").
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from enrich.service import reset_services
from tests.conftest import REPO, subprocess_env
from tests.fakes.massive_server import FakeMassive

KEY = "mk_live_7Q2xV9pLr4TzW8cN3bY6hJ1d"
NOW = "2026-11-25T22:00:00Z"
SYMS = ("AAPL", "MSFT", "SPY")
APP = str(Path(REPO) / "app.py")
PAGES = ["pages/overview.py", "pages/symbols.py", "pages/runs.py", "pages/metrics.py",
         "pages/quality.py", "pages/health.py", "pages/controls.py", "pages/backfill.py",
         "pages/settings.py"]


def pieces() -> set[bytes]:
    low = KEY.lower()
    return {s[i:i + 8].encode() for s in (KEY, low) for i in range(len(s) - 7)}


def leaked(blob: bytes | str) -> list[bytes]:
    data = (blob.encode() if isinstance(blob, str) else blob).lower()
    return sorted(p for p in pieces() if p.lower() in data)


def _echo(fake: FakeMassive) -> None:
    """Every error the fake can give quotes the key somewhere (first request of each)."""
    body = lambda **kw: json.dumps(kw).encode()  # noqa: E731
    fake.fail("/v2/aggs/ticker/AAPL", status=500, reason=f"Bad {KEY}",
              headers={"X-Request-Id": KEY},
              body=body(status="ERROR", request_id=KEY, error=f"upstream rejected {KEY}"))
    fake.fail("/v2/aggs/ticker/MSFT", status=503,  # the key straddles the 300-character cut
              body=body(status="ERROR", request_id="r", error="x" * 290 + KEY))
    fake.fail("/v2/aggs/ticker/SPY", status=502, content_type=f"text/html; k={KEY}",
              body=f"<html><body><h1>502</h1><p>{KEY}</p></body></html>".encode())
    fake.fail("/stocks/v1/dividends", status=403,
              body=body(status="NOT_AUTHORIZED", request_id=KEY.lower(),
                        message=f"key {KEY} is not entitled"))
    fake.fail("/v3/reference/dividends", status=404,
              body=body(status="NOT_FOUND", request_id="r", message=f"nothing for {KEY}"))
    fake.fail("/stocks/v1/splits", status=200, headers={"X-Request-Id": KEY},
              body=body(status="OK", request_id=KEY[3:17], results=[],
                        next_url=f"https://{KEY}.evil.example/v1?apiKey={KEY}"))
    # Retry-After: 1, as without it a 429 holds the data directory's requests for a minute.
    fake.fail("/v2/reference/news", status=429, headers={"X-Request-Id": KEY.upper()},
              retry_after="1", body=body(status="ERROR", error=f"slow down, {KEY}"))
    fake.fail("/stocks/financials/v1/income-statements", status=500,
              body=body(status="ERROR", request_id=KEY[5:20], error="boom"))
    fake.fail("/v3/snapshot/options/", status=404,
              body=body(status="NOT_FOUND", request_id=KEY, message=KEY))
    for nth in (1, 2, 3):  # `health` on the CLI, then "Test key" on the Health page
        fake.fail("/v1/marketstatus/now", nth=nth, status=401, headers={"X-Request-Id": KEY},
                  body=body(status="ERROR", request_id=KEY, error=f"Unknown API Key {KEY}"))


def _cli(data: Path, fake: FakeMassive, *args: str) -> subprocess.CompletedProcess:
    env = subprocess_env(data, MASSIVE_API_KEY=KEY, MASSIVE_BASE_URL=fake.base_url,
                         ENRICH_RATE_LIMIT_PER_MIN="6000", ENRICH_HISTORY_YEARS="1",
                         ENRICH_NOW=NOW, ENRICH_MAX_RETRIES="0")
    return subprocess.run([sys.executable, "-m", "enrich", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _page_text(at: AppTest) -> str:
    """Everything the page rendered: every element's protobuf, dataframes' cells included."""
    out: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


@pytest.fixture(scope="module")
def echoed(tmp_path_factory):
    """A data dir after a run against the key-echoing fake; the fake keeps serving."""
    data = tmp_path_factory.mktemp("secrets") / "data"
    with FakeMassive(api_key=KEY, symbols=SYMS, today=dt.date(2026, 11, 25)) as fake:
        _echo(fake)
        outputs = {}
        for args in (("symbols", "add", "AAPL", "MSFT"), ("symbols", "add", "SPY",
                                                          "--asset-class", "etfs"),
                     ("run", "--json"), ("run",), ("status", "--json"), ("status",),
                     ("runs", "--json"), ("runs",), ("health", "--json"), ("health",),
                     ("symbols", "list", "--json"), ("schedule", "show")):
            p = _cli(data, fake, *args)
            outputs[" ".join(args)] = p
        yield data, fake, outputs
        reset_services()


def test_the_key_is_in_no_cli_output_and_no_file_of_the_data_dir(echoed):
    data, fake, outputs = echoed
    assert not fake.key_in_url
    first = outputs["run --json"]
    summary = json.loads(first.stdout)
    assert first.returncode == 1 and summary["failed"] == 3  # the echoes were hit …
    classes = set(summary["errors_by_class"])
    assert {"transient", "malformed"} <= classes, classes
    assert outputs["health --json"].returncode == 1
    assert '"invalid key"' in outputs["health --json"].stdout  # … and reported
    for args, p in outputs.items():
        assert "Traceback" not in p.stderr, args
        assert not leaked(p.stdout) and not leaked(p.stderr), (args, leaked(p.stdout + p.stderr))
    files = [f for f in data.rglob("*") if f.is_file()]
    assert any(f.name == "enrich.duckdb" for f in files)
    assert any(f.suffix == ".parquet" for f in files)
    for f in files:
        assert not leaked(f.read_bytes()), f
    # The messages kept what the server said, masked.
    import duckdb

    con = duckdb.connect(str(data / "enrich.duckdb"), read_only=True)
    try:
        msgs = [r[0] for r in con.execute(
            "SELECT error_message FROM fetch_log WHERE error_message IS NOT NULL").fetchall()]
    finally:
        con.close()
    assert any("upstream rejected ***" in m for m in msgs), msgs
    assert any("x" * 280 in m and "***" in m for m in msgs), msgs


def test_the_key_is_on_no_page(echoed, monkeypatch, tmp_path):
    data, fake, _ = echoed
    for name, value in {"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off",
                        "ENRICH_NOW": NOW, "MASSIVE_API_KEY": KEY,
                        "MASSIVE_BASE_URL": fake.base_url,
                        "ENRICH_RATE_LIMIT_PER_MIN": "6000"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(APP, default_timeout=60).run()
    seen = []
    for page in PAGES:
        at.switch_page(page)
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        if page == "pages/health.py":
            at.button(key="test_key").click().run()
            assert any("invalid key" in e.value for e in at.error), page
        if page == "pages/runs.py":  # a failed run's detail: errors and fetch log
            run_id = json.loads(subprocess.run(
                [sys.executable, "-m", "enrich", "runs", "--json", "--state", "failed"],
                cwd=REPO, capture_output=True, text=True, check=True,
                env=subprocess_env(data, ENRICH_NOW=NOW)).stdout)[0]["run_id"]
            at.query_params["run"] = run_id
            at.run()
            assert not at.exception
            text = _page_text(at)
            assert "upstream rejected ***" in text  # the message is shown, masked
            seen.append(text)
            at.query_params.clear()
        if page == "pages/symbols.py":
            at.query_params["symbol"] = "AAPL"
            at.run()
            assert not at.exception
            seen.append(_page_text(at))
            at.query_params.clear()
        text = _page_text(at)
        seen.append(text)
        assert not leaked(text), (page, leaked(text))
    assert all(not leaked(t) for t in seen)
