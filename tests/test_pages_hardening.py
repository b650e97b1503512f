"""Pages under bad input (AppTest): Settings → Import refuses a CSV that is not UTF-8 or has a
field over 128 KiB (nothing imported, one message), reads one with a byte-order mark; no page
shows MASSIVE_BASE_URL's user-info; an unexpected error shows a short message naming the log
file that holds the traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from enrich.service import reset_services
from enrich.store.store import Store
from enrich.store.universe import add_symbols, list_symbols
from tests.conftest import FIXED_NOW, REPO
from tests.test_secrets import _page_text

APP = str(Path(REPO) / "app.py")


@pytest.fixture
def data(tmp_path, monkeypatch):
    data = tmp_path / "data"
    add_symbols(Store(data).catalog, [("AAPL", None, None)])
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", FIXED_NOW.isoformat())
    monkeypatch.chdir(tmp_path)
    yield data
    reset_services()


def _settings_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/settings.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("name, content, says", [
    ("latin1.csv", "symbol,name\nIBM,Société Générale\n".encode("latin-1"), "is not UTF-8"),
    ("huge.csv", b"IBM," + b"x" * 140_000 + b"\n", "field larger than field limit"),
])
def test_import_refuses_a_file_that_is_not_a_csv_of_symbols(data, name, content, says):
    at = _settings_page()
    at.file_uploader(key="import_file").set_value((name, content, "text/csv"))
    at.button(key="import").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and says in errors[0], errors
    assert list_symbols(Store(data).catalog)["symbol"].to_list() == ["AAPL"]  # nothing added


def test_import_reads_a_csv_with_a_byte_order_mark(data):
    at = _settings_page()
    at.file_uploader(key="import_file").set_value(
        ("bom.csv", "symbol,asset_class\nIBM,stocks\n".encode("utf-8-sig"), "text/csv"))
    at.button(key="import").click().run()
    assert not at.error and any("Added 1: `IBM`" in s.value for s in at.success)
    assert list_symbols(Store(data).catalog)["symbol"].to_list() == ["AAPL", "IBM"]


def test_pasted_lines_with_a_huge_field_are_refused(data):
    at = _settings_page()
    at.text_area(key="import_text").set_value("IBM," + "y" * 140_000)
    at.button(key="import").click().run()
    assert any("field larger than field limit" in e.value for e in at.error)


def test_no_page_shows_the_base_urls_user_info(data, monkeypatch):
    monkeypatch.setenv("MASSIVE_API_KEY", "mk_test_0123456789abcdefABCDEF")
    monkeypatch.setenv("MASSIVE_BASE_URL", "https://alice:s3cretpass@127.0.0.1:9")
    at = AppTest.from_file(APP, default_timeout=60).run()
    for page in ("pages/settings.py", "pages/health.py"):
        at.switch_page(page)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        text = _page_text(at)
        assert "127.0.0.1:9" in text  # the host is shown …
        assert "s3cretpass" not in text and "alice" not in text, page  # … never the user-info


def test_an_unexpected_error_says_where_its_traceback_is(data, monkeypatch):
    import enrich.views.metrics

    def broken(*a, **k):
        raise RuntimeError("a detail that must stay in the log: /secret/path")

    monkeypatch.setattr(enrich.views.metrics, "alltime_stats", broken)
    # The Overview, run by app.py's navigation (AppTest's switch_page runs a page directly).
    at = AppTest.from_file(APP, default_timeout=60).run()
    log = data / "logs" / "errors.log"
    shown = [e.value for e in at.error]
    assert any("unexpected error (RuntimeError)" in e and str(log.resolve()) in e
               for e in shown), shown
    assert not any("/secret/path" in e for e in shown)
    assert "/secret/path" in log.read_text() and "Traceback" in log.read_text()
    assert at.exception  # still raised: Streamlit logs it, its box shows no details
