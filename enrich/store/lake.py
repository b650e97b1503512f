"""The lake: Parquet files per dataset × symbol (× month), written atomically and idempotently.

Layout (readable by any tool while the app runs, no lock needed to read)::

    <data>/lake/<dataset>/[timeframe=<tf>/]symbol=<SYM>/data.parquet
    <data>/lake/<dataset>/symbol=<SYM>/month=<YYYY-MM>.parquet     (month-partitioned datasets)
    <data>/lake/_coverage/<SYM>.json     how far each dataset of a symbol has been fetched

A write takes its symbol's cross-process lock (unless the writing thread already holds it, as
the engine and backfills do for the whole of a symbol's enrichment), merges with what is stored
(upsert on the natural key, last write wins), and replaces the file atomically (temp file in the
same folder, fsync, ``os.replace``), so a reader or a crash never sees half a file. A write that
changes nothing leaves the file untouched. A file holds its rows in key order, no key twice:
reads rely on it, and so does the daily refresh's shortcut — rows that only add keys (after the
stored ones or among them) and repeat re-asked rows unchanged are placed without the general
merge (anti-join, unique, sort); the file written is the same. A changed row takes the merge.

Frames this process last wrote or read are kept in a small cache keyed by the file's identity
(inode, mtime, size): an enrichment reads back what it just wrote (restatement detection,
features, quality checks) without decoding the file again, and any other writer's
``os.replace`` changes the identity, so a stale frame is never served.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from enrich import columns
from enrich.errors import CorruptFileError
from enrich.schemas import DATASETS, Dataset, conform
from enrich.store import quarantine

LOCK_TIMEOUT_S = 120.0
CACHED_FILES = 64  # about ten symbols' worth of files: the ones being enriched right now
KNOWN_PATHS = 4096  # symbol folders whose paths are kept built (a few hundred symbols' worth)
APPEND_OVERLAP = 32  # stored rows an append may repeat (a refresh re-asks its last sessions)
# In the footer of a month file (``Dataset.month_column``): the distinct dates of that column
# it holds, comma-separated ISO dates, so the sessions a symbol holds are read from footers
# (``Lake.dates_held``) instead of decoding a year of option chains.
DATES_KEY = "enrich.dates"


@dataclass(frozen=True)
class UpsertResult:
    inserted: int = 0
    updated: int = 0
    files_written: int = 0
    deleted: int = 0  # rows a window replacement removed (``Lake.replace_window``)

    @property
    def changed(self) -> int:
        return self.inserted + self.updated + self.deleted

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.files_written + other.files_written,
            self.deleted + other.deleted,
        )


@functools.cache
def _schema_of(dataset: str) -> tuple[list[str], list[pl.DataType]]:
    schema = pl.Schema(DATASETS[dataset].schema)
    return schema.names(), schema.dtypes()


def _conformed(frame: pl.DataFrame, ds: Dataset) -> pl.DataFrame:
    """``conform(frame, ds)``, with a cheaper look first at a frame that has the schema
    already (the usual one: comparing ``Schema`` objects costs more than the whole check)."""
    names, dtypes = _schema_of(ds.name)
    if frame.columns == names and frame.dtypes == dtypes:
        return frame
    return conform(frame, ds)


def symbol_path_part(symbol: str) -> str:
    """``symbol`` as one portable path component. ':' (X:BTCUSD) is percent-encoded, '.'
    (BRK.B) kept, and so is every lower-case letter: tickers are case-sensitive (KIMpL is not
    KIMPL) but macOS and Windows file systems are not, so two tickers differing only in case
    must differ in more than case on disk. Upper-case tickers keep their plain names."""
    return "".join(f"%{ord(ch):02X}" if "a" <= ch <= "z" else ch
                   for ch in quote(symbol, safe="."))


def symbol_dir_name(symbol: str) -> str:
    return "symbol=" + symbol_path_part(symbol)


def symbol_from_dir_name(name: str) -> str:
    return unquote(name.removeprefix("symbol="))


def write_parquet_atomic(frame: pl.DataFrame, path: Path,
                         metadata: dict[str, str] | None = None) -> None:
    """Write ``frame`` to ``path`` so that readers see the old file or the new one, never half
    (``metadata``: key-value pairs for the file's footer).

    The data is fsynced before the rename, so the new name never points at unwritten blocks.
    The directory is not fsynced: after a power loss the rename may be lost, leaving the old
    (complete) file, which the next run's idempotent upsert brings up to date.
    """
    # The file is encoded in memory and written with one call: fewer system calls than
    # polars writing the path itself, which on a slow disk is most of a small file's cost.
    # lz4: about twice as fast to write as zstd at a modest size cost; every reader reads it.
    # pyarrow's writer over the frame's Arrow columns (no copy), without dictionaries (a
    # symbol's file repeats few values): 20-30 % less CPU than polars' writer on a lake file
    # of a dozen columns or more, the same frame read back.
    table = frame.to_arrow()
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="lz4", use_dictionary=False, write_statistics=True)
    write_bytes_atomic(memoryview(buf.getvalue()), path,
                       path.parent / f".tmp-{path.name}-{os.getpid()}-{threading.get_ident()}.part")


def decode_file(path: Path) -> pl.DataFrame:
    """A Parquet file's rows, read whole and decoded from memory: ~0.1 ms a file less than
    polars reading the path itself (a lake file is small: most of its cost is per file)."""
    return pl.read_parquet(path.read_bytes())


def write_bytes_atomic(data: bytes | memoryview, path: Path, tmp: Path) -> None:
    """Write ``data`` (bytes or a buffer) to ``tmp`` with one call, fsync it and rename it to
    ``path`` (creating the folder if need be); ``tmp`` is removed if anything fails."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def in_key_order(frame: pl.DataFrame, key: list[str]) -> bool:
    """Whether ``frame`` is strictly in ``key`` order (sorted, no key twice), found cheaply for
    the usual rows of one file: one value in every key column but the last, which ascends.
    False means "not known to be": the caller sorts."""
    if frame.height <= 1:
        return True
    *lead, last = key
    if any(frame[c].n_unique() != 1 for c in lead):
        return False
    s = frame[last]
    # Sorted and no value twice: strictly ascending (Series methods, no query to plan).
    return s.null_count() == 0 and s.is_sorted() and s.n_unique() == s.len()


def _only_file(frame: pl.DataFrame, ds: Dataset) -> tuple[tuple, pl.DataFrame] | None:
    """``(symbol[, level][, month])`` of the one file all rows go to, and the rows in key
    order, when that is cheaply known: the leading key columns, which name the file, hold one
    non-null value each, and the last one no null and no value twice (so no key repeats; an
    option chain comes in any order and is sorted here). Else None."""
    *lead, last = ds.key
    names = ["symbol", *(c for c in (ds.level_column, ds.month_column) if c)]
    s = frame[last]
    if (not set(names) <= set(lead) or s.null_count()
            or any(frame[c].null_count() for c in lead)):
        return None
    if frame.height > 1:
        if any(frame[c].n_unique() != 1 for c in lead) or s.n_unique() != s.len():
            return None
        if not s.is_sorted():
            frame = frame.sort(last)  # one value in every other key column: key order
    only = [frame[c][0] for c in names]
    if ds.month_column:
        only[-1] = only[-1].strftime("%Y-%m")
    return tuple(only), frame


def tail_overlap(old: pl.DataFrame, new: pl.DataFrame, key: list[str]) -> int | None:
    """How many of ``new``'s first rows have the keys of ``old``'s last rows, when every other
    row of ``new`` comes after ``old``'s last: the shape of a daily refresh, which re-asks its
    last sessions and adds the next. None when ``new`` reaches further back into ``old`` or
    lacks one of its keys there (looking at most ``APPEND_OVERLAP`` rows back).

    Both frames strictly in key order (a lake file is written so; see ``in_key_order``), with
    the ``key`` columns; found from a few rows' values, without a query.
    """
    if old.is_empty() or new.is_empty():
        return 0
    at_old = [old.columns.index(k) for k in key]
    at_new = [new.columns.index(k) for k in key]
    first = tuple(new.row(0)[i] for i in at_new)
    n = old.height
    limit = min(n, new.height, APPEND_OVERLAP)
    tail: list[tuple] = []  # keys of old's rows not before new's first, last row first
    try:
        while len(tail) < n:
            k = tuple(old.row(n - 1 - len(tail))[i] for i in at_old)
            if k < first:
                break
            if len(tail) == limit:
                return None
            tail.append(k)
    except TypeError:  # a null key, stored by something other than this lake
        return None
    m = len(tail)
    if any(tuple(new.row(j)[i] for i in at_new) != tail[m - 1 - j] for j in range(m)):
        return None
    return m


def _appends(old: pl.DataFrame, part: pl.DataFrame, key: list[str]) -> int | None:
    """When ``part`` only appends to ``old`` — its first rows repeat ``old``'s last rows
    exactly and every other row comes after (``tail_overlap``) — how many rows it repeats.
    None otherwise (a key inside the stored history, a repeated row that changed: a
    restatement), for the general merge. Same schema, both in key order.

    Equal rows are what the general merge's anti-join calls equal (``equals``: nulls equal,
    NaN equals NaN, -0.0 equals 0.0), so both paths count and keep the same rows.
    """
    m = tail_overlap(old, part, key)
    if m and not old.slice(old.height - m).equals(part.slice(0, m)):
        return None
    return m


def _inserts(old: pl.DataFrame, part: pl.DataFrame, key: list[str]
             ) -> tuple[pl.DataFrame | None, int] | None:
    """When every row of ``part`` is new or repeats its stored row exactly (re-asked news
    whose ids fall anywhere in the stored ones): the merged rows (None: nothing new) and how
    many are new. None otherwise — a re-asked row changed, or the frames are not of one file
    per symbol — for the general merge.

    Both strictly in key order with one value in every key column but the last (``part``
    checked by the caller); rows are placed by the last key's values (numpy's order of
    strings, dates and instants is polars' order), compared as ``_appends`` compares them.
    """
    *lead, last = key
    if (old.is_empty() or old[last].null_count()
            or any(old[c].n_unique() != 1 or old[c][0] != part[c][0] for c in lead)):
        return None
    held, asked = old[last].to_numpy(), part[last].to_numpy()
    at = np.searchsorted(held, asked)
    stored = at < len(held)
    stored[stored] = held[at[stored]] == asked[stored]
    if stored.any() and not columns.take(old, at[stored]).equals(
            columns.rows_where(part, stored)):
        return None
    new = np.flatnonzero(~stored)
    if not len(new):
        return None, 0
    order = np.argsort(np.concatenate([held, asked[new]]), kind="stable")
    return pl.concat([old, part[new]], how="vertical")[order], len(new)


def _unlisted(old: pl.DataFrame, frame: pl.DataFrame, key: list[str], column: str,
              start: dt.date, end: dt.date) -> pl.DataFrame:
    """The rows of ``old`` whose ``column`` lies in [start, end] and whose key ``frame`` does
    not hold (``old.filter(pl.col(column).is_between(start, end))`` anti-joined with
    ``frame``'s keys, nulls equal), found without a query: a refresh's window holds a few
    rows, usually none to remove, where each query costs ~0.3 ms."""
    at, _ = columns.values(old.get_column(column))
    inside = columns.rows_where(old, (at >= columns.day(start)) & (at <= columns.day(end)))
    if inside.is_empty():
        return inside
    listed = set(zip(*(frame.get_column(k).to_list() for k in key), strict=True))
    gone = [k not in listed for k in zip(*(inside.get_column(k).to_list() for k in key),
                                         strict=True)]
    return columns.rows_where(inside, np.array(gone, dtype=bool))


def remove_stale_temps(path: Path) -> int:
    """Delete temp files a killed writer of ``path`` left behind. Call under ``path``'s lock."""
    n = 0
    prefix = f".tmp-{path.name}-"
    try:
        names = os.listdir(path.parent)  # a listing, not a glob: this runs before every write
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(prefix) and name.endswith(".part"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.parent / name)
                n += 1
    return n


def write_json_atomic(obj: object, path: Path) -> None:
    """Replace a small JSON file atomically (not fsynced: callers treat it as a hint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


FileId = tuple[int, int, int]  # (inode, mtime_ns, size): changes with every os.replace


def file_id(path: Path) -> FileId | None:
    """A file's identity (inode, mtime_ns, size), which every write (a rename) changes;
    None if there is no file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class FrameCache:
    """The frames of the files most recently written or read, valid while the file is unchanged.

    Each frame carries whether it is known to have its dataset's schema (the lake wrote it, or
    a read compared it once), so a read of a cached file skips that comparison.
    """

    def __init__(self, size: int = CACHED_FILES):
        self.size = size
        self._frames: OrderedDict[Path, tuple[FileId, pl.DataFrame, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, fid: FileId) -> pl.DataFrame | None:
        with self._lock:
            hit = self._frames.get(path)
            if hit is None or hit[0] != fid:
                return None
            self._frames.move_to_end(path)
            return hit[1]

    def forget(self, path: Path) -> None:
        with self._lock:
            self._frames.pop(path, None)

    def conforms(self, path: Path, frame: pl.DataFrame) -> bool:
        """Whether ``frame`` is the one cached for ``path`` and known to have its schema."""
        with self._lock:
            hit = self._frames.get(path)
            return hit is not None and hit[1] is frame and hit[2]

    def mark_conforms(self, path: Path, frame: pl.DataFrame) -> None:
        with self._lock:
            hit = self._frames.get(path)
            if hit is not None and hit[1] is frame:
                self._frames[path] = (hit[0], frame, True)

    def put(self, path: Path, fid: FileId | None, frame: pl.DataFrame,
            conforms: bool = False) -> None:
        if fid is None:
            return
        with self._lock:
            self._frames[path] = (fid, frame, conforms)
            self._frames.move_to_end(path)
            while len(self._frames) > self.size:
                self._frames.popitem(last=False)


class SymbolLock:
    """One symbol's cross-process lock; while a thread holds it, that thread's lake writes of
    the symbol need no further lock. Use as a context manager, or ``acquire``/``release``."""

    def __init__(self, lake: Lake, symbol: str, timeout: float):
        self.lake, self.symbol = lake, symbol
        p = lake.lock_dir / "symbols" / (symbol_path_part(symbol) + ".lock")
        lake._mkdir(p.parent)
        # An explicit owner-only-write mode: with the default (0o666 less the umask) filelock
        # first probes the folder with a throwaway file, per new lock file, which costs as much
        # as the lock itself on a first enrichment.
        self._lock = FileLock(str(p), timeout=timeout, mode=0o644)

    def acquire(self) -> SymbolLock:
        self._lock.acquire()
        self.lake._held().add(self.symbol)
        return self

    def release(self) -> None:
        self.lake._held().discard(self.symbol)
        self._lock.release()

    def __enter__(self) -> SymbolLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Lake:
    def __init__(self, root: Path, lock_dir: Path | None = None):
        self.root = Path(root)
        self.lock_dir = Path(lock_dir) if lock_dir else self.root.parent / "locks"
        self._made_dirs: set[Path] = set()
        self._local = threading.local()
        self.cache = FrameCache()
        self._checked: dict[Path, FileId] = {}  # files check_files found readable
        self._paths: dict[tuple[str, str | None, str], tuple[Path, Path]] = {}
        self._coverage: dict[Path, tuple[FileId, dict[str, dt.date]]] = {}

    # -- layout ---------------------------------------------------------------------------
    def dataset_dir(self, dataset: str) -> Path:
        return self.root / dataset

    def symbol_dir(self, ds: Dataset, symbol: str, level: str | None = None) -> Path:
        base = self.root / ds.name
        if ds.level_column:
            if level is None:
                raise ValueError(f"{ds.name} needs a {ds.level_column}")
            base = base / f"{ds.level_column}={level}"
        return base / symbol_dir_name(symbol)

    def file_state(self, dataset: str, symbol: str,
                   level: str | None = None) -> tuple[str, list[int] | None]:
        """The file of a one-file dataset's symbol (× level), relative to the lake's root,
        and its identity now (inode, mtime_ns, size; None: no file): any write replaces it
        (``enrich.store.journal`` compares it after a crash)."""
        path = self._file_for(DATASETS[dataset], symbol, level, None)
        fid = file_id(path)
        return str(path.relative_to(self.root)), None if fid is None else list(fid)

    def _file_for(self, ds: Dataset, symbol: str, level: str | None, month: str | None) -> Path:
        d = self.symbol_dir(ds, symbol, level)
        return d / (f"month={month}.parquet" if month else "data.parquet")

    def _mkdir(self, d: Path) -> None:
        if d not in self._made_dirs:
            d.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(d)

    def _held(self) -> set[str]:
        """Symbols whose lock the calling thread holds."""
        held = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = set()
        return held

    def symbol_lock(self, symbol: str, timeout: float = -1) -> SymbolLock:
        """Serialises enrichment and every lake write of one symbol across threads and
        processes (waits forever by default: an enrichment waits for another one's)."""
        return SymbolLock(self, symbol, timeout)

    @contextlib.contextmanager
    def write_lock(self, symbol: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """The symbol's lock for one write, unless this thread holds it already."""
        if symbol in self._held():
            yield
            return
        with self.symbol_lock(symbol, timeout=timeout):
            yield

    def files(self, dataset: str, symbols: Iterable[str] | None = None,
              level: str | None = None) -> list[Path]:
        ds = DATASETS[dataset]
        if symbols is not None and (level or not ds.level_column):
            return [f for s in symbols for f in self._symbol_files(ds, s, level)]
        base = self.root / ds.name
        if not base.exists():
            return []
        if ds.level_column:
            level_dirs = [base / f"{ds.level_column}={level}"] if level else sorted(
                base.glob(f"{ds.level_column}=*"))
        else:
            level_dirs = [base]
        out: list[Path] = []
        for ld in level_dirs:
            if symbols is None:
                sym_dirs = sorted(ld.glob("symbol=*"))
            else:
                sym_dirs = [ld / symbol_dir_name(s) for s in symbols]
            for sd in sym_dirs:
                if not ds.month_column:  # one file per symbol: no need to list the folder
                    if (sd / "data.parquet").exists():
                        out.append(sd / "data.parquet")
                elif sd.is_dir():
                    out.extend(sorted(p for p in sd.glob("*.parquet")
                                      if not p.name.startswith(".")))
        return out

    def _symbol_files(self, ds: Dataset, symbol: str, level: str | None) -> list[Path]:
        """The files of one symbol (× level): ``files`` for the usual call, which names them,
        with the paths built once (an enrichment asks for them a few dozen times)."""
        level = level if ds.level_column else None
        where = (ds.name, level, symbol)
        paths = self._paths.get(where)
        if paths is None:
            if len(self._paths) >= KNOWN_PATHS:
                self._paths.clear()
            d = self.symbol_dir(ds, symbol, level)
            paths = self._paths[where] = (d, d / "data.parquet")
        d, data = paths
        if not ds.month_column:
            return [data] if os.path.exists(data) else []
        try:
            names = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [d / n for n in names if n.endswith(".parquet") and not n.startswith(".")]

    # -- reading --------------------------------------------------------------------------
    def read(self, dataset: str, symbols: Iterable[str] | None = None,
             level: str | None = None, months: Iterable[str] | None = None) -> pl.DataFrame:
        """Stored rows of ``dataset`` (for ``symbols`` / ``level`` when given), sorted by key;
        of a month-partitioned dataset, ``months`` (``YYYY-MM``) reads only those months'
        files."""
        ds = DATASETS[dataset]
        files = self.files(dataset, symbols, level)
        if months is not None and ds.month_column:
            names = {f"month={m}.parquet" for m in months}
            files = [f for f in files if f.name in names]
        if not files:
            return ds.empty()
        if len(files) == 1:
            return self._stored(ds, files[0])  # files are written sorted by key
        frame = pl.concat([self._stored(ds, f) for f in files], how="vertical")
        return frame.sort(list(ds.key))

    def read_one(self, dataset: str, path: Path) -> pl.DataFrame:
        """The rows of one of ``dataset``'s files (``files``) in its schema; a file that cannot
        be read as one is quarantined and raises ``CorruptFileError`` (see ``read_file``)."""
        return self._stored(DATASETS[dataset], path)

    def read_columns(self, dataset: str, files: list[Path], columns: list[str]) -> pl.DataFrame:
        """``columns`` of ``files`` of ``dataset``, reading only those columns; a file that
        cannot be read is quarantined and raises ``CorruptFileError`` (see ``read_file``)."""
        try:
            return pl.scan_parquet([str(f) for f in files]).select(columns).collect()
        except (pl.exceptions.PolarsError, pa.ArrowException, OSError):
            # Find which file, and set it aside, as a read of that file alone does.
            return pl.concat([self.read_one(dataset, f).select(columns) for f in files])

    def _stored(self, ds: Dataset, path: Path) -> pl.DataFrame:
        """A file's rows in the dataset's current schema: a file written before a column was
        added reads with that column null. A Parquet file whose columns do not fit the
        dataset's schema (another tool's file, one copied into the wrong folder) cannot be
        read as the dataset's: it is quarantined like a truncated one (``read_file``)."""
        for _ in range(2):
            frame = self.read_file(path)
            if self.cache.conforms(path, frame):
                return frame
            try:
                conformed = _conformed(frame, ds)
            except (KeyError, pl.exceptions.PolarsError) as exc:
                self.cache.forget(path)
                self._set_aside(path, f"not a {ds.name} file: {quarantine._short(exc)}")
                continue  # replaced by a readable file meanwhile: read that one
            if conformed is frame:
                self.cache.mark_conforms(path, frame)
            return conformed
        raise CorruptFileError(f"{quarantine.REFETCH_HINT}: {path} keeps changing as it is read")

    def _set_aside(self, path: Path, reason: str) -> None:
        """Quarantine the unreadable file at ``path`` and raise ``CorruptFileError`` saying
        so; returns only if the file turned readable meanwhile (the caller reads it again)."""
        item = quarantine.move(self, path, reason)
        if item is not None:
            raise CorruptFileError(item.message(), path=item.moved_to, dataset=item.dataset,
                                   symbol=item.symbol)

    def read_file(self, path: Path) -> pl.DataFrame:
        """One lake file's rows (from the cache while the file is unchanged).

        A file that cannot be decoded is quarantined (``enrich.store.quarantine``) and
        ``CorruptFileError`` ("corrupt file, re-fetch") is raised: the symbol × dataset reads
        fail, visibly, until the next run has fetched it again.
        """
        for _ in range(2):
            fid = file_id(path)
            if fid is None:
                raise FileNotFoundError(path)
            frame = self.cache.get(path, fid)
            if frame is not None:
                return frame
            try:
                frame = decode_file(path)
            except (pl.exceptions.PolarsError, pa.ArrowException) as exc:
                reason = quarantine._short(exc)
            else:
                self.cache.put(path, fid, frame)
                return frame
            self._set_aside(path, reason)  # raises, unless replaced by a readable file
        raise CorruptFileError(f"{quarantine.REFETCH_HINT}: {path} keeps changing as it is read")

    def cache_forget(self, path: Path) -> None:
        self.cache.forget(path)

    def check_files(self, datasets: Iterable[str] | None = None,
                    deep: bool = False) -> list[tuple[Path, str]]:
        """Lake files whose footer cannot be read, with the reason (``health``'s check; see
        ``quarantine.footer_error`` for ``deep``).

        A file found readable is remembered by its identity (inode, mtime, size), so only new
        or changed files are read again.
        """
        bad = []
        for name in datasets or DATASETS:
            for path in self.files(name):
                fid = file_id(path)
                if fid is None or self._checked.get(path) == fid:
                    continue
                reason = quarantine.footer_error(path, deep=deep)
                if reason is None:
                    self._checked[path] = fid
                else:
                    bad.append((path, reason))
        return bad

    def quarantine_file(self, path: Path, reason: str,
                        lock_timeout: float = quarantine.LOCK_TIMEOUT_S
                        ) -> quarantine.Quarantined | None:
        """Move an unreadable file aside (``enrich.store.quarantine.move``)."""
        return quarantine.move(self, path, reason, lock_timeout)

    def _write_file(self, frame: pl.DataFrame, path: Path, ds: Dataset) -> None:
        """Write a frame of ``ds``'s schema (``conform``-ed) to ``path``; a month file's
        footer lists the dates it holds (``DATES_KEY``)."""
        metadata = None
        if ds.month_column:
            metadata = {DATES_KEY: ",".join(
                d.isoformat() for d in frame[ds.month_column].unique().sort().to_list())}
        write_parquet_atomic(frame, path, metadata)
        self.cache.put(path, file_id(path), frame, conforms=True)

    def dates_held(self, dataset: str, files: list[Path]) -> np.ndarray:
        """The distinct dates of ``dataset``'s month column in ``files`` (its files, as
        ``files`` lists them), ascending ``datetime64[D]``: from a cached frame, else from the
        file's footer (``DATES_KEY``), else — a file written before footers said, or by
        another tool — from its column. A file that cannot be read is quarantined and raises
        ``CorruptFileError`` (``read_columns``)."""
        ds = DATASETS[dataset]
        column = ds.month_column
        if column is None:
            raise ValueError(f"{dataset} is not month-partitioned")
        found: list[np.ndarray] = []
        unsaid: list[Path] = []
        for path in files:
            fid = file_id(path)
            frame = self.cache.get(path, fid) if fid is not None else None
            if frame is not None:
                found.append(frame[column].unique().to_numpy().astype("datetime64[D]"))
                continue
            try:
                said = (pq.read_metadata(path).metadata or {}).get(DATES_KEY.encode())
            except (OSError, pa.ArrowException):
                said = None  # unreadable footer: read_columns sets the file aside
            if said is None:
                unsaid.append(path)
            else:
                found.append(np.array(said.decode().split(",") if said else [],
                                      dtype="datetime64[D]"))
        if unsaid:
            found.append(self.read_columns(dataset, unsaid, [column])[column].unique()
                         .to_numpy().astype("datetime64[D]"))
        if not found:
            return np.array([], dtype="datetime64[D]")
        return np.unique(np.concatenate(found))

    def scan(self, dataset: str) -> pl.LazyFrame:
        files = self.files(dataset)
        if not files:
            return DATASETS[dataset].empty().lazy()
        return pl.scan_parquet([str(f) for f in files])

    def symbols(self, dataset: str) -> list[str]:
        base = self.root / dataset
        return sorted({symbol_from_dir_name(p.name) for p in base.glob("**/symbol=*")})

    # -- writing --------------------------------------------------------------------------
    def upsert(self, dataset: str, frame: pl.DataFrame) -> UpsertResult:
        """Insert or replace rows by natural key; returns counts of rows that changed."""
        ds = DATASETS[dataset]
        if frame.is_empty():
            return UpsertResult()
        frame = _conformed(frame, ds)
        one = _only_file(frame, ds)
        if one is not None:  # the common case, known without a pass over the rows
            (symbol, *rest), frame = one
            path = self._file_for(ds, symbol, rest[0] if ds.level_column else None,
                                  rest[-1] if ds.month_column else None)
            return self._upsert_file(ds, symbol, path, frame, in_order=True)
        parts = [pl.col("symbol")] + ([pl.col(ds.level_column)] if ds.level_column else [])
        if ds.month_column:
            parts.append(pl.col(ds.month_column).dt.strftime("%Y-%m").alias("__month"))
        # One pass for the null-key count, whether keys repeat, and the files the rows go to.
        stats = frame.select(
            pl.any_horizontal(pl.col(k).is_null() for k in ds.key).sum().alias("__nulls"),
            pl.struct(ds.key).is_duplicated().any().alias("__repeats"),
            *(p.n_unique().alias(f"__n{i}") for i, p in enumerate(parts)),
            *(p.first().alias(f"__first{i}") for i, p in enumerate(parts)),
        ).row(0)
        if stats[0]:
            raise ValueError(f"{dataset}: {stats[0]} rows have a null key column")
        if stats[1]:
            frame = frame.unique(subset=list(ds.key), keep="last", maintain_order=True)
        n_parts = len(parts)
        groups: Iterable[tuple[tuple[Any, ...], pl.DataFrame]]
        if stats[2:2 + n_parts] == (1,) * n_parts:  # the common case: one file
            groups = [(stats[2 + n_parts:], frame)]
        else:
            groups = frame.with_columns(parts).group_by(
                [p.meta.output_name() for p in parts], maintain_order=True)
        total = UpsertResult()
        for key, part in groups:
            symbol = key[0]
            level = key[1] if ds.level_column else None
            month = key[-1] if ds.month_column else None
            if "__month" in part.columns:
                part = part.drop("__month")
            total = total + self._upsert_file(ds, symbol, self._file_for(ds, symbol, level, month),
                                              part)
        return total

    def replace_symbol(self, dataset: str, symbol: str, frame: pl.DataFrame,
                       level: str | None = None) -> UpsertResult:
        """Make ``frame`` the whole content of one symbol (× level) of a one-file dataset."""
        ds = DATASETS[dataset]
        if ds.month_column:
            raise ValueError(f"{dataset} is month-partitioned; use upsert")
        key = list(ds.key)
        frame = _conformed(frame, ds)
        if not in_key_order(frame, key):
            frame = frame.unique(subset=key, keep="last").sort(key)
        path = self._file_for(ds, symbol, level, None)
        with self.write_lock(symbol):
            remove_stale_temps(path)
            try:
                held = self._height(ds, path)
                if held == frame.height:  # else it differs: no need to decode the old file
                    old = self._stored(ds, path) if path.exists() else ds.empty()
                    if old.equals(frame):
                        return UpsertResult()
            except CorruptFileError:
                if path.exists():  # could not be set aside: never written over
                    raise
                held = 0  # set aside: the new content replaces it all the same
            self._write_file(frame, path, ds)
        return UpsertResult(inserted=max(frame.height - held, 0),
                            updated=min(frame.height, held), files_written=1)

    def replace_window(self, dataset: str, symbol: str, frame: pl.DataFrame, column: str,
                       start: dt.date, end: dt.date,
                       before_removal: Callable[[pl.DataFrame], object] | None = None,
                       ) -> tuple[UpsertResult, pl.DataFrame]:
        """Make ``frame`` the rows of ``symbol`` whose ``column`` lies in [start, end] (a
        complete fetch of that window): stored rows of the window that ``frame`` does not
        hold (by key) are removed, ``frame`` is upserted, rows outside the window are
        untouched; one atomic write of a one-file dataset. Returns the counts and the
        removed rows; ``before_removal`` is called with them (when there are any) before
        the write that removes them."""
        ds = DATASETS[dataset]
        if ds.month_column:
            raise ValueError(f"{dataset} is month-partitioned; use upsert")
        key = list(ds.key)
        frame = _conformed(frame, ds)
        if not frame.is_empty() and frame["symbol"].ne(symbol).any():
            raise ValueError(f"{dataset}: rows of another symbol than {symbol}")
        if frame.schema[column] != pl.Date:
            raise ValueError(f"{dataset}: {column} is not a date column")
        path = self._file_for(ds, symbol, None, None)
        with self.write_lock(symbol):
            remove_stale_temps(path)
            old = self._stored(ds, path) if path.exists() else ds.empty()
            removed = _unlisted(old, frame, key, column, start, end)
            if removed.is_empty():  # nothing went: the usual upsert (and its shortcuts)
                return self.upsert(dataset, frame), removed
            kept = old.join(removed.select(key), on=key, how="anti", nulls_equal=True)
            changed = frame.join(kept, on=list(ds.columns), how="anti", nulls_equal=True)
            updated = changed.join(kept.select(key), on=key, how="semi").height
            merged = (pl.concat([kept, frame], how="vertical")
                      .unique(subset=key, keep="last", maintain_order=True).sort(key))
            if before_removal is not None:
                before_removal(removed)
            self._write_file(merged, path, ds)
        return UpsertResult(inserted=changed.height - updated, updated=updated,
                            files_written=1, deleted=removed.height), removed

    def _height(self, ds: Dataset, path: Path) -> int:
        """Rows in the file at ``path`` (0: none), from the cache or the file's footer; a
        footer that cannot be read, or names other columns, is read in full (``_stored``:
        quarantined, raises)."""
        fid = file_id(path)
        if fid is None:
            return 0
        frame = self.cache.get(path, fid)
        if frame is not None:
            return frame.height
        try:
            meta = pq.read_metadata(path)
            if set(ds.key) <= set(meta.schema.names):  # else no file of this dataset
                return meta.num_rows
        except (OSError, pa.ArrowException):
            pass
        return self._stored(ds, path).height

    def _upsert_file(self, ds: Dataset, symbol: str, path: Path, part: pl.DataFrame,
                     in_order: bool = False) -> UpsertResult:
        """Merge ``part`` (rows of one file, no key twice; ``in_order``: in key order) into
        the file at ``path``."""
        key = list(ds.key)
        with self.write_lock(symbol):
            remove_stale_temps(path)
            if path.exists():
                old = self._stored(ds, path)
                repeated = _appends(old, part, key) if in_order else None
                if repeated is not None:  # the daily append: what the general merge gives
                    if repeated == part.height:
                        return UpsertResult()
                    self._write_file(pl.concat([old, part.slice(repeated)], how="vertical",
                                               rechunk=True), path, ds)
                    return UpsertResult(inserted=part.height - repeated, files_written=1)
                added = _inserts(old, part, key) if in_order and not ds.month_column else None
                if added is not None:  # new rows among the stored ones, the rest as stored
                    merged, inserted = added
                    if merged is None:
                        return UpsertResult()
                    self._write_file(merged, path, ds)
                    return UpsertResult(inserted=inserted, files_written=1)
                # Rows of `part` that are new or differ from what is stored.
                changed = part.join(old, on=list(ds.columns), how="anti", nulls_equal=True)
                if changed.is_empty():
                    return UpsertResult()
                existing_keys = changed.join(old.select(key), on=key, how="semi")
                updated = existing_keys.height
                inserted = changed.height - updated
                merged = (pl.concat([old, changed], how="vertical")
                          .unique(subset=key, keep="last", maintain_order=True)
                          .sort(key))
            else:
                merged = part if in_order or in_key_order(part, key) else part.sort(key)
                inserted, updated = part.height, 0
            self._write_file(merged, path, ds)
        return UpsertResult(inserted=inserted, updated=updated, files_written=1)

    # -- coverage ---------------------------------------------------------------------------
    def _coverage_path(self, symbol: str) -> Path:
        return self.root / "_coverage" / (symbol_path_part(symbol) + ".json")

    def read_coverage(self, symbol: str) -> dict[str, dt.date]:
        """How far each dataset (``bars:1d``, ``dividends`` …) of ``symbol`` has been fetched
        (parsed again only when the file changed: a run reads it a few times per symbol)."""
        p = self._coverage_path(symbol)
        fid = file_id(p)
        if fid is None:
            return {}
        hit = self._coverage.get(p)
        if hit is not None and hit[0] == fid:
            return dict(hit[1])
        try:
            raw = json.loads(p.read_text())
        except (OSError, ValueError):
            return {}
        coverage = {k: dt.date.fromisoformat(v) for k, v in raw.items()}
        self._remember_coverage(p, fid, coverage)
        return dict(coverage)

    def _remember_coverage(self, p: Path, fid: FileId | None,
                           coverage: dict[str, dt.date]) -> None:
        if fid is None:
            return
        if len(self._coverage) >= KNOWN_PATHS:
            self._coverage.clear()
        self._coverage[p] = (fid, dict(coverage))

    def write_coverage(self, symbol: str, coverage: dict[str, dt.date]) -> None:
        p = self._coverage_path(symbol)
        write_json_atomic({k: v.isoformat() for k, v in coverage.items()}, p)
        self._remember_coverage(p, file_id(p), coverage)

    def update_coverage(self, symbol: str, changes: dict[str, dt.date]) -> None:
        """Set only the ``changes`` keys of ``symbol``'s coverage, over what is stored now (a
        dataset reset meanwhile — a quarantined file — stays reset). Call under the symbol's
        lock."""
        if changes:
            self.write_coverage(symbol, {**self.read_coverage(symbol), **changes})

    def drop_coverage(self, symbol: str, key: str) -> None:
        """Forget how far ``key`` of ``symbol`` was fetched: the next run fetches its history.
        Call under the symbol's lock."""
        coverage = self.read_coverage(symbol)
        if coverage.pop(key, None) is not None:
            self.write_coverage(symbol, coverage)

    def size_bytes(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(dirpath, f))
        return total
