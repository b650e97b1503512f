"""Defects found by the review of the day's changes (review7): each test fails without its fix."""

from __future__ import annotations

import pytest

from enrich.errors import CatalogMissingError
from enrich.store.store import Store


def test_catalog_gone_while_waiting_for_its_lock_is_not_created_empty(tmp_path, monkeypatch):
    """The catalog moved aside (another process's repair of an unreadable file, or by hand)
    while a read waited for the catalog's lock: the read says the catalog is missing, and
    leaves no empty catalog behind (the check was made before the lock was taken)."""
    store = Store(tmp_path / "data")
    catalog = store.catalog
    acquire = catalog._lock.acquire

    def moved_meanwhile(*args, **kwargs):  # the other process held the lock and moved it
        if catalog.path.exists():
            catalog.path.rename(catalog.path.with_name("enrich.duckdb.unreadable-x"))
        return acquire(*args, **kwargs)

    monkeypatch.setattr(catalog._lock, "acquire", moved_meanwhile)
    with pytest.raises(CatalogMissingError, match="does not exist"):
        catalog.scalar("SELECT count(*) FROM symbols")
    assert not catalog.path.exists()
