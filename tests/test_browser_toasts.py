"""A toast that a rerun follows reaches the browser (Debian Chromium, Playwright).

Streamlit can drop a toast when ``st.rerun()`` follows it before it reached the browser, so a
button's own confirmation ("Filling 3 cells", "Activated AAPL", "Cleared 2 refusal(s)") may
never show. Measured here with a bare script (button → ``st.toast`` → ``st.rerun()`` → 200
lines): 7 and 9 toasts of 10 shown; this test with ``st.toast`` in place of ``c.toast`` failed
4 runs of 4 (toasts 1; 1 and 9; 1; 1 and 2 never shown), and passes 4 of 4 as it stands. CI
once failed the heatmap fill's browser test so.
The pages hand their toasts to ``pages._common.toast``; ``app.py`` shows them when the run
ends, through ``toasts_after`` as this script does (a rerun carries them to the next run's
end). Outside it (AppTest runs a page's file on its own after ``switch_page``; a fragment's
own run) a toast shows at once, as ``tests/test_pages.py`` sees.
"""

from __future__ import annotations

import pytest

from tests.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    no_exception,
    settle,
    streamlit_server,
    wait_seen,
    watch_text,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLICKS = 10

# A button that says what it did, then reruns; the page below it takes a while to draw.
SCRIPT = '''
import streamlit as st

from pages import _common as c


def page():
    if st.button("Toast then rerun", key="go"):
        st.session_state["n"] = st.session_state.get("n", 0) + 1
        c.toast(f"Toast number {st.session_state['n']} shown")
        st.rerun()
    for i in range(200):
        st.write(f"line {i}")
    st.write("the end of the page")


with c.toasts_after():
    page()
'''


def test_every_toast_a_rerun_follows_is_shown(tmp_path):
    from playwright.sync_api import sync_playwright

    script = tmp_path / "toast_then_rerun.py"
    script.write_text(SCRIPT)
    missed = []
    with streamlit_server(str(script), tmp_path) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(120_000)
            page.goto(url)
            page.get_by_text("the end of the page").wait_for()
            for n in range(1, CLICKS + 1):
                watch_text(page, rf"Toast number {n} shown")
                page.get_by_role("button", name="Toast then rerun").click()
                try:  # shown when the run that asked for it ends; it lives ~4 s
                    wait_seen(page, f"toast {n}", timeout_ms=15_000)
                except AssertionError:
                    missed.append(n)
                settle(page, 0.5)
            no_exception(page)
        finally:
            browser.close()
    assert not missed, f"toasts {missed} of {CLICKS} were never shown"
