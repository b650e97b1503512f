"""One bad file never stops the desk, whatever kind of lake file it is and however it is bad.

For each kind of file (bars, dividends, splits, earnings, news, an option chain's month file,
features, the vol summary) one symbol's file (AAPL's) is truncated, emptied, overwritten with
random bytes, or replaced by a valid Parquet file of other columns. Then every read command of
the CLI, every read endpoint of the API, a refresh and a backfill chunk finish: the other
symbols are shown and refreshed in full, the bad file is named (relative to the data
directory) with what happens next, and it is kept under ``lake/_quarantine/``, never deleted.
Every page of the dashboard is drawn with all of them bad at once.

The Backfill card's buttons (Pause, Cancel, Resume, Retry) act on the state the user saw and
say what happened when someone else acted first or the backfill ended (the last tests).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from enrich.config import load_settings
from enrich.errors import CorruptFileError
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams
from enrich.providers.sample.provider import SampleProvider
from enrich.schemas import DATASETS
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from tests.apptest_kit import said
from tests.conftest import FIXED_NOW

SYMS = ["AAPL", "SPY", "MSFT"]
BAD = "AAPL"
LATER = FIXED_NOW + dt.timedelta(days=2)  # Friday (Thursday is Thanksgiving): one session more

# kind of file -> (dataset, AAPL's file relative to the data directory)
KINDS = {
    "bars": ("bars", "lake/bars/timeframe=1d/symbol=AAPL/data.parquet"),
    "dividends": ("dividends", "lake/dividends/symbol=AAPL/data.parquet"),
    "splits": ("splits", "lake/splits/symbol=AAPL/data.parquet"),
    "earnings": ("earnings", "lake/earnings/symbol=AAPL/data.parquet"),
    "news": ("news", "lake/news/symbol=AAPL/data.parquet"),
    "option_chain": ("options_iv", "lake/options_iv/symbol=AAPL/month=2026-11.parquet"),
    "features": ("features", "lake/features/timeframe=1d/symbol=AAPL/data.parquet"),
    "vol_summary": ("vol_summary", "lake/vol_summary/symbol=AAPL/data.parquet"),
}
CORRUPTIONS = ("truncated", "zero_bytes", "random_bytes", "wrong_schema")
# Each kind bad in one way (every way twice over the kinds; a valid Parquet of other columns
# for every other kind): the slower tests below run these, the lake's own test every pair.
ONE_EACH = [(kind, "wrong_schema" if i % 2 else CORRUPTIONS[i // 2 % 3])
            for i, kind in enumerate(KINDS)]


def _settings(data: Path, now: dt.datetime = FIXED_NOW):
    return load_settings({"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off",
                          "ENRICH_HISTORY_YEARS": "1", "ENRICH_NOW": now.isoformat()},
                         dotenv_path=None)


def _engine(data: Path, now: dt.datetime) -> Engine:
    store = Store.from_settings(_settings(data, now))
    clock = lambda: now  # noqa: E731
    return Engine(store, SampleProvider(clock=clock), _settings(data, now), clock=clock)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A small desk after one run: AAPL, SPY (an ETF) and MSFT, a year of bars, a month of
    option chains."""
    data = tmp_path_factory.mktemp("badfiles") / "data"
    store = Store.from_settings(_settings(data))
    add_symbols(store.catalog, [("AAPL", None, "Apple Inc."), ("SPY", "etfs", None),
                                ("MSFT", None, "Microsoft")])
    summary = _engine(data, FIXED_NOW).run(RunParams(symbols=SYMS, lookback_days=30))
    assert summary.state == "succeeded"
    return data


@pytest.fixture
def data(template, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(template, dst)
    Store.from_settings(_settings(dst)).catalog.refresh_views()  # views point at the copy
    return dst


def _valid_bytes(data: Path, dataset: str) -> bytes:
    """A readable file of ``dataset``: one of the desk's, or one row written here (no demo
    symbol has a split in the last year)."""
    for f in sorted((data / "lake" / dataset).rglob("*.parquet")):
        return f.read_bytes()
    row = {c: [None] for c in DATASETS[dataset].columns}
    row.update(symbol=[BAD], execution_date=[dt.date(2020, 8, 31)], split_from=[1.0],
               split_to=[4.0])
    buf = io.BytesIO()
    pl.DataFrame(row, schema=DATASETS[dataset].schema).write_parquet(buf)
    return buf.getvalue()


def corrupt(data: Path, kind: str, how: str) -> bytes:
    """Make AAPL's file of ``kind`` bad in the way ``how``; returns the bad bytes."""
    dataset, rel = KINDS[kind]
    path = data / rel
    good = path.read_bytes() if path.exists() else _valid_bytes(data, dataset)
    if how == "truncated":
        bad = good[: len(good) // 2]
    elif how == "zero_bytes":
        bad = b""
    elif how == "random_bytes":
        bad = os.urandom(len(good))
    else:  # a valid Parquet file, of other columns (another tool's, a misplaced file)
        buf = io.BytesIO()
        pl.DataFrame({"symbol": [BAD], "note": ["not a file of this dataset"]}).write_parquet(buf)
        bad = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bad)
    return bad


def set_aside(data: Path, kind: str) -> list[Path]:
    """AAPL's files of ``kind`` kept under the quarantine."""
    _, rel = KINDS[kind]
    inside = Path(rel).relative_to("lake")
    return sorted((data / "lake" / "_quarantine" / inside.parent).glob(f"*-{inside.name}"))


def assert_kept(data: Path, kind: str, bad: bytes) -> None:
    """The bad file is out of the lake's datasets and kept, byte for byte, in the quarantine."""
    assert not (data / KINDS[kind][1]).exists() or (data / KINDS[kind][1]).read_bytes() != bad
    kept = set_aside(data, kind)
    assert [p.read_bytes() for p in kept] == [bad], kept


def _level(dataset: str) -> str | None:
    return "1d" if DATASETS[dataset].level_column else None


# -- the lake -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_read_sets_a_bad_file_aside_names_it_and_reads_the_others(data, kind, how):
    bad = corrupt(data, kind, how)
    dataset, rel = KINDS[kind]
    store = Store.from_settings(_settings(data))
    others = store.lake.read(dataset, ["SPY", "MSFT"], level=_level(dataset))
    with pytest.raises(CorruptFileError) as err:
        store.lake.read(dataset, [BAD], level=_level(dataset))
    msg = str(err.value)
    assert msg.startswith(f"corrupt file, re-fetch: {rel} could not be read (")
    assert "moved to lake/_quarantine/" in msg
    if dataset in ("features", "vol_summary"):  # derived: computed again, not fetched
        assert f"the next run that enriches AAPL computes {dataset} again" in msg
    elif dataset == "options_iv":  # a snapshot of its moment: the past is backfilled
        assert "`python -m enrich backfill options --symbol AAPL` computes" in msg
    else:
        assert msg.endswith(f"the next run fetches AAPL {dataset} again")
    assert_kept(data, kind, bad)
    assert store.lake.read(dataset, [BAD], level=_level(dataset)).is_empty()  # now: nothing
    assert store.lake.read(dataset, ["SPY", "MSFT"], level=_level(dataset)).equals(others)
    store.catalog.sync_quarantine()
    assert store.catalog.query("SELECT original FROM quarantine")["original"].to_list() == [rel]


# -- the CLI's reads ----------------------------------------------------------------------------
READS = [["status"], ["status", "--symbol", "AAPL"], ["status", "--symbol", "SPY", "--json"],
         ["symbols", "list"], ["runs"], ["runs", "list", "--symbol", "AAPL"],
         ["entitlements", "list"], ["schedule", "show"], ["backfill", "list"], ["alerts", "list"],
         ["quality"], ["quality", "--symbol", "AAPL"], ["quality", "--symbol", "SPY"],
         ["coverage", "--dataset", "bars"], ["coverage", "--dataset", "options_iv"],
         ["run", "--dry-run"], ["quality", "audit"], ["health"]]


def cli(*args: str) -> tuple[int, str, str]:
    """``python -m enrich ARGS`` in this process (the environment names the desk)."""
    from enrich.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def desk_env(data, monkeypatch, tmp_path):
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    monkeypatch.setenv("ENRICH_HISTORY_YEARS", "1")
    monkeypatch.setenv("ENRICH_NOW", FIXED_NOW.isoformat())
    monkeypatch.chdir(tmp_path)
    yield data
    from enrich.service import reset_services

    reset_services()


@pytest.mark.parametrize(("kind", "how"), ONE_EACH)
def test_every_read_command_finishes_and_names_the_file(desk_env, kind, how):
    data = desk_env
    bad = corrupt(data, kind, how)
    rel = KINDS[kind][1]
    said, codes = {}, {}
    for args in READS:
        code, out, err = cli(*args)
        said[" ".join(args)], codes[" ".join(args)] = out + err, code
        assert "Traceback" not in err and "internal error" not in err, (args, err)
        # A read that meets the bad file is no failure of the desk.
        assert code == 0 or args == ["health"], (args, code, err)
    spy = json.loads(said["status --symbol SPY --json"])
    assert spy and all(r["state"] != "failing" and r["last_error_class"] is None
                       for r in spy), spy
    assert "SPY" in said["symbols list"] and "MSFT" in said["status"]
    if not (data / rel).exists():  # found by a read: set aside, named, with what comes next
        assert_kept(data, kind, bad)
        health = said["health"]  # NOT OK until fetched again
        assert codes["health"] == 1 and f"lake file    {rel} " in health and "next run" in health
        if kind not in ("features", "vol_summary"):  # the status of the symbol × dataset
            code, out, _ = cli("status", "--symbol", BAD, "--json")
            row = next(r for r in json.loads(out) if r["dataset"] == KINDS[kind][0])
            assert row["state"] == "failing" and row["last_error_message"].startswith(
                f"corrupt file, re-fetch: {rel} could not be read")
    else:  # no command read it (only a page or a run reads features and the vol summary)
        assert (data / rel).read_bytes() == bad and kind in ("features", "vol_summary")
        assert how == "wrong_schema"  # the others fail health's look at every file's footer


# -- a refresh ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "how"), ONE_EACH)
def test_a_refresh_refreshes_the_others_and_fetches_the_bad_file_again(data, kind, how):
    dataset, rel = KINDS[kind]
    level = _level(dataset)
    before = Store.from_settings(_settings(data)).lake.read(dataset, [BAD], level=level)
    bad = corrupt(data, kind, how)
    first = _engine(data, LATER).run(RunParams(symbols=["AAPL", "SPY"]))
    tasks = {t.symbol: t for t in first.results}
    assert tasks["SPY"].state == "ok" and not tasks["SPY"].errors  # the other, fully
    assert_kept(data, kind, bad)
    store = Store.from_settings(_settings(data))
    assert store.lake.read("bars", ["SPY"], level="1d")["session"].max() == LATER.date()
    if tasks["AAPL"].state != "ok":  # met on the way: the symbol fails, saying why
        assert first.errors_by_class == {"corrupt": 1}, first.errors_by_class
        again = _engine(data, LATER).run(RunParams(symbols=["AAPL"]))
        assert again.state == "succeeded"  # … and the next run fetches it again
    after = store.lake.read(dataset, [BAD], level=level)
    if before.is_empty():
        pass  # AAPL's file held nothing (its first run looked 30 days back)
    elif dataset == "options_iv":  # a chain is a snapshot of its moment: the new one is
        assert after["as_of"].unique().to_list() == [LATER.date()]  # (backfill: the past)
    else:  # what was there is there again (and the new session)
        key = [k for k in DATASETS[dataset].key if k not in ("symbol", "timeframe")]
        assert after.height >= before.height > 0, (after.height, before.height)
        assert before.select(key).join(after.select(key), on=key, how="anti").is_empty()
    status = store.catalog.query(
        "SELECT dataset, consecutive_failures FROM symbol_status WHERE symbol = 'AAPL'")
    assert status["consecutive_failures"].sum() == 0, status


# -- the API's reads ----------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "how"), ONE_EACH)
def test_every_api_read_answers_and_names_the_file(data, kind, how):
    from enrich.api.app import create_app
    from enrich.service import Services
    from tests.test_api import V1, Api, settings_for

    dataset, rel = KINDS[kind]
    bad = corrupt(data, kind, how)
    settings = settings_for(data)
    svc = Services(settings, alerts=False).start()
    try:
        api = Api(create_app(settings, svc))
        # The file's own rows first (the first read to meet it), then everything else.
        first = api.get(f"{V1}/symbols/AAPL/{dataset}")
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["rows"] == 0 and len(body["set_aside"]) == 1
        assert body["set_aside"][0].startswith(f"corrupt file, re-fetch: {rel} could not be")
        assert_kept(data, kind, bad)
        paths = ["/overview", "/symbols", "/symbols/AAPL", "/symbols/SPY", "/runs", "/metrics",
                 "/health", "/schedule", "/backfills", "/alerts", "/quality",
                 "/quality?symbol=AAPL", "/settings", "/coverage?dataset=bars",
                 "/coverage?dataset=options_iv"]
        paths += [f"/symbols/{s}/{d}{f}" for s in ("AAPL", "SPY") for d in DATASETS
                  for f in ("", "?format=csv")]
        for path in paths:
            r = api.get(V1 + path)
            assert r.status_code == 200, (path, r.status_code, r.text)
        for other in ("SPY", "MSFT"):  # every row of theirs (none has splits in the year)
            rows = api.get(f"{V1}/symbols/{other}/{dataset}").json()
            held = svc.store.lake.read(dataset, [other], level=_level(dataset)).height
            assert rows["set_aside"] == [] and rows["rows"] == held
            assert held > 0 or dataset == "splits" or (other, dataset) in (
                ("SPY", "earnings"), ("MSFT", "dividends"))
        if dataset in DATASETS and kind not in ("features", "vol_summary"):
            aapl = api.get(f"{V1}/symbols/AAPL").json()
            row = next(d for d in aapl["datasets"] if d["dataset"] == dataset)
            assert row["state"] == "failing" and rel in row["last_error_message"]
        health = api.get(f"{V1}/health").json()
        assert [f["original"] for f in health["lake"]["awaiting_refetch"]] == [rel]
    finally:
        svc.stop()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_download_that_meets_a_bad_file_names_it_in_a_header(data, fmt):
    from enrich.api.app import create_app
    from enrich.service import Services
    from tests.test_api import V1, Api, settings_for

    bad = corrupt(data, "bars", "random_bytes")
    settings = settings_for(data)
    svc = Services(settings, alerts=False).start()
    try:
        r = Api(create_app(settings, svc)).get(f"{V1}/symbols/AAPL/bars?format={fmt}")
        assert r.status_code == 200, r.text
        assert r.headers["x-enrich-set-aside"].startswith(
            f"corrupt file, re-fetch: {KINDS['bars'][1]} could not be read")
        assert_kept(data, "bars", bad)
    finally:
        svc.stop()


# -- the dashboard ------------------------------------------------------------------------------
PAGES = ["overview", "symbols", "runs", "metrics", "quality", "health", "controls", "backfill",
         "alerts", "settings"]


def _drilldown(at, symbol: str) -> None:
    at.switch_page("pages/symbols.py")
    at.query_params.clear()
    at.query_params["symbol"] = symbol
    at.run()
    assert not at.exception, (symbol, [e.value for e in at.exception])
    assert "unexpected error" not in said(at), symbol


@pytest.mark.parametrize(("kind", "how"), ONE_EACH)
def test_the_drilldown_of_the_symbol_and_of_another_say_what_happened(desk_env, kind, how):
    from streamlit.testing.v1 import AppTest

    from tests.apptest_kit import APP

    data = desk_env
    dataset, rel = KINDS[kind]
    bad = corrupt(data, kind, how)
    at = AppTest.from_file(APP, default_timeout=60)
    _drilldown(at, BAD)
    errors = " ".join(e.value for e in at.error)
    assert f"corrupt file, re-fetch: {rel} could not be read" in errors, errors
    assert_kept(data, kind, bad)
    _drilldown(at, BAD)  # drawn again: the status says it, the rest is drawn
    _drilldown(at, "SPY")
    assert "corrupt file" not in said(at)
    assert at.dataframe, "SPY's tables"


def test_every_page_draws_with_every_kind_of_file_bad_at_once(desk_env):
    from streamlit.testing.v1 import AppTest

    from tests.apptest_kit import APP

    data = desk_env
    bad = {kind: corrupt(data, kind, how) for kind, how in ONE_EACH}
    at = AppTest.from_file(APP, default_timeout=60)
    _drilldown(at, BAD)  # the one page that reads them all
    shown = said(at)
    for kind in ("bars", "dividends", "earnings", "news", "option_chain"):
        assert f"corrupt file, re-fetch: {KINDS[kind][1]}" in shown, kind
    for page in PAGES:
        at.switch_page(f"pages/{page}.py")
        at.query_params.clear()
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert "unexpected error" not in said(at), page
    # Health names every file set aside (the drilldown read them; its look finds the rest).
    at.switch_page("pages/health.py")
    at.run()
    table = pl.concat([pl.from_pandas(d.value) for d in at.dataframe
                       if "file" in d.value.columns])
    assert sorted(table["file"].to_list()) == sorted(rel for _, rel in KINDS.values())
    for kind, b in bad.items():
        assert_kept(data, kind, b)


# -- a backfill ---------------------------------------------------------------------------------
BACKFILLS = {"bars": ["bars", "--days", "20"], "features": ["bars", "--days", "20"],
             "dividends": ["dividends", "--since", "2026-01-01"],
             "splits": ["splits", "--since", "2026-01-01"],
             "earnings": ["earnings", "--since", "2026-01-01"],
             "news": ["news", "--since", "2026-11-01"],
             "option_chain": ["options", "--days", "2", "--monthly", "1"],
             "vol_summary": ["options", "--days", "2", "--monthly", "1"]}


@pytest.mark.parametrize(("kind", "how"), ONE_EACH)
def test_a_backfill_finishes_the_others_and_names_the_file(desk_env, monkeypatch, kind, how):
    data = desk_env
    monkeypatch.setenv("ENRICH_NOW", LATER.isoformat())
    _, rel = KINDS[kind]
    bad = corrupt(data, kind, how)
    code, out, err = cli("backfill", *BACKFILLS[kind], "--symbols", "AAPL,SPY", "--json")
    assert code in (0, 1) and "Traceback" not in err and "internal error" not in err, err
    done = json.loads(out)
    for f in done.get("failures", []):  # AAPL's chunks that met the file: named, and why
        assert "AAPL" in f["chunk"] and f["error"].startswith(
            f"corrupt: corrupt file, re-fetch: {rel} could not be read"), f
    assert_kept(data, kind, bad)
    if code == 1:  # what to do is said, and doing it finishes the backfill
        assert "--retry-failed" in done["message"]
        code, out, err = cli("backfill", "resume", done["backfill_id"], "--retry-failed",
                             "--json")
        assert code == 0, (out, err)
        done = json.loads(out)
    assert done["failed"] == 0 and done["left"] == 0 and done["done"] == done["total"] > 0


# -- the Backfill card's buttons on a card that changed meanwhile ------------------------------
@pytest.fixture
def backfill(tmp_path, monkeypatch):
    """A dividends backfill of KO, run to the end once; its id and the catalog."""
    from enrich.backfill import jobs as bfm
    from enrich.service import reset_services

    data = tmp_path / "data"
    store = Store(data)
    for name, value in (("ENRICH_DATA_DIR", str(data)), ("ENRICH_NOW", FIXED_NOW.isoformat()),
                        ("ENRICH_HISTORY_YEARS", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    add_symbols(store.catalog, [("KO", None, None)])
    bfm.start_in_background(load_settings(dotenv_path=None),
                            bfm.BackfillRequest("dividends", ("KO",)), store=store)
    [r] = bfm.backfill_progress_summary(store.catalog)
    assert bfm.wait_for(r["backfill_id"], 120)
    yield r["backfill_id"], store.catalog
    reset_services()


def _set(catalog, bid: str, chunks: str | None = None, run: str | None = None,
         intent: str | None = None) -> None:
    """Put the backfill's chunks, its last run and its intent in the given states (as another
    process's pause, resume, cancel or end leaves them)."""
    from enrich.store.catalog import WriteBatch

    b = WriteBatch()
    if chunks:
        b.execute("UPDATE backfill_progress SET state = ? WHERE backfill_id = ?", [chunks, bid])
    if run:
        b.execute("UPDATE runs SET state = ?, finished_at = CASE WHEN ? IN ('queued', "
                  "'running') THEN NULL ELSE finished_at END WHERE run_id = (SELECT "
                  "last_run_id FROM backfills WHERE backfill_id = ?)", [run, run, bid])
    if intent:
        b.execute("UPDATE backfills SET status = ? WHERE backfill_id = ?", [intent, bid])
    catalog.write(b)


def _card_click(bid: str, label: str, meanwhile) -> str:
    """Open the Backfill page, let ``meanwhile`` happen, click ``label`` on the card as drawn
    before it; what the page said."""
    from tests.apptest_kit import elsewhere, open_page

    at = open_page("pages/backfill.py")
    [button] = [b for b in at.button if b.label == label]
    elsewhere(meanwhile)
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    return said(at)


def test_pause_of_a_backfill_someone_paused_meanwhile_says_who(backfill):
    from enrich.backfill import jobs as bfm

    bid, catalog = backfill
    _set(catalog, bid, chunks="pending", run="running")  # running, as the card shows it

    def alice_pauses():
        bfm.request_stop(catalog, bid, "paused", "alice")
        _set(catalog, bid, run="cancelled")  # its run stopped between chunks

    text = _card_click(bid, "Pause", alice_pauses)
    assert "already paused by `alice`" in text, text


def test_cancel_of_a_backfill_that_ended_meanwhile_says_how_it_ended(backfill):
    bid, catalog = backfill
    _set(catalog, bid, chunks="pending", run="running")
    text = _card_click(bid, "Cancel", lambda: _set(catalog, bid, chunks="done", run="succeeded"))
    assert f"`{bid}` is complete: nothing to cancel" in text, text


def test_resume_of_a_backfill_someone_resumed_meanwhile_says_so(backfill):
    bid, catalog = backfill
    _set(catalog, bid, chunks="pending", intent="paused")
    text = _card_click(bid, "Resume", lambda: _set(catalog, bid, run="running", intent="running"))
    assert f"`{bid}` is already running" in text and "someone else" in text, text


def test_retry_of_failed_chunks_someone_retried_meanwhile_says_how_it_ended(backfill):
    bid, catalog = backfill
    _set(catalog, bid, chunks="failed")
    text = _card_click(bid, "Retry failed", lambda: _set(catalog, bid, chunks="done"))
    assert f"`{bid}` is complete" in text and "no failed chunks to retry" in text, text
