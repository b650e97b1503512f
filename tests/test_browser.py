"""The dashboard in a real browser: Debian Chromium driven by Playwright against
``streamlit run app.py`` on a free port with a fresh data directory.

First launch → "Start the first enrichment" → the run reaches its end and the overview numbers
change; Controls → Run now → follow the run to its final state; Symbols → search, pick the row
in the table → the drilldown draws the price chart and the IV smile; every page opens without
a Streamlit exception box. A second test opens the Quality page on a store with a gap, drags a
box over the gap in the coverage heatmap, fills it and sees the gap close. Screenshots of
each page go to the test's tmp dir, or to ``docs/screenshots/`` with ``ENRICH_SCREENSHOTS=1``
(so a test run never dirties the tree)::

    ENRICH_SCREENSHOTS=1 .venv/bin/python -m pytest tests/test_browser.py

Runs under ``CI=true``; skipped only when ``/usr/bin/chromium`` is missing outside CI.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from enrich.symbols import DEMO_UNIVERSE
from tests.conftest import FIXED_NOW, REPO

N_DEMO = len(DEMO_UNIVERSE)  # 29: stocks, ETFs, two crypto pairs, a forex pair, an index

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
SHOTS = Path(REPO) / "docs" / "screenshots"
# Read at import: the autouse clean_environ fixture removes ENRICH_* variables before tests.
WRITE_SHOTS = os.environ.get("ENRICH_SCREENSHOTS") == "1"
VIEWPORT = {"width": 1280, "height": 900}
RUN_TIMEOUT_MS = 240_000
NOW = FIXED_NOW.isoformat()  # the desk's clock: Wednesday 2026-11-25 22:00 UTC

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium); required under CI",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        with contextlib.suppress(OSError), \
                urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
            if r.read().strip() == b"ok":
                return
        time.sleep(0.25)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:g}s")


@pytest.fixture
def server(tmp_path):
    """``streamlit run app.py`` on a free port; the whole process group dies afterwards.

    The desk's clock is fixed (``ENRICH_NOW``, as every store the tests build): on the real
    clock a session that closed between the run and a look at the numbers made symbols
    "late", so "Fresh" never reached the universe when a test ran across a close."""
    _DESK[:] = [tmp_path / "data"]
    with streamlit_server("app.py", tmp_path) as url:
        yield url


@contextlib.contextmanager
def streamlit_server(script: str, tmp_path: Path):
    """``streamlit run <script>`` (from the repository) on a free port with the desk in
    ``tmp_path / "data"``; yields its URL; the whole process group dies afterwards."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": REPO,
        "ENRICH_DATA_DIR": str(tmp_path / "data"),
        "ENRICH_SCHEDULER": "off",
        "ENRICH_HISTORY_YEARS": "1",
        "ENRICH_PROVIDER": "sample",
        "ENRICH_NOW": NOW,
    }
    log_path = tmp_path / "streamlit.log"
    log = open(log_path, "wb")  # noqa: SIM115 (closed in finally)
    proc = None
    try:
        for attempt in range(3):
            # The port is free when asked, but another process may bind it before streamlit
            # does (it starts for seconds): then streamlit exits, and a new port is tried.
            port = _free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", script, "--server.port",
                 str(port), "--server.headless", "true"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_healthy(url, proc)
                break
            except RuntimeError:
                taken = f"Port {port} is not available".encode() in log_path.read_bytes()
                if attempt == 2 or not taken:
                    raise
        yield url
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()
        if os.environ.get("CI"):
            sys.stderr.write(log_path.read_text(errors="replace")[-4000:])


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport=VIEWPORT)
            pg.set_default_timeout(120_000)  # patient on a loaded 2-core machine
            pg.goto(server)
            yield pg
        finally:
            browser.close()


def no_exception(page) -> None:
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


def watch_text(page, pattern: str) -> None:
    """From now on, note in ``window.__enrichSeen`` whether text matching the regular
    expression ``pattern`` is ever on the page (a toast or a progress line that is gone by the
    time a poll looks still counts). Read it with ``seen(page)``."""
    page.evaluate("""(pattern) => {
        const re = new RegExp(pattern);
        if (window.__enrichObserver) window.__enrichObserver.disconnect();
        window.__enrichSeen = false;
        const look = () => {
            if (!window.__enrichSeen && re.test(document.body.innerText)) {
                window.__enrichSeen = true;
            }
        };
        window.__enrichObserver = new MutationObserver(look);
        window.__enrichObserver.observe(document.body,
            {subtree: true, childList: true, characterData: true});
        look();
    }""", pattern)


def seen(page) -> bool:
    return page.evaluate("window.__enrichSeen") is True


def wait_seen(page, what: str, timeout_ms: int = 30_000) -> None:
    """Wait until ``watch_text``'s text has shown (a toast shows when the script run that
    asked for it ends, after what the run drew)."""
    try:
        page.wait_for_function("window.__enrichSeen === true", timeout=timeout_ms)
    except Exception as exc:  # playwright's TimeoutError: say what was not shown
        raise AssertionError(f"no {what} was shown within {timeout_ms / 1000:g} s") from exc


def settle(page, seconds: float = 1.5) -> None:
    """Let the script run finish (and charts draw) before looking or shooting."""
    page.wait_for_timeout(300)
    with contextlib.suppress(Exception):
        page.locator('[data-testid="stStatusWidget"]').get_by_text("Running").wait_for(
            state="hidden", timeout=30_000)
    page.wait_for_timeout(int(seconds * 1000))


@pytest.fixture
def shot(tmp_path):
    """``shot(page, name)`` saves a viewport screenshot as ``<name>.png``."""
    folder = SHOTS if WRITE_SHOTS else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> None:
        page.screenshot(path=str(folder / f"{name}.png"))

    return take


def metric_value(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def wait_metric(page, label: str, want: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = metric_value(page, label)
            if value == want:
                return
        page.wait_for_timeout(500)
    raise AssertionError(f"{label} shows {value!r}, expected {want!r}\n{desk_state()}")


_DESK: list = []  # the server's data directory


def desk_state() -> str:
    """What the desk's catalog and error log say, for a failure's message."""
    if not _DESK:
        return ""
    import duckdb

    data, out = _DESK[0], []
    try:
        con = duckdb.connect(str(data / "enrich.duckdb"), read_only=True)
        try:
            out.append(repr(con.execute(
                "SELECT * FROM runs ORDER BY requested_at").fetchall()))
            out.append(repr(con.execute(
                "SELECT state, count(*) FROM tasks GROUP BY state").fetchall()))
            out.append(repr(con.execute(
                "SELECT dataset, count(*), sum(consecutive_failures), max(last_success_at) "
                "FROM symbol_status GROUP BY dataset").fetchall()))
        finally:
            con.close()
    except Exception as exc:  # the catalog held by the app: say so
        out.append(f"catalog not read: {exc}")
    errors = data / "logs" / "errors.log"
    if errors.exists():
        out.append(errors.read_text(errors="replace")[-3000:])
    return "\n".join(out)


def goto_page(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title, level=1).wait_for()
    settle(page)
    no_exception(page)


def test_dashboard_end_to_end(page, shot):
    # -- first launch: one obvious button, then live progress, then numbers ------------------
    start = page.get_by_role("button", name="Start the first enrichment")
    start.wait_for()
    settle(page, 0.5)
    no_exception(page)
    shot(page, "first_launch")
    # The run's symbols can all finish between two of the fragment's 2 s polls on a fast
    # machine (CI failed once waiting for a line already gone): note the progress line
    # whenever it shows, then check it did.
    watch_text(page, rf"Running now[\s\S]*(\d+ / {N_DEMO} symbols|starting|waiting to start)")
    start.click()
    wait_metric(page, "Fresh", str(N_DEMO), RUN_TIMEOUT_MS / 1000)
    assert seen(page), "no live progress line was shown while the first run ran"
    assert metric_value(page, "Never fetched") == "0"
    settle(page)
    no_exception(page)
    steps_before = int(metric_value(page, "Fetch steps").replace(",", ""))
    assert steps_before > 0
    shot(page, "overview")

    # -- Controls: Run now, follow it to its final state -----------------------------------------
    goto_page(page, "Controls")
    watch_text(page, r"Run [0-9a-f]{8} started")  # a toast: it may be gone before a poll
    page.get_by_role("button", name="Run now").click()
    page.get_by_role("link", name=re.compile(r"Follow run [0-9a-f]{8}")).first.wait_for()
    wait_seen(page, "'Run … started' toast")
    settle(page, 0.5)
    shot(page, "controls")
    page.get_by_role("link", name=re.compile(r"Follow run [0-9a-f]{8}")).first.click()
    page.get_by_role("heading", level=1, name=re.compile(
        r"Run [0-9a-f]{8} · .*(succeeded|partial|failed|cancelled)")).wait_for(
        timeout=RUN_TIMEOUT_MS)
    settle(page)
    no_exception(page)
    assert page.locator(".js-plotly-plot").count() >= 1  # the task timeline
    shot(page, "run_detail")

    # -- the overview numbers moved -------------------------------------------------------------
    goto_page(page, "Overview")
    steps_after = int(metric_value(page, "Fetch steps").replace(",", ""))
    assert steps_after > steps_before

    # -- Symbols: pick AAPL in the table → drilldown with price chart and IV smile -------------
    goto_page(page, "Symbols")
    shot(page, "symbols")
    search = page.get_by_label("Search symbol or name")
    search.fill("AAPL")
    search.press("Enter")
    page.get_by_text(f"1 of {N_DEMO} symbols match").wait_for()
    settle(page, 0.5)
    grid = page.locator('[data-testid="stDataFrame"]').first
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # the row's selection cell
    page.get_by_role("heading", name="AAPL · Apple Inc.", level=1).wait_for()
    assert "symbol=AAPL" in page.url
    page.locator(".js-plotly-plot").nth(2).wait_for()
    settle(page, 2)
    no_exception(page)
    titles = [t.text_content() for t in page.locator(".js-plotly-plot .gtitle").all()]
    assert any("Smile" in (t or "") for t in titles), titles
    annotations = page.locator(".js-plotly-plot .annotation-text").all_text_contents()
    assert "Price (split-adjusted)" in annotations
    assert page.locator(".js-plotly-plot .candlestick, .js-plotly-plot .trace.boxes").count() \
        or page.locator(".js-plotly-plot path.box").count()
    shot(page, "symbol_drilldown")

    # -- every page, no exception box ----------------------------------------------------------
    for title in ("Runs", "Metrics", "Quality", "Health", "Settings", "Controls", "Backfill",
                  "Symbols", "Overview"):
        goto_page(page, title)
        if title in ("Runs", "Metrics", "Quality", "Health", "Settings", "Backfill"):
            shot(page, title.lower())


# -- coverage heatmap: select a gap, fill it, see it close --------------------------------------
@pytest.fixture
def gap_data(tmp_path):
    """Before the server starts: AAPL, MSFT and SPY enriched (sample provider, 120 days), then
    three AAPL sessions deleted from the lake and the stored data re-checked."""
    import polars as pl

    from enrich.checks import quality_run
    from enrich.config import load_settings
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.run_model import RunParams
    from enrich.providers.sample.provider import SampleProvider
    from enrich.store.store import Store
    from enrich.store.universe import add_symbols

    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / "data"),
                              "ENRICH_SCHEDULER": "off", "ENRICH_NOW": NOW}, dotenv_path=None)
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [("AAPL", "stocks", "Apple Inc."),
                                ("MSFT", "stocks", "Microsoft Corp."),
                                ("SPY", "etfs", "SPDR S&P 500 ETF Trust")])
    summary = Engine(store, SampleProvider(clock=settings.now), settings).run(
        RunParams(lookback_days=120))
    assert summary.state == "succeeded"
    bars = store.lake.read("bars", ["AAPL"], level="1d")
    gone = bars["session"].to_list()[-25:-22]
    store.lake.replace_symbol("bars", "AAPL", bars.filter(~pl.col("session").is_in(gone)),
                              level="1d")
    quality_run.audit(store, ["AAPL"], ["bars"])
    return gone


def test_coverage_heatmap_gap_fill(gap_data, page, shot):
    page.get_by_role("heading", name="Overview", level=1).wait_for()  # the app's navigation
    settle(page, 0.5)
    goto_page(page, "Quality")
    wait_metric(page, "Missing cells", "3", 90)
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for()
    settle(page, 1)
    shot(page, "quality_gap")
    # Drag a box over the top row (AAPL: gaps first) across every session.
    drag = plot.locator(".nsewdrag").first
    box = drag.bounding_box()
    top = box["y"] + 2
    page.mouse.move(box["x"] + 2, top)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, top + box["height"] / 6, steps=5)
    page.mouse.move(box["x"] + box["width"] - 2, top + box["height"] / 4, steps=5)
    page.mouse.up()
    page.get_by_text(re.compile(r"3 missing cells: backfill bars .* for AAPL")).wait_for(
        timeout=90_000)
    settle(page, 0.5)
    no_exception(page)
    # The toast lives ~4 s; on a loaded machine it may come and go between two polls, so a
    # mutation observer installed before the click records that it was shown.
    watch_text(page, "Filling 3 cells")
    page.get_by_role("button", name="Fill 3 missing cells").click()
    wait_metric(page, "Missing cells", "0", RUN_TIMEOUT_MS / 1000)
    settle(page)
    no_exception(page)
    wait_seen(page, "'Filling 3 cells' toast")
    # The caption follows the fill's own fragment, which may draw after the metric did.
    page.get_by_text("Last fill: 1 run(s) finished").wait_for(timeout=90_000)
    assert page.get_by_text("Last fill: 1 run(s) finished").count() == 1
    shot(page, "quality_filled")


# -- a run that ends between two polls still refreshes the overview -----------------------------
@pytest.fixture
def one_never_fetched(tmp_path):
    """Before the server starts: AAPL enriched (sample provider, 120 days); KO in the
    universe, never fetched."""
    from enrich.config import load_settings
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.run_model import RunParams
    from enrich.providers.sample.provider import SampleProvider
    from enrich.store.store import Store
    from enrich.store.universe import add_symbols

    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / "data"),
                              "ENRICH_SCHEDULER": "off", "ENRICH_NOW": NOW}, dotenv_path=None)
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [("AAPL", "stocks", "Apple Inc."),
                                ("KO", "stocks", "Coca-Cola Co.")])
    Engine(store, SampleProvider(clock=settings.now), settings).run(
        RunParams(symbols=["AAPL"], lookback_days=120))

    def run_ko():
        return Engine(store, SampleProvider(clock=settings.now), settings).run(
            RunParams(symbols=["KO"], lookback_days=10))

    return run_ko


def test_a_run_that_ends_between_two_polls_refreshes_the_overview(one_never_fetched, page):
    """A short run from another process (the CLI, the scheduler) can start and end between two
    of the overview's 2 s polls: the page never saw it running, and kept its numbers from
    before until someone clicked (CI once waited 240 s on it). It reruns when a run has ended
    since its numbers were read."""
    page.get_by_role("heading", name="Overview", level=1).wait_for()
    wait_metric(page, "Never fetched", "1", 90)
    settle(page, 0.5)
    assert one_never_fetched().state == "succeeded"  # one symbol, 10 days: well under 2 s
    wait_metric(page, "Never fetched", "0", 30)
    no_exception(page)
