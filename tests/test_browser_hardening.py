"""Text is text, in a real browser: Markdown payloads in every URL parameter and every stored
text field (CSV-imported names, pause reason and author, run messages and provider, task and
fetch errors, symbol statuses, quality evidence, backfill errors) render as text on every page —
no ``<a>`` or ``<img>`` pointing at their host appears in the DOM, and the browser sends no
request to it (every request leaving 127.0.0.1 is intercepted and recorded).

Runs under ``CI=true``; skipped only when ``/usr/bin/chromium`` is missing outside CI (see
``tests/test_browser.py``, whose server fixture this uses).
"""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import quote, urlsplit

import pytest

from tests.test_browser import (  # noqa: F401 (server is a fixture)
    CHROMIUM,
    CHROMIUM_ARGS,
    NOW,
    VIEWPORT,
    no_exception,
    server,
    settle,
)

EVIL = "evil.example"
PAYLOAD = (f"[x](https://{EVIL}/link) ![p](https://{EVIL}/p.png) https://{EVIL}/bare "
           f"www.{EVIL} <img src=https://{EVIL}/raw.png> **bold** $x^2$")
Q = quote(PAYLOAD)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def hostile(tmp_path):
    """Before the server starts: a store whose every stored text field holds the payload."""
    from enrich.config import load_settings
    from enrich.pipeline import scheduler as sched
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.run_model import RunParams
    from enrich.providers.sample.provider import SampleProvider
    from enrich.store.catalog import WriteBatch, utcnow
    from enrich.store.store import Store
    from enrich.store.universe import import_csv

    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / "data"),
                              "ENRICH_SCHEDULER": "off", "ENRICH_HISTORY_YEARS": "1",
                              "ENRICH_NOW": NOW}, dotenv_path=None)  # the server's clock
    store = Store.from_settings(settings)
    quoted = PAYLOAD.replace('"', '""')
    report = import_csv(store.catalog, f'AAPL,stocks,"{quoted}"\nSPY,etfs,"{quoted}"\n')
    assert report.added == ["AAPL", "SPY"] and not report.errors
    run = Engine(store, SampleProvider(clock=settings.now), settings).run(
        RunParams(lookback_days=60))
    now = utcnow()
    b = WriteBatch()
    b.execute("UPDATE runs SET message = ?, provider = ?", [PAYLOAD, PAYLOAD])
    b.upsert("tasks", {"run_id": run.run_id, "symbol": "AAPL", "state": "failed",
                       "error_class": PAYLOAD, "error_message": PAYLOAD})
    b.execute("UPDATE fetch_log SET status = 'failed', error_class = ?, error_message = ? "
              "WHERE symbol = 'AAPL'", [PAYLOAD, PAYLOAD])
    b.execute("UPDATE symbol_status SET consecutive_failures = 1, last_error_class = ?, "
              "last_error_message = ?, last_error_at = ? WHERE symbol = 'AAPL'",
              [PAYLOAD, PAYLOAD, now])
    b.execute("UPDATE quality_status SET passed = false, detail = ?", [PAYLOAD])
    b.insert("backfills", {"backfill_id": "bf1", "dataset": "bars", "symbols": ["AAPL"],
                           "window_start": dt.date(2026, 1, 2), "window_end": dt.date(2026, 2, 2),
                           "spec": {}, "provider": PAYLOAD, "status": "active",
                           "created_at": now, "updated_at": now, "last_run_id": run.run_id})
    b.insert("backfill_progress", {"backfill_id": "bf1", "run_id": run.run_id,
                                   "dataset": "bars", "symbol": "AAPL",
                                   "window_start": dt.date(2026, 1, 2),
                                   "window_end": dt.date(2026, 2, 2), "state": "failed",
                                   "attempts": 1, "last_error": PAYLOAD, "updated_at": now})
    store.catalog.write(b)
    sched.set_paused(store.catalog, PAYLOAD, PAYLOAD, now)
    return run.run_id


# (path and query, what must show the payload as text: a CSS selector, or None)
def _visits(run_id: str) -> list[tuple[str, str | None]]:
    return [
        ("/", "[data-testid=stCaptionContainer]"),  # the last run's message
        ("/symbols?symbol=AAPL", "h1"),  # the CSV-imported name in the title
        (f"/symbols?symbol={Q}", "[data-testid=stAlert]"),  # "… is not in the universe"
        (f"/symbols?q={Q}&state={Q}&dataset={Q}&asset={Q}&sort={Q}&page={Q}", None),
        (f"/runs?run={run_id}", "[data-testid=stAlert]"),  # the run's message, in its outcome
        (f"/runs?run={Q}", "[data-testid=stAlert]"),  # "No run …"
        (f"/runs?run_symbol={Q}&run_state={Q}&run_kind={Q}", None),
        (f"/metrics?x={Q}", None),
        (f"/quality?cov_dataset={Q}", None),
        (f"/health?x={Q}", "[data-testid=stAlert]"),  # paused by … : reason
        (f"/controls?x={Q}", "[data-testid=stAlert]"),
        (f"/backfill?x={Q}", "[data-testid=stCaptionContainer]"),  # the chunk's last error
        (f"/settings?x={Q}", None),
    ]


def test_markdown_payloads_render_as_text_on_every_page(hostile, server):  # noqa: F811
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def intercept(route) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(120_000)  # patient on a loaded 2-core machine
            page.route("**/*", intercept)  # before the first request
            for path, shows in _visits(hostile):
                page.goto(server + path)
                if shows:  # the payload is drawn (as text): the page got that far
                    page.locator(shows).filter(has_text=EVIL).first.wait_for()
                else:
                    page.locator("h1").first.wait_for()
                settle(page, 1)
                no_exception(page)
                links = page.locator(f'a[href*="{EVIL}"]')
                assert links.count() == 0, (path, links.first.evaluate("e => e.outerHTML"))
                images = page.locator(f'img[src*="{EVIL}"]')
                assert images.count() == 0, (path, images.first.evaluate("e => e.outerHTML"))
                assert page.locator("[data-testid=stMarkdownContainer] strong").filter(
                    has_text="bold").count() == 0, path  # **bold** stays asterisks
        finally:
            browser.close()
    assert not [u for u in outside if EVIL in u], json.dumps(outside)
