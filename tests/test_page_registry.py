"""The one page registry (``pages/_common.py`` ``PAGE_TABLE``): every page script is in it
once, and every entry is a script, so the sidebar (app.py) and the links between pages name
the same pages."""

from __future__ import annotations

from pathlib import Path

from pages import _common as c

ROOT = Path(__file__).resolve().parent.parent


def test_every_page_script_is_registered_once_and_every_entry_exists():
    scripts = {p.stem for p in (ROOT / "pages").glob("*.py") if not p.stem.startswith("_")}
    names = [name for name, _, _ in c.PAGE_TABLE]
    assert len(names) == len(set(names))
    assert set(names) == scripts
    assert all((ROOT / path).is_file() for path in c.PAGES.values())


def test_no_page_is_named_by_a_literal_path_outside_the_registry():
    for path in [ROOT / "app.py", *(ROOT / "pages").glob("*.py")]:
        text = path.read_text()
        if path.name == "_common.py":
            continue
        assert '"pages/' not in text, f"{path.name} names a page by its path; use c.PAGES"
