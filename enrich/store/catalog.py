"""The catalog: ``<data>/enrich.duckdb``, the operational state (runs, logs, status, views).

DuckDB lets one process hold the file for writing and blocks the others, so no process keeps
the catalog open: every access attaches the file (to an in-memory DuckDB the process keeps),
does its work and detaches it, under a cross-process file lock (``enrich.duckdb.lock``). When
another program holds the file we wait a bounded time, then raise ``CatalogBusyError`` naming
the holder.

Tables (created by the numbered migrations of ``enrich.store.migrations``, recorded in
``schema_migrations``)::

    symbols            the universe
    runs, tasks        job history, run × symbol
    fetch_log          one row per fetch step (run, symbol, dataset); symbol ``*`` for a
                       universe-wide request (grouped daily, a market-wide window)
    compute_log        one row per feature computation
    symbol_status      symbol × dataset: last success, latest session held, failures
    backfill_progress  backfill chunks and their state
    backfills          one row per backfill (request, window, paused/cancelled)
    backfill_contracts option contracts an options backfill follows, per session
    quality_log        data-quality check results (enrich.checks.quality); quality_status the latest
    session_coverage   symbol × dataset: sessions held, gaps, sessions failing a check
    restatements       stored history a re-fetch changed (session, column, old, new)
    plan_limits        the provider plan's history window and publication time, as found
    quarantine         unreadable files moved aside (lake files, a catalog set aside)
    alerts             alert events: incidents opened and resolved, tests (enrich.alerts)
    alert_snoozes      rules or incidents whose alerts are not sent until a time
    scheduler_state    paused flag, heartbeat
    data_version       a counter bumped by every write (pages cache on it)

plus one view per lake dataset (``bars``, ``dividends``, … ``features``). All timestamps are
TIMESTAMPTZ in UTC; session dates are DATE.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import logging
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import polars as pl
import pyarrow as pa
from filelock import FileLock, Timeout

from enrich.errors import (
    CatalogBusyError,
    CatalogMissingError,
    CatalogUnreadableError,
    ConfigError,
    CorruptFileError,
)
from enrich.schemas import DATASETS, SYMBOL_DATASETS
from enrich.store import journal, quarantine
from enrich.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)


# Statuses of symbol × dataset that a quarantined file marks failing (not derived features).
_STATUS_DATASETS = frozenset(SYMBOL_DATASETS)
# DuckDB's words for a file that is not (or no longer) a readable database.
_UNREADABLE_RE = re.compile(r"not a valid DuckDB database|Could not read enough bytes|"
                            r"Corrupt database file|checksum|replaying WAL", re.IGNORECASE)

_BUSY_RE = re.compile(r"Conflicting lock is held in (.*?\(PID \d+\))")
_CON_PATHS: dict[int, str] = {}  # id of an open catalog connection -> its catalog's _key


def _alias_for(path: Path) -> str:
    """The name the attached file goes by: its stem, as ``duckdb.connect(path)`` names it."""
    stem = path.name.split(".", 1)[0] or "catalog"
    if stem.lower() in ("memory", "system", "temp", "main"):
        stem = f"{stem}_catalog"
    return stem.replace('"', '""')


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


WAITING_NOTE = ".waiting"  # next to the lock file: whom its holder is waiting for


def _lock_holder(lock_file: str) -> str:
    """Who holds the catalog's lock file, in words: the enrich process (from /proc/locks on
    Linux) and, if that process itself waits for another program, that program."""
    who = "another enrich process"
    with contextlib.suppress(OSError, ValueError):
        st = os.stat(lock_file)
        dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == dev:
                    pid = int(fields[4])
                    who = f"enrich process {pid} ({_cmdline(pid)})"
                    break
    with contextlib.suppress(OSError):
        waits_for = Path(lock_file + WAITING_NOTE).read_text().strip()
        if waits_for:
            return f"{waits_for}, which {who} is waiting for"
    return who


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "command unknown"
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if args and "python" in Path(args[0]).name:
        args = args[1:]
    text = " ".join(args) or "command unknown"
    return text if len(text) <= 80 else text[:79] + "…"


def _os_reason(exc: OSError) -> str:
    what = exc.strerror or type(exc).__name__
    return f"{what}: {exc.filename}" if exc.filename else what


def record_quarantined(con: duckdb.DuckDBPyConnection, item: quarantine.Quarantined) -> None:
    """Insert a quarantined lake file's row and mark its symbol × dataset failing with the
    message "corrupt file, re-fetch …" — unless a fetch succeeded after it was moved."""
    row = quarantine.as_row(item)
    con.execute(
        "INSERT INTO quarantine (moved_to, original, kind, dataset, level, symbol, reason, "
        "size_bytes, quarantined_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (moved_to) DO NOTHING",
        [row[k] for k in ("moved_to", "original", "kind", "dataset", "level", "symbol",
                          "reason", "size_bytes", "quarantined_at")])
    if item.symbol is None or item.dataset not in _STATUS_DATASETS or \
            (item.dataset == "bars" and item.level not in (None, "1d")):
        return
    if not DATASETS[item.dataset].month_column:
        # The symbol's one file of the dataset is gone: it holds nothing until a fetch (the
        # coverage heatmap, ``coverage`` and ``fill`` read this row) — unless checks after a
        # fetch have recorded it since.
        con.execute(
            "UPDATE session_coverage SET first_session = NULL, last_session = NULL, "
            "through_session = NULL, covered_from = NULL, sessions_held = 0, gaps = '[]', "
            "failed_sessions = '[]', checked_at = ? WHERE symbol = ? AND dataset = ? "
            "AND (checked_at IS NULL OR checked_at < ?)",
            [item.quarantined_at, item.symbol, item.dataset, item.quarantined_at])
    con.execute(
        "INSERT INTO symbol_status (symbol, dataset, last_attempt_at, consecutive_failures, "
        "last_error_class, last_error_message, last_error_at) "
        "VALUES (?, ?, ?, 1, 'corrupt', ?, ?) ON CONFLICT (symbol, dataset) DO UPDATE SET "
        "consecutive_failures = greatest(symbol_status.consecutive_failures, 1), "
        "last_error_class = 'corrupt', last_error_message = excluded.last_error_message, "
        "last_error_at = excluded.last_error_at "
        "WHERE symbol_status.last_success_at IS NULL "
        "OR symbol_status.last_success_at < excluded.last_error_at",
        [item.symbol, item.dataset, item.quarantined_at, item.message()[:1000],
         item.quarantined_at])


def _placeholder_select(dataset: str) -> str:
    type_map = {
        "String": "VARCHAR", "Float64": "DOUBLE", "Int64": "BIGINT", "Int32": "INTEGER",
        "Date": "DATE", "Boolean": "BOOLEAN",
    }
    cols = []
    for name, dtype in DATASETS[dataset].schema.items():
        base = dtype.base_type().__name__ if hasattr(dtype, "base_type") else str(dtype)
        sql_t = "TIMESTAMPTZ" if base == "Datetime" else type_map.get(base, "VARCHAR")
        cols.append(f'CAST(NULL AS {sql_t}) AS "{name}"')
    return "SELECT " + ", ".join(cols) + " WHERE false"


class Catalog:
    """Access to the catalog file, attached only for the length of an access, under a
    cross-process lock."""

    def __init__(self, path: Path, lake_root: Path | None = None, timeout_s: float = 30.0,
                 quarantine_file: Callable[[Path, str], object] | None = None):
        self.path = Path(path)
        self.lake_root = Path(lake_root) if lake_root else self.path.parent / "lake"
        self.timeout_s = timeout_s
        # Moves an unreadable lake file aside (``Lake.quarantine_file``); None: leave it.
        self._quarantine_file = quarantine_file
        self._index_seen = -1  # size of the quarantine index last imported (-1: not yet)
        self._partial_views: set[str] = set()  # views left over some files (see _view_sql)
        self._lock = FileLock(str(self.path) + ".lock", timeout=timeout_s)
        self._thread_lock = threading.RLock()
        self._placeholder_views: set[str] | None = None
        self._engines: dict[int | None, duckdb.DuckDBPyConnection] = {}  # see _duckdb
        self._attached: duckdb.DuckDBPyConnection | None = None  # the engine holding the file
        self._alias = _alias_for(self.path)
        self._key = str(self.path.resolve())  # names this catalog in _SHAPES
        self._depth = 0  # nested connect() blocks of the thread holding the file

    # -- connections ------------------------------------------------------------------------
    def connect(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """Attach the file, yield a connection to it, detach. Holds the cross-process lock
        for the whole block."""
        return self._connect(threads=None)

    @contextlib.contextmanager
    def _connect(self, threads: int | None,
                 create: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """``connect``; only ``create`` (``migrate``) makes the file where there is none:
        attaching a missing file would create an empty one, so a read would leave a catalog
        without tables (and a desk) behind."""
        deadline = time.monotonic() + self.timeout_s
        with self._thread_lock:
            if not create and not self.path.exists():  # before the lock, which makes a file
                raise CatalogMissingError(self._missing())
            try:
                if create:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock.acquire(timeout=self.timeout_s)
            except Timeout:
                raise CatalogBusyError(
                    f"the catalog {self.path} is held by {_lock_holder(self._lock.lock_file)} "
                    f"(waited {self.timeout_s:g}s); try again when it is done"
                ) from None
            except OSError as exc:
                raise ConfigError(
                    f"cannot open the catalog {self.path}: {_os_reason(exc)}; check that "
                    "ENRICH_DATA_DIR is a folder this user can write") from None
            try:
                # Again under the lock: a file moved aside while this waited (another
                # process's repair) must not be attached, which would create it empty.
                if not create and not self.path.exists():
                    raise CatalogMissingError(self._missing())
                con = self._open(deadline, threads)
                try:
                    yield con
                finally:
                    self._close(con)
            finally:
                self._lock.release()

    def _missing(self) -> str:
        return (f"the catalog {self.path} does not exist: it was deleted or moved after enrich "
                "opened it, or ENRICH_DATA_DIR names no desk; opening the desk again (a new "
                "command, or restarting the dashboard or serve) creates it")

    def _duckdb(self, threads: int | None) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB kept by this Catalog, into which each access attaches the file.

        Starting a DuckDB instance costs ~15 ms of CPU (more than a typical write), so the
        instance lives as long as the Catalog and only the file is attached and detached per
        access: the file is still held only inside ``connect()``. It gets what a fresh
        ``duckdb.connect(path)`` had: UTC, and spilling next to the file. (Its external file
        cache, which outlives an access, holds no local files: ``cache_local_files`` is off.)
        ``threads=None`` is DuckDB's default, for reads; ``write`` uses its own instance with one
        thread (see there). A forked child drops them (see ``_drop_engines_after_fork``).
        """
        engine = self._engines.get(threads)
        if engine is None:
            config: dict[str, str | bool | int | float | list[str]] = {
                "temp_directory": f"{self.path}.tmp"}
            if threads:
                config["threads"] = str(threads)
            engine = duckdb.connect(":memory:", config=config)
            engine.execute("SET GLOBAL TimeZone='UTC'")
            self._engines[threads] = engine
            _WITH_ENGINES.add(self)
        return engine

    def _open(self, deadline: float, threads: int | None) -> duckdb.DuckDBPyConnection:
        if self._depth == 0:
            engine = self._duckdb(threads)
            self._attach(engine, deadline)
            self._attached = engine
        assert self._attached is not None  # a nested block uses the file where it is attached
        con = self._attached.cursor()
        self._depth += 1
        _CON_PATHS[id(con)] = self._key
        try:
            con.execute(f'USE "{self._alias}"')
        except BaseException:
            self._close(con)
            raise
        return con

    def _attach(self, engine: duckdb.DuckDBPyConnection, deadline: float) -> None:
        path = str(self.path).replace("'", "''")
        delay = 0.05
        note = Path(str(self._lock.lock_file) + WAITING_NOTE)
        try:
            while True:
                try:
                    engine.execute(f"ATTACH '{path}' AS \"{self._alias}\"")
                    return
                except duckdb.IOException as exc:
                    text = str(exc)
                    if "lock" not in text.lower():
                        raise self._open_error(text) from None
                    m = _BUSY_RE.search(text)
                    holder = f"another program ({m.group(1) if m else 'unknown program'})"
                    # Other enrich processes wait on our lock meanwhile: tell them whom we
                    # wait for, so every process names the same holder (see _lock_holder).
                    with contextlib.suppress(OSError):
                        note.write_text(holder)
                    if time.monotonic() >= deadline:
                        raise CatalogBusyError(
                            f"the catalog {self.path} is held open by {holder}; close it "
                            "(e.g. the notebook or duckdb shell) and retry") from None
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        finally:
            with contextlib.suppress(OSError):
                note.unlink()

    def _open_error(self, text: str) -> Exception:
        """The error for a catalog file DuckDB could not open (not a lock conflict)."""
        if _UNREADABLE_RE.search(text):
            return CatalogUnreadableError(
                f"the catalog {self.path} is not a readable DuckDB database ({text.strip()})")
        if "permission" in text.lower() or "read-only" in text.lower():
            return ConfigError(f"cannot open the catalog {self.path} for writing ({text.strip()});"
                               " check the permissions of ENRICH_DATA_DIR and its files")
        return ConfigError(f"cannot open the catalog {self.path}: {text.strip()}")

    def _close(self, con: duckdb.DuckDBPyConnection) -> None:
        """Close the cursor (rolling back what it left open); the last one detaches the file.

        Detaching checkpoints the WAL into the file, as closing a connection did. If that
        fails the whole instance is closed, so the file is never left held.
        """
        _CON_PATHS.pop(id(con), None)
        self._depth -= 1
        try:
            con.close()
        finally:
            engine = self._attached
            if self._depth == 0 and engine is not None:
                self._attached = None
                try:
                    engine.execute(f'DETACH "{self._alias}"')
                except BaseException:
                    self._engines = {k: e for k, e in self._engines.items() if e is not engine}
                    engine.close()
                    raise

    # -- schema -----------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction; returns versions applied."""
        applied: list[int] = []
        _SHAPES.pop(self._key, None)
        with self._connect(threads=None, create=True) as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ)"
            )
            done = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
            for version, name, sql in MIGRATIONS:
                if version in done:
                    continue
                with transaction(con, bump=False):
                    for stmt in _split_sql(sql):
                        con.execute(stmt)
                    con.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, utcnow()]
                    )
                applied.append(version)
            self._refresh_views(con, force=bool(applied))
        _SHAPES.pop(self._key, None)  # table shapes cached before these migrations
        return applied

    def _refresh_views(self, con: duckdb.DuckDBPyConnection, force: bool = False) -> None:
        """Point one view per dataset at its Parquet files (a typed empty view until any exist),
        and import new records of lake files quarantined by any process.

        Binding a view over many files reads their footers, so views are only (re)created
        when forced, when they are missing or point at another directory (the data dir moved),
        when a dataset that had no files gets its first one, or while a view leaves out an
        unreadable file that could not be moved aside yet. An unreadable file never stops the
        views: see ``_view_sql``.
        """
        self._sync_quarantine(con)
        root = self.lake_root.resolve()
        if self._placeholder_views is None or force:
            rows = con.execute(
                "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()
            existing = {name: sql for name, sql in rows}
            stale = set()
            for name in DATASETS:
                sql = existing.get(name)
                if (force or sql is None or "read_parquet([" in sql
                        or ("WHERE false" not in sql and str(root) not in sql)):
                    stale.add(name)
            placeholders = {n for n in DATASETS if n not in stale
                            and "WHERE false" in existing.get(n, "")}
            todo = stale | placeholders
        else:
            placeholders = set(self._placeholder_views)
            todo = placeholders | self._partial_views
        moved = False
        for name in todo:
            ds = DATASETS[name]
            depth = "*/*/*.parquet" if ds.level_column else "*/*.parquet"
            base = root / name
            has_files = base.is_dir() and next(base.glob(depth), None) is not None
            if has_files:
                moved |= self._view_sql(con, name, base, depth)
                placeholders.discard(name)
                continue
            self._partial_views.discard(name)
            if name in placeholders:
                continue  # still empty, and already a typed empty view
            con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {_placeholder_select(name)}')
            placeholders.add(name)
        self._placeholder_views = placeholders
        if moved:
            self._sync_quarantine(con)

    def _view_sql(self, con: duckdb.DuckDBPyConnection, name: str, base: Path,
                  depth: str) -> bool:
        """(Re)create the view of one dataset that has files; True if a file was moved aside.

        Over the folder's glob when every file is readable. Otherwise the unreadable files are
        quarantined, and the view is made over the glob again, or — for a file that could not
        be moved now (its symbol is being enriched) — over the list of readable files, retried
        on the next write.
        """
        glob = str(base / depth).replace("'", "''")
        try:
            con.execute(f'CREATE OR REPLACE VIEW "{name}" AS '
                        f"SELECT * FROM read_parquet('{glob}', union_by_name=true)")
            self._partial_views.discard(name)
            return False
        except duckdb.Error as exc:
            first_error = str(exc)
        files = sorted(base.glob(depth))
        named = set(re.findall(r"'([^']+\.parquet)'", first_error))
        bad = {}
        for f in files:
            reason = quarantine.footer_error(f)
            if reason is None and str(f) in named:
                reason = first_error.strip().splitlines()[0][:200]
            if reason is not None:
                bad[f] = reason
        moved, left = False, []
        for f, reason in bad.items():
            try:
                item = self._quarantine_file(f, reason) if self._quarantine_file else None
            except CorruptFileError:
                item = None
            if item is None and f.exists():
                left.append(f)
            moved |= item is not None
            log.warning("lake file %s is unreadable (%s)%s", f, reason,
                        "; moved to the quarantine" if item is not None else "")
        good = [f for f in files if f not in bad]
        if not left:
            sources = f"'{glob}'"
        elif good:
            sources = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in good) + "]"
        else:
            sources = None
        try:
            if sources is None:
                raise duckdb.Error("no readable file")
            con.execute(f'CREATE OR REPLACE VIEW "{name}" AS '
                        f"SELECT * FROM read_parquet({sources}, union_by_name=true)")
        except duckdb.Error as exc:  # still not buildable: an empty view, never a failure
            log.warning("the %s view is empty for now: %s", name, exc)
            con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {_placeholder_select(name)}')
            left = left or [base]
        if left:
            self._partial_views.add(name)
        else:
            self._partial_views.discard(name)
        return moved

    def _sync_quarantine(self, con: duckdb.DuckDBPyConnection) -> None:
        """Import lake files quarantined since the last look (``enrich.store.quarantine``'s index)
        into the ``quarantine`` table, and mark their symbol × dataset failing unless it has
        been fetched again since."""
        size = quarantine.index_size(self.lake_root)
        if size == self._index_seen:
            return
        items, _ = quarantine.read_index(self.lake_root)
        try:
            known = {r[0] for r in con.execute("SELECT moved_to FROM quarantine").fetchall()}
        except duckdb.CatalogException:
            return  # not migrated yet: the migration's refresh imports them
        new = [i for i in items if i.moved_to not in known]
        if new:
            with transaction(con):
                for item in new:
                    record_quarantined(con, item)
        self._index_seen = size

    def set_aside(self, reason: str) -> dict[str, Any] | None:
        """Move an unreadable catalog file (and its WAL) aside so a new one can be created;
        returns the ``quarantine`` row to record in the new catalog, or None if the file is
        readable after all (another process set it aside first)."""
        now = utcnow()
        target = self.path.with_name(f"{self.path.name}.unreadable-{now:%Y%m%dT%H%M%SZ}")
        with self._thread_lock, self._lock.acquire(timeout=self.timeout_s):
            if not self.path.exists():
                return None
            try:
                with self._connect(threads=None):
                    return None  # readable now
            except CatalogUnreadableError:
                pass
            size = self.path.stat().st_size
            os.replace(self.path, target)
            wal = Path(str(self.path) + ".wal")
            if wal.exists():
                os.replace(wal, Path(str(target) + ".wal"))
        _SHAPES.pop(self._key, None)
        self._placeholder_views = None
        self._index_seen = -1
        base = self.path.parent
        return {"moved_to": str(target.relative_to(base)), "original": self.path.name,
                "kind": "catalog", "dataset": None, "level": None, "symbol": None,
                "reason": reason, "size_bytes": size, "quarantined_at": now}

    def refresh_views(self) -> None:
        with self.connect() as con:
            self._refresh_views(con, force=True)

    def sync_quarantine(self) -> None:
        """Import the records of lake files quarantined since the catalog last looked."""
        if quarantine.index_size(self.lake_root) == self._index_seen:
            return
        with self.connect() as con:
            self._sync_quarantine(con)

    # -- helpers ----------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        with self.connect() as con:
            return frame(con, sql, params)

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        with self.connect() as con:
            row = con.execute(sql, params or []).fetchone()
            return row[0] if row else None

    def data_version(self) -> int:
        return int(self.scalar("SELECT version FROM data_version WHERE id = 1"))

    def write(self, batch: WriteBatch,
              then: tuple[str, Sequence[Any]] | None = None) -> Any:
        """Apply a batch of rows and statements in one transaction and bump the data version.

        ``then``, a query and its parameters, is read after the commit on the same connection
        (opening the catalog costs more than most batches): its first value is returned, or
        None if it could not be read.
        """
        # Rows a process that died left in the journal (enrich.store.journal), applied first;
        # not this batch's own (a worker that handed them over has exited since).
        own = set(batch.journals)
        orphans = [p for p in journal.orphans(self.journal_dir, pid_alive) if p not in own]
        if batch.empty() and not orphans:
            return self.scalar(*then) if then else None
        # One thread: these statements are small, and DuckDB's idle workers spinning for work
        # cost more CPU than they save (~15% of a flush), on cores the run's workers need.
        with self._connect(threads=1) as con:
            for path in orphans:
                self._replay(con, path)
            with transaction(con):
                batch.apply(con)
            journal.remove(batch.journals)
            self._refresh_views(con)
            if then is None:
                return None
            try:
                row = con.execute(then[0], list(then[1])).fetchone()
            except duckdb.Error:  # the batch is committed either way: never report it failed
                return None
            return row[0] if row else None

    @property
    def journal_dir(self) -> Path:
        return self.path.parent / journal.DIRECTORY

    def _replay(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        """Take a dead writer's journal file (``enrich.store.journal``): commit its rows if
        its lake write happened, drop them if not, and delete it. A file whose rows the
        catalog refuses is set aside with a warning; one that fails for another reason (the
        disk, memory) stays for the next write. Neither stops this write."""
        entry = journal.read(path)
        if entry is None:
            return
        if entry.lake_file is not None and journal.file_state(
                self.lake_root / entry.lake_file) == entry.before:
            journal.remove([path])  # the write never happened: the next run finds it again
            log.info("dropped %s: its lake write (%s) did not happen", path.name,
                     entry.lake_file)
            return
        replay = WriteBatch()
        replay.inserts = entry.inserts
        try:
            with transaction(con):
                replay.apply(con)
        except (ValueError, TypeError, KeyError, pa.ArrowException, duckdb.ConversionException,
                duckdb.ConstraintException, duckdb.BinderException,
                duckdb.InvalidInputException, duckdb.CatalogException) as exc:
            journal.set_aside(path, f"the catalog refused its rows: {exc}")
            return
        except duckdb.Error as exc:
            log.warning("journal file %s not recorded now (%s); the next write tries again",
                        path.name, exc)
            return
        journal.remove([path])
        log.info("recorded %d catalog rows a process that stopped left in %s",
                 replay.size(), path.name)


_WITH_ENGINES: weakref.WeakSet[Catalog] = weakref.WeakSet()  # catalogs holding instances


def _drop_engines_after_fork() -> None:
    """In a forked child, let go of the parent's DuckDB instances without destroying them.

    Their worker threads did not survive the fork, and destroying such an instance crashes
    the child as it exits (SIGSEGV), so each is leaked on purpose (one more reference).
    The child gets a new instance if it opens the catalog again.
    """
    for cat in list(_WITH_ENGINES):
        for engine in cat._engines.values():
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(engine))
        cat._engines, cat._attached, cat._depth = {}, None, 0
    _WITH_ENGINES.clear()


os.register_at_fork(after_in_child=_drop_engines_after_fork)


def frame(con: duckdb.DuckDBPyConnection, sql: str,
          params: Sequence[Any] | None = None) -> pl.DataFrame:
    rel = con.sql(sql, params=list(params) if params else None)
    if rel is None:
        return pl.DataFrame()
    # from_arrow is typed DataFrame | Series; a Table always gives a DataFrame
    return pl.from_arrow(rel.to_arrow_table())  # type: ignore[return-value]


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection, bump: bool = True) -> Iterator[None]:
    """One transaction on an open connection; a write bumps the data version before COMMIT."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        if bump:
            bump_version(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def bump_version(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "UPDATE data_version SET version = version + 1, updated_at = ? WHERE id = 1", [utcnow()]
    )


def _split_sql(sql: str) -> list[str]:
    lines = [ln.split("--", 1)[0] for ln in sql.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class WriteBatch:
    """Rows to insert (per table) and statements to run, applied together.

    ``upsert`` rows replace existing rows with the same primary key (INSERT OR REPLACE).
    """

    def __init__(self) -> None:
        self.inserts: dict[str, list[dict[str, Any]]] = {}
        self.upserts: dict[str, list[dict[str, Any]]] = {}
        self.statements: list[tuple[str, list[Any]]] = []
        # Journal files holding some of these rows (enrich.store.journal): deleted once the
        # batch is committed.
        self.journals: list[Path] = []

    def empty(self) -> bool:
        return not (self.inserts or self.upserts or self.statements)

    def insert(self, table: str, row: dict[str, Any]) -> None:
        self.inserts.setdefault(table, []).append(row)

    def upsert(self, table: str, row: dict[str, Any]) -> None:
        self.upserts.setdefault(table, []).append(row)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.statements.append((sql, list(params)))

    def extend(self, other: WriteBatch) -> None:
        for t, rows in other.inserts.items():
            self.inserts.setdefault(t, []).extend(rows)
        for t, rows in other.upserts.items():
            self.upserts.setdefault(t, []).extend(rows)
        self.statements.extend(other.statements)
        self.journals.extend(other.journals)

    def size(self) -> int:
        return (sum(map(len, self.inserts.values())) + sum(map(len, self.upserts.values()))
                + len(self.statements))

    def apply(self, con: duckdb.DuckDBPyConnection) -> None:
        for table, rows in self.inserts.items():
            _insert_rows(con, table, rows, replace=False)
        for table, rows in self.upserts.items():
            _insert_rows(con, table, _last_per_key(con, table, rows), replace=True)
        for sql, params in self.statements:
            con.execute(sql, params)


class _Shape(NamedTuple):
    """A table's column types (in table order) and primary key."""

    columns: dict[str, str]
    key: list[str]


# Catalog (resolved path) -> table -> shape. Reading one costs ~3 ms, more than writing a
# flush's rows to it, and they change only through migrations: ``Catalog.migrate`` drops them.
_SHAPES: dict[str, dict[str, _Shape]] = {}


def _shape(con: duckdb.DuckDBPyConnection, table: str) -> _Shape:
    catalog = _CON_PATHS.get(id(con))  # None: not from Catalog.connect, so read each time
    cache = _SHAPES.setdefault(catalog, {}) if catalog else {}
    shape = cache.get(table)
    if shape is None:
        shape = cache[table] = _Shape(_table_columns(con, table), _primary_key(con, table))
    return shape


def _table_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position", [table]
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def _primary_key(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    rows = con.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() "
        "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'", [table]
    ).fetchall()
    return list(rows[0][0]) if rows else []


def _last_per_key(con, table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per primary key: a later row overrides an earlier one's columns."""
    key = _shape(con, table).key
    if not key:
        return rows
    try:
        keys = list(map(itemgetter(*key), rows))
    except KeyError:  # a row without part of its key (which the insert then refuses)
        keys = [tuple(r.get(c) for c in key) for r in rows]
    if len(set(keys)) == len(keys):
        return rows
    seen: dict[Any, dict[str, Any]] = {}
    for k, r in zip(keys, rows, strict=True):
        if k in seen:
            merged = dict(seen[k])
            merged.update(r)
            seen[k] = merged
        else:
            seen[k] = r
    return list(seen.values())


# Column type -> the Arrow type its values are staged in (the column's own type, but for JSON:
# text, CAST as before), and the Python types staged as they are.
_ARROW: dict[str, tuple[pa.DataType, frozenset[type]]] = {
    "VARCHAR": (pa.string(), frozenset({str, type(None)})),
    "JSON": (pa.string(), frozenset({str, type(None)})),
    "BIGINT": (pa.int64(), frozenset({int, type(None)})),
    "INTEGER": (pa.int32(), frozenset({int, type(None)})),  # out of range: the general way
    "DOUBLE": (pa.float64(), frozenset({float, int, type(None)})),
    "BOOLEAN": (pa.bool_(), frozenset({bool, type(None)})),
    "DATE": (pa.date32(), frozenset({dt.date, type(None)})),
    "TIMESTAMP WITH TIME ZONE": (pa.timestamp("us", tz="UTC"),
                                 frozenset({dt.datetime, type(None)})),
}
_TZINFO = attrgetter("tzinfo")
# Key types whose Python equality is the column's (not DOUBLE: NaN), so rows that
# _last_per_key kept apart never meet in one MERGE.
_MERGE_KEYS = frozenset({"VARCHAR", "BIGINT", "INTEGER", "DATE", "BOOLEAN"})


def _one_fixed_offset(values: Sequence[Any]) -> bool:
    """Whether the datetimes are all naive or all in one fixed-offset zone (zones with gaps
    and folds, or a mix, are left to the general way, which refuses some of them)."""
    zones = set(map(_TZINFO, filter(None, values)))
    if len(zones) > 1:
        return False
    return not zones or None in zones or type(next(iter(zones))) is dt.timezone


def _as_json(v: Any) -> Any:
    return json.dumps(v, default=str) if isinstance(v, (dict, list)) else v


def _typed_frame(used: tuple[str, ...], group: list[dict[str, Any]],
                 types: dict[str, str]) -> pa.Table | None:
    """The rows as an Arrow table typed from the table's columns, built column-wise.

    Only for values of the plain Python types a column takes (str, int, float, bool, date,
    datetime naive or in one fixed offset, None): for those the rows stored equal those of
    inferring a frame from all values, which costs several times more. Else returns None.
    """
    if len(used) == 1:
        columns: list[Sequence[Any]] = [[r[used[0]] for r in group]]
    else:
        columns = list(zip(*map(itemgetter(*used), group), strict=True))
    arrays = []
    for name, values in zip(used, columns, strict=True):
        kinds = set(map(type, values))
        if any(issubclass(k, (dict, list)) for k in kinds):
            values = [_as_json(v) for v in values]
            kinds = set(map(type, values))
        spec = _ARROW.get(types[name])
        if spec is None or not kinds <= spec[1]:
            return None
        if dt.datetime in kinds and not _one_fixed_offset(values):
            return None
        try:
            arrays.append(pa.array(values, type=spec[0]))
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            return None
    return pa.Table.from_arrays(arrays, names=list(used))


def _inferred_frame(used: tuple[str, ...], group: list[dict[str, Any]]) -> pl.DataFrame:
    """The rows as a frame whose types are inferred from all values (the general way)."""
    data = {c: [_as_json(r[c]) for r in group] for c in used}
    return pl.DataFrame(data, strict=False, infer_schema_length=None)


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (column -> value) into ``table`` on an open connection (its caller holds
    the catalog's lock), one statement per set of columns: for many rows, where DuckDB's
    ``executemany`` runs one statement a row."""
    _insert_rows(con, table, rows, replace=False)


def _insert_rows(con, table: str, rows: list[dict[str, Any]], replace: bool) -> None:
    """Insert rows through one Arrow frame per set of columns (fast for large batches).

    With ``replace``, rows whose primary key exists update only the columns they carry;
    the stored row keeps the others, and new rows get the column defaults.
    """
    if not rows:
        return
    shape = _shape(con, table)
    cols_types = shape.columns
    unknown = set().union(*rows).difference(cols_types)
    if unknown:
        raise ValueError(f"{table}: unknown columns {sorted(unknown)}")
    # Rows with different column sets are inserted in groups, so defaults stay intact.
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(frozenset(r), []).append(r)
    key = shape.key if replace else []
    for names, group in groups.items():
        used = tuple(c for c in cols_types if c in names)
        staged: pa.Table | pl.DataFrame | None = _typed_frame(used, group, cols_types)
        typed = staged is not None
        if staged is None:
            staged = _inferred_frame(used, group)
        name = f"__rows_{threading.get_ident()}"
        con.register(name, staged)
        try:
            con.execute(_insert_sql(table, used, cols_types, key, typed, name,
                                    None if replace else _REPEATS.get(table)))
        finally:
            con.unregister(name)


# Inserted rows identical to one recorded are skipped (``WHERE NOT`` this, ``__new`` the row):
# a journal file applied again (enrich.store.journal) records nothing twice. The run, the
# instant of detection, the cell and the values name a restatement row.
_REPEATS: dict[str, str] = {
    "restatements": (
        "EXISTS (SELECT 1 FROM restatements AS __r WHERE "
        + " AND ".join(f'__r."{c}" IS NOT DISTINCT FROM __new."{c}"'
                       for c in ("run_id", "symbol", "dataset", "session", "column_name",
                                 "old_value", "new_value", "detected_at"))
        + ")"
    ),
}


def _insert_sql(table: str, used: tuple[str, ...], types: dict[str, str], key: list[str],
                typed: bool, source: str, repeats: str | None = None) -> str:
    """The statement inserting (or, with a ``key``, upserting) the staged rows.

    Typed rows need a CAST only into JSON; inferred ones are CAST into every column. A typed
    upsert is a MERGE: what INSERT … ON CONFLICT DO UPDATE does, at half its CPU (DuckDB
    plans ON CONFLICT as a MERGE behind a GROUP BY over the key, which is not needed here:
    ``_last_per_key`` left one row per key, and typed keys compare as the column's do).
    """
    sel = ", ".join(f'"{c}"' if typed and types[c] != "JSON"
                    else f'CAST("{c}" AS {types[c]}) AS "{c}"' for c in used)
    cols = ", ".join(f'"{c}"' for c in used)
    upd = [c for c in used if c not in key]
    if key and typed and all(k in used and types[k] in _MERGE_KEYS for k in key):
        on = " AND ".join(f'__old."{k}" = __new."{k}"' for k in key)
        sql = (f'MERGE INTO "{table}" AS __old USING (SELECT {sel} FROM {source}) AS __new '
               f"ON ({on}) ")
        if upd:
            sql += "WHEN MATCHED THEN UPDATE SET " + ", ".join(
                f'"{c}" = __new."{c}"' for c in upd) + " "
        vals = ", ".join(f'__new."{c}"' for c in used)
        return sql + f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({vals})"
    sql = f'INSERT INTO "{table}" ({cols}) SELECT {sel} FROM {source}'
    if repeats:
        sql += f" AS __new WHERE NOT {repeats}"
    if key:
        action = (
            "DO UPDATE SET " + ", ".join(f'"{c}" = excluded."{c}"' for c in upd)
            if upd else "DO NOTHING"
        )
        sql += f" ON CONFLICT ({', '.join(key)}) {action}"
    return sql


def host_and_pid() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
