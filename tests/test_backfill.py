"""Backfills: plans, the request-count model against the loopback fake, SIGKILL and resume,
failed chunks, pause/resume, split re-basing, priority on the shared limiter, the read model."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import threading
import time

import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from enrich import calendars
from enrich.backfill.jobs import (
    BACKFILL_PRIORITY,
    Backfiller,
    BackfillRequest,
    backfill_chunks,
    backfill_progress_summary,
    backfill_rebases,
    backfill_request,
    backfill_steps,
    find_resumable,
    live_backfills,
    start_in_background,
    stop_backfill,
    wait_for,
)
from enrich.cli import main
from enrich.config import load_settings
from enrich.errors import ConfigError, TransientError
from enrich.providers.massive.provider import MassiveProvider
from enrich.providers.ratelimit import RateLimiter, clear_limiters
from enrich.providers.retry import RetryPolicy
from enrich.providers.sample.provider import SampleProvider
from enrich.schemas import DATASETS
from enrich.store.catalog import Catalog
from enrich.store.lake import Lake
from enrich.store.store import Store
from enrich.store.universe import ensure_demo_universe
from enrich.symbols import calendar_for
from enrich.views import metrics as metrics_view
from tests.conftest import FIXED_NOW, REPO, subprocess_env
from tests.fakes.massive_server import FakeMassive

D = dt.date
NOW = "2026-11-25T22:00:00Z"
TIMEOUT = 120  # seconds: a generous bound for a loaded 2-core machine, never a measure


def _until(predicate, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def make(settings, now=FIXED_NOW, provider=None):
    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    clock = lambda: now  # noqa: E731
    provider = provider or SampleProvider(clock=clock)
    return Backfiller(store, provider, settings, clock=clock)


def lake_of(root) -> dict[str, pl.DataFrame]:
    lake = Lake(root)
    return {name: lake.read(name) for name in DATASETS}


# -- plans ------------------------------------------------------------------------------------
def test_plan_cuts_each_dataset_into_one_request_chunks(settings):
    bf = make(settings)
    bars = bf.plan(BackfillRequest("bars", ("AAPL", "X:BTCUSD"), years=3))
    assert bars.window_end == D(2026, 11, 25)  # the latest completed session
    aapl = [(c.step, c.window_start, c.window_end) for c in bars.chunks if c.underlying == "AAPL"]
    assert aapl == [
        ("reference", D(2023, 11, 25), D(2026, 11, 25)),  # never identified: asked first
        ("splits", D(2023, 11, 25), D(2026, 11, 25)),  # re-base on every split to today
        ("dividends", D(2023, 11, 25), D(2026, 11, 25)),  # tr_close reinvests them
        ("bars", D(2023, 11, 25), D(2023, 12, 31)),  # calendar years
        ("bars", D(2024, 1, 1), D(2024, 12, 31)),
        ("bars", D(2025, 1, 1), D(2025, 12, 31)),
        ("bars", D(2026, 1, 1), D(2026, 11, 25)),
        ("features", D(2023, 11, 25), D(2026, 11, 25)),  # no request
    ]
    btc = [c.step for c in bars.chunks if c.underlying == "X:BTCUSD"]
    assert btc[:2] == ["reference", "bars"]  # no splits, no dividends
    assert bars.requests_expected() == 7 + 5 and bars.eta_s() == 12 * 60 / 5
    assert {c.requests_expected for c in bars.chunks if c.step != "features"} == {1}
    assert not bars.exists and bars.backfill_id.startswith("bf-")

    news = bf.plan(BackfillRequest("news", ("AAPL",)))  # default: one year, by month
    assert news.window_start == D(2025, 11, 25) and len(news.chunks) == 1 + 13
    assert news.chunks[2].window_start == D(2025, 12, 1)
    assert news.chunks[2].window_end == D(2025, 12, 31)
    splits = bf.plan(BackfillRequest("splits", ("AAPL",)))
    assert splits.window_start == D(2000, 1, 1)
    assert [c.step for c in splits.chunks] == ["reference", "splits", "features"]
    earn = bf.plan(BackfillRequest("earnings", ("AAPL", "SPY")))
    assert [(c.step, c.symbol) for c in earn.chunks] == [("reference", "AAPL"),
                                                         ("earnings", "AAPL")]
    assert earn.window_start == D(2016, 11, 25) and "SPY" in earn.notes[0]
    hourly = bf.plan(BackfillRequest("bars", ("AAPL",), days=70, timeframe="1h"))
    assert [c.window_start.day for c in hourly.chunks if c.step == "bars"] == [16, 1, 1]
    opts = bf.plan(BackfillRequest("options", ("AAPL",)))
    assert opts.window_start == D(2026, 10, 26)
    assert sum(c.step == "option_contracts" for c in opts.chunks) == 23  # one per session
    assert opts.awaiting_listings == ["AAPL"]
    # The id names the work: same request and window, same id; another window, another.
    assert bf.plan(BackfillRequest("bars", ("X:BTCUSD", "AAPL"), years=3)).backfill_id \
        == bars.backfill_id
    assert bf.plan(BackfillRequest("bars", ("AAPL", "X:BTCUSD"), years=2)).backfill_id \
        != bars.backfill_id


@pytest.mark.parametrize("request_, message", [
    (BackfillRequest("prices", ("AAPL",)), "unknown dataset"),
    (BackfillRequest("bars", ("AAPL",), years=2, days=3), "at most one"),
    (BackfillRequest("bars", ("AAPL",), days=0), "at least 1"),
    # Found by a QA pass: 10,000 years back from the page raised "year -7974 is out of range".
    (BackfillRequest("bars", ("AAPL",), years=10_000), "10,000 years back is out of range"),
    (BackfillRequest("bars", ("AAPL",), days=36_601), "use 1 to 36,600"),
    (BackfillRequest("bars", ("AAPL",), timeframe="5m", chunk_days=90), "too large"),
    (BackfillRequest("bars", ("AAPL",), expirations=(D(2026, 12, 18),)), "options only"),
    (BackfillRequest("options", ("AAPL",), moneyness=(1.1, 1.2)), "moneyness"),
    (BackfillRequest("bars", ("NOPE",)), "not in the universe"),
    (BackfillRequest("bars", ("AAPL",), since=D(2026, 12, 1)), "empty"),
])
def test_bad_requests_say_what_to_fix(settings, request_, message):
    with pytest.raises(ConfigError, match=message):
        make(settings).plan(request_)


# -- the request-count model against the loopback fake ---------------------------------------
@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    with FakeMassive(today=D(2026, 11, 25)) as fake:
        for k, v in {"ENRICH_DATA_DIR": str(tmp_path / "data"), "ENRICH_PROVIDER": "massive",
                     "MASSIVE_API_KEY": fake.api_key, "MASSIVE_BASE_URL": fake.base_url,
                     "ENRICH_RATE_LIMIT_PER_MIN": "100000", "ENRICH_NOW": NOW}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.chdir(tmp_path)  # no .env
        yield fake
    clear_limiters()


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def test_a_first_run_makes_the_requests_its_dry_run_planned(fake_env, capsys):
    """A first enrichment reads each symbol's ticker reference first (Massive: the details,
    and for a stock or ETF its ticker events). The dry run, here where no desk exists yet,
    counts them: the run then makes exactly the planned requests (a plan counting none
    said 4 for these two symbols' bars, one counting one a symbol 6; the run makes 8)."""
    args = ["run", "--symbols", "AAPL,SPY", "--datasets", "bars", "--json"]
    code, out = cli(capsys, *args, "--dry-run")
    assert code == 0 and fake_env.count() == 0
    plan = json.loads(out)
    reference = [r for r in plan["datasets"] if r["dataset"] == "reference"]
    assert reference and reference[0]["symbols"] == 2 and reference[0]["requests"] == 4
    code, out = cli(capsys, *args)
    assert code == 0, out
    assert json.loads(out)["requests"] == fake_env.count() == plan["requests"]


@pytest.mark.parametrize("dataset, span", [
    ("bars", ["--years", "3"]), ("dividends", []), ("splits", []), ("earnings", []),
    ("news", ["--days", "75"]),
])
def test_dry_run_requests_equal_the_requests_made(fake_env, capsys, dataset, span):
    args = ["backfill", dataset, "--symbol", "AAPL", "MSFT", "SPY", *span, "--json"]
    code, out = cli(capsys, *args, "--dry-run")
    assert code == 0
    plan = json.loads(out)
    assert fake_env.count() == 0  # a dry run fetches nothing
    assert plan["requests_expected"] > 0
    code, out = cli(capsys, *args)
    assert code == 0, out
    summary = json.loads(out)
    assert summary["state"] == "succeeded"
    assert fake_env.count() == plan["requests_expected"] == summary["requests"]
    assert set(fake_env.statuses()) == {200}
    # Per chunk too, and nothing is left: the same command again makes no request.
    store = Store(load_settings(dotenv_path=None).data_dir)
    chunks = backfill_chunks(store.catalog, plan["backfill_id"])
    assert (chunks["requests_made"] == chunks["requests_expected"]).all()
    code, out = cli(capsys, *args, "--dry-run")
    assert json.loads(out)["requests_expected"] == 0
    assert cli(capsys, *args)[0] == 0 and fake_env.count() == plan["requests_expected"]


def test_options_requests_listings_first_then_one_per_contract(fake_env, capsys):
    args = ["backfill", "options", "--symbol", "AAPL", "--json"]
    plan = json.loads(cli(capsys, *args, "--dry-run")[1])
    listings = sum(c["step"] == "option_contracts" for c in plan["chunks"])
    assert plan["awaiting_listings"] == ["AAPL"]
    code, out = cli(capsys, *args)
    assert code == 0, out
    store = Store(load_settings(dotenv_path=None).data_dir)
    chunks = backfill_chunks(store.catalog, plan["backfill_id"])
    contracts = chunks.filter(pl.col("step") == "option_bars")
    assert contracts.height > 0
    assert fake_env.count("/v3/reference/options/contracts") == listings
    assert fake_env.count("/v2/aggs/ticker/O:") == contracts.height
    assert fake_env.count() == plan["requests_expected"] + contracts.height \
        == chunks["requests_made"].sum() == chunks["requests_expected"].sum()
    rows = store.lake.read("options_iv", ["AAPL"])
    assert rows.height > 0 and set(rows["source"]) == {"computed"}


# -- SIGKILL and resume -----------------------------------------------------------------------
KILL_ARGS = ["backfill", "bars", "--symbol", "NVDA", "--years", "5", "--chunk-days", "30"]


def _done_chunks(data) -> int:
    if not (data / "enrich.duckdb").exists():
        return 0
    return Catalog(data / "enrich.duckdb").scalar(
        "SELECT count(*) FROM backfill_progress WHERE state = 'done'")


def _killed_after(data, chunk_lines: int) -> None:
    """Start the backfill; SIGKILL it once it has reported ``chunk_lines`` chunks and the
    catalog holds more done chunks than before (0: as soon as its run is recorded)."""
    before = _done_chunks(data)
    proc = subprocess.Popen([sys.executable, "-m", "enrich", *KILL_ARGS], cwd=REPO,
                            env=subprocess_env(data, ENRICH_NOW=NOW),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen, tail, polled = 0, [], 0.0
    try:
        for line in proc.stderr:
            tail.append(line)
            if line.startswith("backfill ") and chunk_lines == 0:
                break  # the run is recorded; its first chunk is on its way
            if re.match(r"^\d+/\d+ ", line):
                seen += 1
                if seen >= chunk_lines and time.monotonic() - polled > 0.25:
                    polled = time.monotonic()
                    if _done_chunks(data) > before:
                        break
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -9, "".join(tail[-5:])  # killed, not finished


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_gives_the_uninterrupted_lake(tmp_path):
    data = tmp_path / "killed"
    for lines in (0, 3, 12):
        _killed_after(data, lines)
    cat = Catalog(data / "enrich.duckdb")
    mid = backfill_progress_summary(cat)[0]
    assert 0 < mid["chunks_done"] < mid["chunks_total"]
    final = subprocess.run([sys.executable, "-m", "enrich", *KILL_ARGS], cwd=REPO,
                           env=subprocess_env(data, ENRICH_NOW=NOW), capture_output=True,
                           text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    assert "succeeded" in final.stdout
    # The killed runs are interrupted; every chunk is done exactly once in the end.
    states = cat.query("SELECT state, count(*) AS n FROM runs GROUP BY state")
    assert dict(states.iter_rows()) == {"interrupted": 3, "succeeded": 1}
    done = backfill_progress_summary(cat)[0]
    assert done["status"] == "complete" and done["chunks_done"] == done["chunks_total"]
    assert done["requests_made"] >= done["requests_expected"]  # redone chunks show here
    last = cat.scalar("SELECT requests FROM runs WHERE state = 'succeeded'")
    assert 0 < last < done["requests_expected"]  # the resume skipped the chunks done

    # An uninterrupted backfill of the same request, in this process.
    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / "clean"), "ENRICH_NOW": NOW},
                             dotenv_path=None)
    bf = make(settings)
    plan = bf.plan(BackfillRequest("bars", ("NVDA",), years=5, chunk_days=30))
    assert plan.backfill_id == done["backfill_id"]
    assert bf.run(plan).state == "succeeded"
    assert not backfill_rebases(bf.store.catalog, plan.backfill_id).is_empty()  # NVDA 2024
    got, want = lake_of(data / "lake"), lake_of(tmp_path / "clean" / "lake")
    for name in DATASETS:
        assert_frame_equal(got[name], want[name], check_row_order=True)
    bars = got["bars"]
    assert bars.select(pl.struct("symbol", "timeframe", "ts").is_unique().all()).item()
    assert bars["adjusted_asof"].min() >= D(2024, 6, 10)  # all on the post-split basis


def test_a_bars_backfill_fetches_the_dividends_its_total_return_reinvests(settings):
    """Found by a QA pass: a bars backfill fetched the window's splits but not its dividends,
    so the backfilled years' tr_close read as the price return (KO's dividends left out)."""
    bf = make(settings)
    assert bf.run(bf.plan(BackfillRequest("bars", ("KO",), years=3))).state == "succeeded"
    divs = bf.store.lake.read("dividends", ["KO"])
    first_year = divs.filter(pl.col("ex_date") < D(2024, 11, 25))
    assert first_year.height >= 4, divs  # quarterly payer: the window's first year is held
    feats = bf.store.lake.read("features", ["KO"], level="1d").join(
        bf.store.lake.read("bars", ["KO"], level="1d").select("session", "close"), on="session")
    early = feats.sort("session").filter(pl.col("session") <= D(2024, 11, 25))
    ratio = (early["tr_close"] / early["close"]).to_numpy()
    # Each ex-date in the first year steps tr_close / close: reinvested, not left out.
    assert (abs(ratio[1:] / ratio[:-1] - 1) > 1e-6).sum() >= first_year.height
    # Dividends held over a window (their coverage watermark) are not asked for again: a
    # fill of bars inside it costs what it did.
    inside = bf.plan(BackfillRequest("bars", ("KO",), since=D(2024, 6, 1)))
    assert [c.step for c in inside.chunks] == ["splits", "bars", "bars", "bars", "features"]


def test_a_year_ending_on_a_weekend_is_no_hole_for_the_fetched_through_mark(settings):
    """Found by a QA pass: `backfill bars --all --years 10` left 27 of 29 symbols "stale,
    2495 sessions behind" with every session held: the mark stopped at the first year that
    ended on a weekend or holiday (Friday 29 December 2023, then a window from Monday
    1 January, a holiday: "a hole"), so alerts opened and the next run planned it all again."""
    bf = make(settings)
    assert bf.run(bf.plan(BackfillRequest("bars", ("AAPL",), years=3))).state == "succeeded"
    row = bf.store.catalog.query("SELECT covered_through, sessions_behind FROM symbol_status "
                                 "WHERE symbol = 'AAPL' AND dataset = 'bars'").row(0)
    assert row == (D(2026, 11, 25), 0)
    # Hourly bars cut by month: November 2023 ends on a Thursday (30th), December 2023's
    # window starts Friday the 1st; September 2024 ends on Monday 30th after a weekend.
    hourly = bf.run(bf.plan(BackfillRequest("bars", ("AAPL",), since=D(2024, 8, 20),
                                            timeframe="1h")))
    assert hourly.state == "succeeded"
    assert bf.store.lake.read_coverage("AAPL").get("bars:1h") == D(2026, 11, 25)


def test_a_backfill_of_a_symbol_never_identified_asks_its_reference_first(settings):
    """Found by a QA pass: `backfill bars --symbol META --years 6` on the demo universe (no
    reference asked yet) stored the earlier company that used the ticker before 2022 (close
    32.5 on 2020-12-04), then a gap, then Meta, and its ticker_reuse check failed; a run asks
    the reference first and stores FB's history under META."""
    bf = make(settings)
    plan = bf.plan(BackfillRequest("bars", ("META",), years=6))
    assert [c.step for c in plan.chunks][:2] == ["reference", "splits"]
    assert plan.chunks[0].requests_expected == 1  # the sample provider's reference
    assert bf.run(plan).state == "succeeded"
    bars = bf.store.lake.read("bars", ["META"], level="1d")
    may_2022 = bars.filter(pl.col("session").is_between(D(2022, 5, 1), D(2022, 6, 10)))
    # Every session, across the ticker change (FB → META, June 2022).
    assert may_2022["session"].to_list() == calendars.sessions("XNYS", D(2022, 5, 1),
                                                               D(2022, 6, 10))
    fb = SampleProvider(clock=lambda: FIXED_NOW).bars("FB", "1d", D(2020, 12, 4),
                                                      D(2020, 12, 4))
    held = bars.filter(pl.col("session") == D(2020, 12, 4))["close"].item()
    assert held == pytest.approx(fb["close"].item(), rel=1e-12)  # FB's, not another's
    failing = bf.store.catalog.query("SELECT check_name FROM quality_status WHERE symbol = "
                                     "'META' AND NOT passed")["check_name"].to_list()
    assert "ticker_reuse" not in failing
    again = bf.plan(BackfillRequest("bars", ("META",), years=7))  # identified now
    assert "reference" not in [c.step for c in again.chunks]


def test_the_bars_checks_see_the_bars_as_re_based_after_a_split(settings):
    """Found by a QA pass: after `backfill bars --all --years 10` the lake was right, but
    `quality --failing` still failed AAPL on a -76 % "jump" across its 2020 split: the checks
    ran on the chunks as fetched, before the features chunk re-based them."""
    bf = make(settings)
    summary = bf.run(bf.plan(BackfillRequest("bars", ("AAPL",), years=10)))
    assert summary.state == "succeeded"
    assert not backfill_rebases(bf.store.catalog, summary.backfill_id).is_empty()
    failing = bf.store.catalog.query(
        "SELECT check_name, detail FROM quality_status WHERE symbol = 'AAPL' "
        "AND dataset = 'bars' AND NOT passed")
    assert failing.is_empty(), failing


def test_a_fill_that_closes_a_hole_counts_the_sessions_held_after_it(settings):
    """Found by a QA pass: X:BTCUSD backfilled 11-01..11-10 and from 11-20, then the hole
    filled: the heatmap was whole, yet `status` said stale, latest 11-19 — the fill moved the
    fetched-through mark to its own end, not over the sessions held after it."""
    bf = make(settings)
    sym = ("X:BTCUSD",)
    for since, until in ((D(2026, 11, 1), D(2026, 11, 10)), (D(2026, 11, 20), None),
                         (D(2026, 11, 11), D(2026, 11, 19))):
        done = bf.run(bf.plan(BackfillRequest("bars", sym, since=since, until=until)))
        assert done.state == "succeeded"
        if until is None:  # after the hole: the mark waits at its edge
            assert bf.store.lake.read_coverage("X:BTCUSD")["bars:1d"] == D(2026, 11, 10)
    latest = calendars.latest_session(calendar_for("crypto"), FIXED_NOW)
    assert bf.store.lake.read_coverage("X:BTCUSD")["bars:1d"] == latest
    row = bf.store.catalog.query("SELECT covered_through, sessions_behind FROM symbol_status "
                                 "WHERE symbol = 'X:BTCUSD' AND dataset = 'bars'").row(0)
    assert row == (latest, 0)


def test_an_options_backfill_shows_on_the_heatmap_and_a_fill_plans_its_hole(settings):
    """Found by a QA pass: SPY's options history backfilled for 11-02..11-06 and 11-16..11-20
    showed "0 present, never fetched" on the options heatmap, and a fill of 11-02..11-20
    took one snapshot of today (outside the range) and reported succeeded."""
    from enrich.backfill import heatmap as cov

    bf = make(settings)
    for since, until in ((D(2026, 11, 2), D(2026, 11, 6)), (D(2026, 11, 16), D(2026, 11, 20))):
        done = bf.run(bf.plan(BackfillRequest("options", ("SPY",), since=since, until=until)))
        assert done.state == "succeeded", done.message
    hm = cov.heatmap(bf.store.catalog, "options_iv", FIXED_NOW, sessions=30)
    i = hm.symbols.index("SPY")
    spy = dict(zip(hm.days.astype(object).tolist(), hm.day_codes[i].tolist(), strict=True))
    held = calendars.sessions("XNYS", D(2026, 11, 2), D(2026, 11, 6)) + \
        calendars.sessions("XNYS", D(2026, 11, 16), D(2026, 11, 20))
    assert all(spy[d] == cov.PRESENT for d in held), spy
    hole = calendars.sessions("XNYS", D(2026, 11, 9), D(2026, 11, 13))
    assert all(spy[d] == cov.MISSING for d in hole), spy
    assert not hm.never_fetched[i]
    plan = cov.plan_fill(hm, ["SPY"], D(2026, 11, 2), D(2026, 11, 20))
    assert plan.first_runs == [] and plan.backfills == [(("SPY",), hole[0], hole[-1])]
    # Found by the same pass: a fill across a held stretch listed contracts for it too (15
    # sessions for 10 missing, 139 requests): one window per stretch of missing sessions.
    before = calendars.sessions("XNYS", D(2026, 10, 26), D(2026, 10, 30))
    plan = cov.plan_fill(hm, ["SPY"], D(2026, 10, 26), D(2026, 11, 13))
    assert plan.cells == len(before) + len(hole)
    assert plan.backfills == [(("SPY",), before[0], before[-1]), (("SPY",), hole[0], hole[-1])]


def test_a_reference_chunk_that_fails_leaves_its_symbol_unfetched(settings):
    """Found by a review: only an unknown ticker stopped a symbol's later chunks; a reference
    that failed otherwise (a proxy's HTML 404, a 5xx) let them fetch unclamped — META's
    earlier company again — and a class the reference contradicts was never corrected by a
    backfill (and then by no run, the identity being held)."""
    from enrich.errors import TransientError

    class NoReference(SampleProvider):
        def ticker_reference(self, symbol):
            raise TransientError(f"{symbol} ticker details: server error 502")

    bf = make(settings, provider=NoReference(clock=lambda: FIXED_NOW))
    bf.store.catalog.query("UPDATE symbols SET asset_class = 'stocks' "  # a CSV import's
                           "WHERE symbol = 'X:ETHUSD'")                   # mistake
    done = bf.run(bf.plan(BackfillRequest("bars", ("META",), years=6)))
    assert done.state in ("partial", "failed")  # its features chunk found nothing to do
    assert bf.store.lake.read("bars", ["META"]).is_empty()
    chunks = backfill_chunks(bf.store.catalog, done.backfill_id)
    assert set(chunks.filter(pl.col("step") == "bars")["state"]) == {"failed"}
    assert "ticker reference was not read" in chunks.filter(
        pl.col("step") == "bars")["last_error"][0]
    bf = make(settings)  # the reference answers again: the failed chunks resume
    again = bf.run(bf.plan(BackfillRequest("bars", ("META",), years=6)), retry_failed=True)
    assert again.state == "succeeded"
    assert bf.store.lake.read("bars", ["META"], level="1d").filter(
        pl.col("session") == D(2020, 12, 4))["close"].item() > 100  # FB's, not 32.5
    wrong = bf.run(bf.plan(BackfillRequest("bars", ("X:ETHUSD",), days=30)))
    assert wrong.state in ("partial", "failed"), wrong.message
    assert bf.store.lake.read("bars", ["X:ETHUSD"]).is_empty()
    assert bf.store.catalog.scalar("SELECT asset_class FROM symbols WHERE symbol = "
                                   "'X:ETHUSD'") == "crypto"


def test_a_cancelled_bars_backfill_leaves_history_on_one_split_basis(settings):
    """Found by a QA pass: NVDA's bars backfill paused then cancelled left its history on two
    split bases (1517.6 on 2016-09-01, 48.93 on 2016-12-05: ×31) — the re-basing waited in
    the features chunk a cancel never reaches — and the daily run never repaired it."""
    bf = make(settings)
    cancel = threading.Event()
    plan = bf.plan(BackfillRequest("bars", ("NVDA",), years=12, chunk_days=90))
    done = bf.run(plan, cancel=cancel, progress=lambda p: p.chunk is not None and
                  p.chunk.step == "bars" and p.chunk.state == "done" and p.done >= 8 and
                  cancel.set())
    assert done.state == "cancelled" and done.left > 0
    bars = bf.store.lake.read("bars", ["NVDA"], level="1d")
    assert bars.height > 90
    assert bars["adjusted_asof"].min() >= D(2024, 6, 10)  # all on the post-split basis
    feats = bf.store.lake.read("features", ["NVDA"], level="1d")
    assert feats.height == bars.height  # and its features computed from them


def test_a_backfill_over_held_history_records_no_restatement_of_the_split_basis(settings):
    """Found by a QA pass: a run of AAPL, then a 12-year bars backfill, logged 4,638
    "restatements" of +300 % (48.26 → 193.04 on 2019-12-31): the chunk over the held year came
    on its window's split basis, older than the stored one, and only a newer basis was taken
    for a re-basing."""
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.run_model import RunParams

    bf = make(settings)
    Engine(bf.store, SampleProvider(clock=lambda: FIXED_NOW), settings.with_(history_years=1),
           clock=lambda: FIXED_NOW).run(RunParams(symbols=["AAPL"], datasets=["bars"]))
    for years in (12, 13):  # the second over history the first stored and re-based
        done = bf.run(bf.plan(BackfillRequest("bars", ("AAPL",), years=years)))
        assert done.state == "succeeded"
    restated = bf.store.catalog.scalar(
        "SELECT count(*) FROM restatements WHERE symbol = 'AAPL' AND dataset = 'bars'")
    assert restated == 0
    bars = bf.store.lake.read("bars", ["AAPL"], level="1d")
    assert bars["adjusted_asof"].min() >= D(2020, 8, 31)  # all on the post-split basis


def test_a_killed_backfill_reads_stopped_and_cancel_takes_effect_at_once(tmp_path):
    # Found by a QA pass: after kill -9, `list` said "running" with a growing ETA, and
    # pause / cancel answered "stops after its current chunk" and changed nothing.
    data = tmp_path / "killed"
    _killed_after(data, 3)

    def cli_(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "enrich", "backfill", *args], cwd=REPO,
                              env=subprocess_env(data, ENRICH_NOW=NOW), capture_output=True,
                              text=True, timeout=120)

    [row] = json.loads(cli_("list", "--json").stdout)
    assert row["status"] != "running", row
    out = cli_("cancel", row["backfill_id"])
    assert out.returncode == 0 and "it was not running" in out.stdout, out.stdout
    [row] = json.loads(cli_("list", "--json").stdout)
    assert row["status"] == "cancelled"
    cat = Catalog(data / "enrich.duckdb")
    assert cat.scalar("SELECT count(*) FROM runs WHERE state IN ('running', 'queued')") == 0


# -- failures, retry, resume, pause -----------------------------------------------------------
class Flaky:
    """The sample provider, with bars of some windows answering 503 while ``failing`` (each
    attempt of the request, under the provider's retry policy)."""

    def __init__(self, inner: SampleProvider, starts: set[dt.date]):
        self.inner, self.starts, self.failing = inner, starts, True
        self.name, self.is_demo, self.rate_limited = "sample", True, False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def with_priority(self, priority):
        return self

    def bars(self, symbol, timeframe, start, end):
        if self.failing and start in self.starts:
            def fail():
                raise TransientError("server error 503", provider="sample", endpoint="bars",
                                     status=503)
            self.inner.request("bars", symbol, fail)
        return self.inner.bars(symbol, timeframe, start, end)


def test_failed_chunks_keep_attempts_and_error_and_retry_failed_runs_only_them(
        settings, tmp_path):
    retry = RetryPolicy(max_retries=settings.max_retries, sleep=lambda s: None)
    flaky = Flaky(SampleProvider(clock=lambda: FIXED_NOW, retry=retry), {D(2024, 1, 1)})
    bf = make(settings, provider=flaky)
    req = BackfillRequest("bars", ("MSFT", "NVDA"), years=3)
    first = bf.run(bf.plan(req))
    assert first.state == "partial" and first.failed == 2
    assert first.retries == 2 * settings.max_retries
    plan = bf.plan(req)
    failed = [c for c in plan.chunks if c.state == "failed"]
    assert [(c.symbol, c.window_start) for c in failed] == [("MSFT", D(2024, 1, 1)),
                                                            ("NVDA", D(2024, 1, 1))]
    assert all(c.attempts == 1 + settings.max_retries for c in failed)
    assert all(c.requests_made == 1 + settings.max_retries for c in failed)
    assert all(c.last_error.startswith("transient: ") for c in failed)
    summary = backfill_progress_summary(bf.store.catalog, plan.backfill_id)[0]
    assert summary["status"] == "failed" and summary["chunks_failed"] == 2
    assert "503" in summary["last_error"]
    assert plan.todo(retry_failed=True) == failed

    flaky.failing = False
    said = []
    again = bf.run(plan, retry_failed=True, progress=lambda p: p.chunk is not None and
                   p.chunk.state == "done" and p.chunk.step == "bars" and said.append(
                       (p.chunk.requests_this_run, p.chunk.requests_made)))
    # The two chunks, and each symbol's features chunk after them (bars changed).
    assert again.state == "succeeded" and again.requests == 2 and again.total == 4
    # A QA pass: the progress line said "5 req" (the chunk's requests over every run); this
    # run's are what it made.
    assert said == [(1, 2 + settings.max_retries)] * 2
    final = backfill_progress_summary(bf.store.catalog, plan.backfill_id)[0]
    assert final["status"] == "complete"
    clean = make(load_settings({"ENRICH_DATA_DIR": str(tmp_path / "clean")}, dotenv_path=None))
    clean.run(clean.plan(req))
    for name in ("bars", "splits", "features"):
        assert_frame_equal(bf.store.lake.read(name), clean.store.lake.read(name))
    # NVDA's 2024-06-10 split re-based the chunk fetched before it: the drilldown says when.
    rebased = backfill_rebases(bf.store.catalog, plan.backfill_id)
    assert "NVDA" in rebased["symbol"].to_list()


def test_resume_finds_the_unfinished_backfill_after_its_window_moved(settings):
    bf = make(settings)
    req = BackfillRequest("bars", ("AAPL", "MSFT"), years=2)
    cancel = threading.Event()

    def stop_after_three(p):
        if p.done >= 3:
            cancel.set()

    plan = bf.plan(req)
    first = bf.run(plan, cancel=cancel, progress=stop_after_three)
    # Three chunks, then AAPL's features chunk: what it fetched is re-based before it stops.
    assert first.state == "cancelled" and first.done == 4 and first.left > 0
    run = bf.store.catalog.query("SELECT kind, state, message FROM runs").row(0, named=True)
    assert run["kind"] == "backfill" and run["state"] == "cancelled"

    friday = FIXED_NOW + dt.timedelta(days=2)  # Thursday is Thanksgiving
    later = make(settings, now=friday)
    assert later.plan(req).backfill_id != plan.backfill_id  # the window moved on
    found = find_resumable(later.store.catalog, req)
    assert found == plan.backfill_id
    resumed = later.plan(backfill_request(later.store.catalog, found))
    assert resumed.backfill_id == plan.backfill_id and resumed.exists
    assert len(resumed.todo()) == len(plan.chunks) - 4
    assert later.run(resumed).state == "succeeded"
    assert find_resumable(later.store.catalog, req) is None


def test_read_model_measures_throughput_of_a_running_backfill(settings):
    bf = make(settings)
    cancel = threading.Event()
    plan = bf.plan(BackfillRequest("news", ("AAPL",), days=200))
    first = bf.run(plan, cancel=cancel, progress=lambda p: p.done >= 4 and cancel.set())
    assert first.done == 4 and first.requests == 4
    cat = bf.store.catalog
    started = cat.scalar("SELECT started_at FROM runs WHERE run_id = ?", [first.run_id])
    # Seen while still running, two minutes in: 4 requests made, the rest at that pace.
    from enrich.store.catalog import WriteBatch

    b = WriteBatch()
    b.execute("UPDATE runs SET state = 'running', finished_at = NULL WHERE run_id = ?",
              [first.run_id])
    cat.write(b)
    [r] = backfill_progress_summary(cat, now=started + dt.timedelta(minutes=2))
    left = len(plan.chunks) - 4
    assert r["status"] == "running" and r["chunks_done"] == 4
    assert r["requests_remaining"] == left and r["requests_made"] == 4
    assert r["requests_per_min"] == pytest.approx(2.0)
    assert r["eta_s"] == pytest.approx(left / 2.0 * 60)
    assert r["fraction"] == pytest.approx(4 / len(plan.chunks))


def test_terminal_progress_bar_and_plain_lines():
    import io

    from enrich.backfill.jobs import Chunk, Progress
    from enrich.cli.progress import TerminalProgress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    # Retried: 3 requests over its runs, 1 by this one (the line says this run's).
    c = Chunk("bars", "AAPL", D(2024, 1, 1), D(2024, 12, 31), 1, "AAPL", state="done",
              records=252, requests_made=3, requests_this_run=1)
    p = Progress("bf-x", "run", c, done=5, failed=0, total=10, requests=5, requests_left=5,
                 elapsed_s=60.0)
    tty, plain = Tty(), io.StringIO()
    TerminalProgress(tty)(p)
    TerminalProgress(plain)(p)
    assert tty.getvalue().startswith("\r[##############--------------] 5/10 chunks")
    assert "5.0 req/min · ETA 1m00s" in tty.getvalue()
    assert plain.getvalue() == ("5/10 AAPL bars 2024-01-01..2024-12-31 done 252 rows 1 req · "
                                "5.0 req/min · ETA 1m00s\n")


def test_pause_then_resume_from_the_background(settings):
    class Slow(SampleProvider):
        gate = threading.Event()

        def bars(self, *a, **kw):
            # Held until the test has paused the backfill (a bound of 5 s let a slow machine
            # fetch every chunk first); the bound only frees a failed test's thread.
            self.gate.wait(TIMEOUT)
            return super().bars(*a, **kw)

    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    req = BackfillRequest("bars", ("KO",), years=4)
    provider = Slow(clock=lambda: FIXED_NOW)
    s = settings.with_(now_override=FIXED_NOW)
    run_id = start_in_background(s, req, store=store, provider=provider)
    try:
        bid = backfill_progress_summary(store.catalog)[0]["backfill_id"]
        running = backfill_progress_summary(store.catalog, bid)[0]
        assert running["status"] == "running" and running["last_run_id"] == run_id
        assert stop_backfill(store.catalog, bid, "paused", "test") == run_id
    finally:
        provider.gate.set()
    assert wait_for(bid, TIMEOUT)
    paused = backfill_progress_summary(store.catalog, bid)[0]
    # Paused is its own run state: not cancelled, and not counted in the success rates.
    assert paused["status"] == "paused" and paused["run_state"] == "paused"
    assert metrics_view.overall_success(store.catalog)["runs_finished"] == 0
    assert paused["chunks_pending"] > 0 and "resume" in paused["run_message"]
    steps = backfill_steps(store.catalog, bid)
    assert steps["step"].to_list() == ["reference", "splits", "dividends", "bars", "features"]

    run2 = start_in_background(s, backfill_id=bid, store=store, provider=provider)
    assert wait_for(bid, TIMEOUT) and run2 != run_id
    done = backfill_progress_summary(store.catalog, bid)[0]
    assert done["status"] == "complete" and done["run_state"] == "succeeded"
    # One source for chunk counts: the resumed run's message counts the backfill's chunks,
    # as its card does, then what this run did.
    assert done["chunks_done"] == done["chunks_total"]
    total = done["chunks_total"]
    assert done["run_message"].startswith(f"backfill {bid}: {total} of {total} chunks done (")
    assert metrics_view.overall_success(store.catalog)["runs_finished"] == 1
    chunks = backfill_chunks(store.catalog, bid)
    # A pause never redoes a fetched chunk (the features chunk, no request, ran at the pause
    # on what was fetched, and again after the rest).
    assert (chunks.filter(pl.col("step") != "features")["attempts"] == 1).all()


def test_a_backfill_is_live_until_its_on_done_has_run(settings):
    """``on_done`` (a heatmap fill's quality re-check) is part of the backfill: ``wait_for``
    and ``live_backfills`` must not report it ended while that still runs, or ``enrich fill``
    exits and its daemon thread dies with the re-check half done."""
    entered, release = threading.Event(), threading.Event()

    def on_done(result) -> None:
        entered.set()
        release.wait(TIMEOUT)  # held by the test; the bound only frees a failed test

    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    s = settings.with_(now_override=FIXED_NOW)
    start_in_background(s, BackfillRequest("bars", ("KO",), years=1), store=store,
                        provider=SampleProvider(clock=lambda: FIXED_NOW), on_done=on_done)
    bid = backfill_progress_summary(store.catalog)[0]["backfill_id"]
    try:
        assert entered.wait(TIMEOUT)
        # The thread is held inside on_done: it cannot end, whatever the machine's speed.
        assert wait_for(bid, 0.05) is False
        assert bid in live_backfills()
    finally:
        release.set()
    assert wait_for(bid, TIMEOUT)
    assert bid not in live_backfills()


def test_a_split_brought_by_a_backfill_rebases_bars_and_features(settings):
    bf = make(settings)
    sample = bf.provider
    # Bars stored before anything knew of AAPL's 2020 split (as fetched in 2019).
    early = sample.bars("AAPL", "1d", D(2019, 1, 1), D(2019, 12, 31))
    bf.store.lake.upsert("bars", early)
    summary = bf.run(bf.plan(BackfillRequest("splits", ("AAPL",))))
    assert summary.state == "succeeded"
    bars = bf.store.lake.read("bars", ["AAPL"])
    today = sample.bars("AAPL", "1d", D(2019, 1, 1), D(2019, 12, 31)).with_columns(
        adjusted_asof=pl.lit(D(2020, 8, 31)))
    fresh = sample.bars("AAPL", "1d", D(2019, 1, 1), D(2026, 11, 25)).filter(
        pl.col("session") <= D(2019, 12, 31))
    assert (bars["close"] - fresh["close"]).abs().max() < 1e-9
    assert bars["adjusted_asof"].unique().to_list() == [D(2020, 8, 31)]
    assert today.height == bars.height
    feats = bf.store.lake.read("features", ["AAPL"])
    assert feats.height == bars.height
    rebased = backfill_rebases(bf.store.catalog, summary.backfill_id)
    assert rebased.height == 1 and rebased["records"][0] == bars.height


def test_an_hourly_backfill_leaves_the_daily_bars_status_alone(settings):
    # Found by a QA pass: a 1h backfill of old history wrote the bars row of symbol_status
    # (the daily bars'), so fresh symbols read "stale 735 sessions" and a stale alert opened.
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.run_model import RunParams

    bf = make(settings)
    clock = lambda: FIXED_NOW  # noqa: E731
    Engine(bf.store, SampleProvider(clock=clock), settings, clock=clock).run(
        RunParams(symbols=["AAPL"]))

    def status() -> dict:
        return bf.store.catalog.query(
            "SELECT latest_session, covered_through, sessions_behind, consecutive_failures "
            "FROM symbol_status WHERE symbol = 'AAPL' AND dataset = 'bars'").row(0, named=True)

    daily = status()
    assert daily["sessions_behind"] == 0
    old = FIXED_NOW.date() - dt.timedelta(days=400)
    summary = bf.run(bf.plan(BackfillRequest("bars", ("AAPL",), since=old - dt.timedelta(
        days=20), until=old, timeframe="1h")))
    assert summary.state == "succeeded"
    assert not bf.store.lake.read("bars", ["AAPL"], level="1h").is_empty()
    assert status() == daily


def test_a_dividends_backfill_recomputes_the_total_return_close(settings):
    # Found by a QA pass: KO's tr_close kept only the first run's dividends after a
    # backfill of ten years of them (up to 23 % off) until the next day's refresh.
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.run_model import RunParams
    from enrich.quant.features import compute_features, dividends_on_basis

    bf = make(settings)
    clock = lambda: FIXED_NOW  # noqa: E731
    Engine(bf.store, SampleProvider(clock=clock), settings.with_(history_years=3),
           clock=clock).run(RunParams(symbols=["KO"]))
    lake = bf.store.lake
    assert bf.run(bf.plan(BackfillRequest("bars", ("KO",), years=10))).state == "succeeded"
    before = lake.read("dividends", ["KO"]).height
    summary = bf.run(bf.plan(BackfillRequest("dividends", ("KO",), since=D(2016, 1, 1))))
    assert summary.state == "succeeded" and lake.read("dividends", ["KO"]).height > before
    bars = lake.read("bars", ["KO"], level="1d")
    want = compute_features(bars, dividends=dividends_on_basis(
        lake.read("dividends", ["KO"]), lake.read("splits", ["KO"])))
    got = lake.read("features", ["KO"], level="1d")
    assert got["tr_close"].to_list() == want["tr_close"].to_list()


# -- priority on the shared limiter -----------------------------------------------------------
def test_backfill_requests_queue_behind_a_runs_requests(settings):
    order: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        order.append(request.url.path)
        return httpx.Response(200, json={"status": "OK", "request_id": "r", "results": []})

    # On a clock that stands still until both requests have queued: on the real clock the
    # run's request had to queue within the 0.25 s before the backfill's slot came, which a
    # loaded machine can miss (the backfill's request then rightly went first).
    now, queued = [0.0], threading.Event()

    def sleep(seconds: float) -> None:
        assert queued.wait(TIMEOUT), "the requests never queued"
        now[0] += seconds

    limiter = RateLimiter(per_minute=240, clock=lambda: now[0], sleep=sleep)  # every 0.25 s
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        runs = MassiveProvider(client, "key", limiter=limiter)  # the engine's, priority 0
        bf = Backfiller(Store.from_settings(settings), runs, settings)
        assert bf.provider._priority == BACKFILL_PRIORITY < runs._priority
        limiter.acquire()  # the current slot is taken: the next requests queue
        backfill = threading.Thread(target=lambda: [
            bf.provider.splits("AAPL", D(2020, 1, 1), D(2020, 12, 31)) for _ in range(2)])
        backfill.start()
        _until(lambda: limiter.waiting == 1)
        scheduled = threading.Thread(
            target=lambda: runs.dividends("AAPL", D(2020, 1, 1), D(2020, 12, 31)))
        scheduled.start()
        _until(lambda: limiter.waiting == 2)
        queued.set()
        backfill.join(TIMEOUT)
        scheduled.join(TIMEOUT)
    # Queued after the backfill's request, the run's request still goes first.
    assert order == ["/stocks/v1/dividends", "/stocks/v1/splits", "/stocks/v1/splits"]


# -- the command line -------------------------------------------------------------------------
def test_cli_usage_list_show_pause_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENRICH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENRICH_NOW", NOW)
    monkeypatch.chdir(tmp_path)
    assert main(["backfill", "bars"]) == 2
    assert "--symbol" in capsys.readouterr().err
    assert main(["backfill", "bars", "AAPL"]) == 2
    assert main(["backfill", "bars", "--symbol", "AAPL", "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    code, out = cli(capsys, "backfill", "dividends", "--symbol", "KO", "--dry-run")
    # KO's ticker reference (the desk never identified it) and its dividends.
    assert code == 0 and "requests expected: 2" in out and "ETA at 5 requests/min" in out
    code, out = cli(capsys, "backfill", "dividends", "--symbol", "KO")
    assert code == 0 and "succeeded" in out
    bid = re.search(r"backfill (bf-\w+)", out).group(1)
    code, out = cli(capsys, "backfill", "list", "--json")
    assert [r["status"] for r in json.loads(out)] == ["complete"]
    code, out = cli(capsys, "backfill", "show", bid)
    assert code == 0 and "dividends" in out
    assert main(["backfill", "pause", bid]) == 2  # complete: nothing to pause
    assert f"backfill {bid} is complete" in capsys.readouterr().err
    code, out = cli(capsys, "backfill", "resume", bid)
    assert code == 0 and "nothing left to do" in out
    assert main(["backfill", "resume", "bf-nope"]) == 2
    assert main(["backfill", "pause", "bf-nope"]) == 2
    assert "no backfill bf-nope" in capsys.readouterr().err


def test_a_dataset_a_symbol_does_not_have_is_said_not_skipped_silently(tmp_path, monkeypatch,
                                                                        capsys):
    """Found by a QA pass: `backfill dividends --symbol X:BTCUSD` said "nothing left to do"
    (exit 0); with `X:BTCUSD,KO` the pair was never mentioned."""
    monkeypatch.setenv("ENRICH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENRICH_NOW", NOW)
    monkeypatch.chdir(tmp_path)
    assert main(["backfill", "dividends", "--symbol", "X:BTCUSD"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: nothing to backfill: X:BTCUSD: crypto have no dividends")
    code = main(["backfill", "dividends", "--symbol", "X:BTCUSD,KO"])
    said = capsys.readouterr()
    assert code == 0 and "succeeded" in said.out
    assert "note: X:BTCUSD: crypto have no dividends; skipped" in said.err


def test_sigterm_stops_a_backfill_as_ctrl_c_does_and_it_resumes(tmp_path, monkeypatch,
                                                                 capsys):
    """Found by a QA pass: SIGTERM killed a CLI backfill outright (no close: found
    "interrupted" later by a reader), and Ctrl-C closed its run "cancelled" though nobody
    cancelled it (a run's Ctrl-C is "interrupted")."""
    import os
    import signal

    from enrich.cli import progress

    monkeypatch.setenv("ENRICH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENRICH_NOW", NOW)
    monkeypatch.chdir(tmp_path)
    calls = []

    def terminate(self, p):
        calls.append(p.done)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(progress.TerminalProgress, "__call__", terminate)
    assert main(["backfill", "bars", "--symbol", "KO", "--years", "3"]) == 143
    assert capsys.readouterr().err.strip().endswith("terminated")
    assert signal.getsignal(signal.SIGTERM) == before  # the handler was the backfill's alone
    [row] = backfill_progress_summary(Store(tmp_path / "data").catalog)
    assert row["run_state"] == "interrupted" and row["status"] == "interrupted"
    assert row["run_message"].startswith("stopped by SIGTERM")
    # KO's chunks were not all done: its task is no "ok" (a QA pass: an interrupted backfill
    # counted the symbol it was working on enriched).
    cat = Store(tmp_path / "data").catalog
    assert cat.query("SELECT symbol, state FROM tasks WHERE run_id = ?",
                     [row["last_run_id"]]).rows() == [("KO", "interrupted")]
    assert cat.scalar("SELECT symbols_ok FROM runs WHERE run_id = ?",
                      [row["last_run_id"]]) == 0
    monkeypatch.setattr(progress.TerminalProgress, "__call__", lambda self, p: None)
    assert main(["backfill", "resume", row["backfill_id"]]) == 0
    [row] = backfill_progress_summary(Store(tmp_path / "data").catalog)
    assert row["status"] == "complete"


def test_a_dry_run_where_there_is_no_desk_creates_nothing(tmp_path, monkeypatch, capsys):
    """Found by a QA pass: `--data-dir <a typo> backfill bars … --dry-run` created a catalog,
    a lake and the demo universe there (`run --dry-run` creates nothing)."""
    where = tmp_path / "typo_dir"
    monkeypatch.chdir(tmp_path)
    code = main(["--data-dir", str(where), "backfill", "bars", "--symbol", "AAPL", "--days",
                 "5", "--dry-run"])
    said = capsys.readouterr()
    assert code == 0 and "requests expected:" in said.out
    assert "nothing was created" in said.err
    assert not where.exists() and list(tmp_path.iterdir()) == []


# -- the dashboard page -----------------------------------------------------------------------
APP = str(REPO + "/app.py")


@pytest.fixture
def page_env(monkeypatch, tmp_path):
    from enrich.service import reset_services

    data = tmp_path / "data"
    for k, v in {"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off",
                 "ENRICH_NOW": NOW}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    store = Store(data)
    ensure_demo_universe(store.catalog)
    yield store
    reset_services()


def _page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/backfill.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _rerun(at):
    """Rerun once a background backfill moved on (the page caches reads per data version,
    which it re-reads at most every half second)."""
    import streamlit as st

    st.cache_data.clear()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _text(at) -> str:
    return "\n".join(str(e.value) for e in (*at.markdown, *at.caption, *at.info, *at.error))


def _press(at, label: str):
    [button] = [b for b in at.button if b.label == label]
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_plans_starts_watches_pauses_and_resumes(page_env):
    store = page_env
    at = _page()
    assert at.title[0].value == "Backfill" and "No backfills yet" in _text(at)
    at.selectbox(key="bf_dataset").set_value("dividends")
    at.multiselect(key="bf_symbols").set_value(["KO", "PG"])
    _press(at, "Preview plan")
    # Each symbol's ticker reference (never identified yet) and its dividends.
    assert "4 requests" in _text(at) and not backfill_progress_summary(store.catalog)
    _press(at, "Start backfill")
    [r] = backfill_progress_summary(store.catalog)
    assert wait_for(r["backfill_id"], TIMEOUT)
    _rerun(at)
    assert ":green-badge[complete]" in _text(at)
    # Each symbol's ticker reference and dividends, then its features (tr_close takes the
    # dividends in).
    assert [m.value for m in at.metric if m.label == "Chunks done"] == ["6 / 6"]

    # A running backfill (held on its bars requests) shows Pause; then Resume finishes it.
    class Held(SampleProvider):
        gate = threading.Event()

        def bars(self, *a, **kw):
            # Held until Pause was pressed: two page runs come first, which on a loaded
            # machine outlasted the 10 s this wait had (the backfill then ended on its own).
            self.gate.wait(TIMEOUT)
            return super().bars(*a, **kw)

    held = Held(clock=lambda: FIXED_NOW)
    s = load_settings(dotenv_path=None)
    start_in_background(s, BackfillRequest("bars", ("KO",), years=3), store=store,
                        provider=held)
    try:
        bid = backfill_progress_summary(store.catalog)[0]["backfill_id"]
        _rerun(at)
        assert ":blue-badge[running]" in _text(at)
        assert "`1d` bars for `KO`" in _text(at)  # the timeframe is on the card
        _press(at, "Pause")
        assert any("Pausing: the backfill stops after its current chunk" in x.value
                   for x in at.success)
    finally:
        held.gate.set()
    assert wait_for(bid, TIMEOUT)
    _rerun(at)
    assert ":gray-badge[paused]" in _text(at) and "resume" in _text(at)
    # Found by a QA pass: "Pausing …" stayed on the card ~30 s after it read paused.
    assert not any("Pausing" in x.value for x in at.success)
    _press(at, "Resume")
    assert wait_for(bid, TIMEOUT)
    _rerun(at)
    done = backfill_progress_summary(store.catalog, bid)[0]
    assert done["status"] == "complete"
    assert ":gray-badge[paused]" not in _text(at) and _text(at).count(":green-badge[complete]") == 2


def test_a_backfill_chunk_logs_what_the_provider_noted(settings):
    """A listing the provider answered only in part (contracts left out for want of their
    terms, a listing cut short) says so in its request's notes; a backfill chunk's fetch_log
    row carries them, as a run's step does (they were dropped)."""

    class Noting(SampleProvider):
        def option_contracts(self, *a, **kw):
            listed = super().option_contracts(*a, **kw)
            self._ledger.note("AAPL contracts: left out 1 of 9 contracts without their terms")
            return listed

    bf = make(settings, provider=Noting(clock=lambda: FIXED_NOW))
    bf.run(bf.plan(BackfillRequest("options", ("AAPL",), days=3)))
    logged = bf.store.catalog.query(
        "SELECT status, error_message FROM fetch_log WHERE dataset = 'options_iv' "
        "AND error_message LIKE '%left out%'")
    assert logged.height >= 1 and set(logged["status"]) == {"ok"}


def test_a_contract_whose_bars_cannot_be_priced_fails_alone_not_its_batch(settings):
    """Contracts are priced and written in batches of up to 25. One contract's bars that
    cannot be priced (here a provider answering them without their session) fail that
    contract only; the others of its batch, whose requests are spent, are priced and done
    (before, the whole batch failed and --retry-failed asked every contract again)."""
    bad: list[str] = []

    class Garbled(SampleProvider):
        def option_bars(self, contract, start, end):
            frame = super().option_bars(contract, start, end)
            if not bad:  # the first contract asked
                bad.append(contract)
                return frame.drop("session")
            return frame

    bf = make(settings, provider=Garbled(clock=lambda: FIXED_NOW))
    summary = bf.run(bf.plan(BackfillRequest("options", ("AAPL",), days=3)))
    chunks = backfill_chunks(bf.store.catalog, summary.backfill_id).filter(
        pl.col("step") == "option_bars")
    failed = chunks.filter(pl.col("state") == "failed")
    done = chunks.filter(pl.col("state") == "done")
    assert failed["symbol"].to_list() == bad
    assert done.height == chunks.height - 1 >= 2
    assert summary.state == "partial" and summary.failed == 1
    priced = set(bf.store.lake.read("options_iv", ["AAPL"])["contract"])
    assert set(done["symbol"]) <= priced and bad[0] not in priced
    # Each fetch log row of the batch says what happened to it.
    logged = bf.store.catalog.query(
        "SELECT status, error_message FROM fetch_log WHERE dataset = 'options_iv' "
        "AND run_id = ? AND error_message LIKE '%batch of contracts failed%'",
        [summary.run_id])
    assert set(logged["status"]) == {"ok"} and logged.height >= 1
    assert all(m.startswith("priced alone") for m in logged["error_message"])
