"""The store: one lake and one catalog under a data directory, migrated once per process.

Opening a store creates the desk's folders and catalog where there are none; a command that
only reads asks ``desk_exists`` first, so a mistyped data directory is refused rather than
made into an empty desk. Opening a store also repairs what would otherwise stop everything: a
catalog file that is not a readable DuckDB database is moved aside and a new one created (its
run history is lost, and ``notices`` says so), and a new catalog next to a lake that holds
data gets its universe back from the lake's symbols instead of starting empty.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from enrich.config import Settings
from enrich.errors import CatalogUnreadableError, ConfigError
from enrich.schemas import DATASETS
from enrich.store.catalog import Catalog, WriteBatch
from enrich.store.lake import Lake

log = logging.getLogger(__name__)
_migrated: set[Path] = set()
_migrate_lock = threading.Lock()
CATALOG_NAME = "enrich.duckdb"
VIEW_QUARANTINE_WAIT_S = 0.5  # the catalog's lock is held meanwhile: do not wait long


class Store:
    def __init__(self, data_dir: Path, catalog_timeout_s: float = 30.0, migrate: bool = True):
        self.data_dir = Path(data_dir)
        self.notices: list[str] = []  # repairs made while opening, for the CLI or page to show
        _prepare(self.data_dir)
        self.lake = Lake(self.data_dir / "lake", lock_dir=self.data_dir / "locks")
        self.catalog = Catalog(
            self.data_dir / CATALOG_NAME, lake_root=self.lake.root,
            timeout_s=catalog_timeout_s,
            quarantine_file=lambda path, reason: self.lake.quarantine_file(
                path, reason, lock_timeout=VIEW_QUARANTINE_WAIT_S))
        if not migrate:  # a worker process of a run whose parent migrated it
            return
        key = self.catalog.path.resolve()
        with _migrate_lock:
            # Again when the file is gone (deleted by hand since): reads never create it.
            if key not in _migrated or not self.catalog.path.exists():
                self.notices = self._open_catalog()
                _migrated.add(key)
        for notice in self.notices:  # the CLI prints warnings on stderr; pages show notices
            log.warning(notice)

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(settings.data_dir, settings.catalog_timeout_s)

    def _open_catalog(self) -> list[str]:
        from enrich.store import universe

        existed = self.catalog.path.exists()
        try:
            self.catalog.migrate()
        except CatalogUnreadableError as exc:
            row = self.catalog.set_aside(str(exc))
            self.catalog.migrate()
            if row is None:  # another process repaired it first
                return []
            batch = WriteBatch()
            batch.insert("quarantine", row)
            self.catalog.write(batch)
            n = len(universe.rebuild_from_lake(self.catalog, self.lake))
            return [f"The catalog {self.catalog.path} was not a readable DuckDB database, so it "
                    f"was moved to {self.data_dir / row['moved_to']} and a new one was created. "
                    "Run history, logs and statuses from before are lost; the lake's data is "
                    f"intact, and the universe was rebuilt from its {n} symbols. The next run "
                    "brings the statuses back."]
        if existed:
            return []
        added = universe.rebuild_from_lake(self.catalog, self.lake)
        if not added:
            return []
        return [f"The catalog {self.catalog.path} was missing, so a new one was created: run "
                f"history starts empty, and the universe was rebuilt from the lake's "
                f"{len(added)} symbols."]


def desk_exists(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a desk: a catalog, or a lake with data whose catalog was
    lost (opening a store creates it again and rebuilds the universe from the lake). Creates
    nothing."""
    data_dir = Path(data_dir)
    if (data_dir / CATALOG_NAME).exists():  # a folder there too: opening says what is wrong
        return True
    lake = data_dir / "lake"
    return any(next((lake / name).glob("**/symbol=*"), None) is not None for name in DATASETS)


def _prepare(data_dir: Path) -> None:
    """Create the data directory's folders, or say plainly why they cannot be."""
    folders = (data_dir, data_dir / "lake", data_dir / "locks", data_dir / "locks" / "symbols",
               data_dir / "lake" / "_coverage")
    for path in folders:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path} is a file, but enrich needs a folder there; move it "
                              "away or point ENRICH_DATA_DIR at another folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the folder {path} ({exc.strerror or exc}); "
                              "point ENRICH_DATA_DIR at a folder this user can write") from None
    catalog = data_dir / CATALOG_NAME
    if catalog.is_dir():
        raise ConfigError(f"{catalog} is a folder, but it should be the catalog file; move it "
                          "away and enrich creates a new catalog")
    for path in folders:
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{path} is not writable by this user; enrich writes its lake, "
                              "catalog and locks there (check ENRICH_DATA_DIR's permissions)")
    if catalog.exists() and not os.access(catalog, os.R_OK | os.W_OK):
        raise ConfigError(f"the catalog {catalog} is not readable and writable by this user; "
                          "fix its permissions")
