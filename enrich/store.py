"""The store: one lake and one catalog under a data directory, migrated once per process."""

from __future__ import annotations

import threading
from pathlib import Path

from enrich.catalog import Catalog
from enrich.config import Settings
from enrich.lake import Lake

_migrated: set[Path] = set()
_migrate_lock = threading.Lock()


class Store:
    def __init__(self, data_dir: Path, catalog_timeout_s: float = 30.0, migrate: bool = True):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lake = Lake(self.data_dir / "lake", lock_dir=self.data_dir / "locks")
        self.catalog = Catalog(self.data_dir / "enrich.duckdb", lake_root=self.lake.root,
                               timeout_s=catalog_timeout_s)
        if not migrate:  # a worker process of a run whose parent migrated it
            return
        key = self.catalog.path.resolve()
        with _migrate_lock:
            if key not in _migrated:
                self.catalog.migrate()
                _migrated.add(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(settings.data_dir, settings.catalog_timeout_s)
