"""What the dashboard's AppTest reviews share: open a page of the app, read what it said, and
write as another user or process would."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from pages import _common
from tests.conftest import REPO

APP = str(Path(REPO) / "app.py")


def open_page(page: str, **query) -> AppTest:
    """The app, switched to ``page`` with ``query`` parameters; it drew without an exception."""
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page(page)
    at.query_params.update(query)
    at.run()
    assert not at.exception, (page, [e.value for e in at.exception])
    return at


def said(at: AppTest) -> str:
    """What the page told the user: alerts, captions, Markdown, toasts and plain text."""
    parts = [e.value for e in (*at.info, *at.success, *at.warning, *at.error, *at.caption,
                                *at.markdown, *at.toast, *at.text)]
    return "\n".join(str(p) for p in parts)


def elsewhere(write) -> None:
    """A write by another user or process; the page's next rerun sees it (its half-second
    version memo forgotten, as a user's next click outlasts it)."""
    write()
    _common.invalidate()
