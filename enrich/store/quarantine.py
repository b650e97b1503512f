"""Quarantine: an unreadable lake file is moved aside, recorded, and fetched again.

One bad file never stops the desk. Whoever finds a lake file that cannot be read (a lake read,
the catalog building its views, ``health`` reading footers) moves it under the symbol's lock to

    <data>/lake/_quarantine/<dataset>/[<level>/]symbol=<SYM>/<UTC stamp>-<file name>

(outside every dataset's folder, so no view or read sees it), removes that dataset from the
symbol's coverage (``lake/_coverage/<SYM>.json``) so the next run fetches its history again,
and appends one line to ``lake/_quarantine/index.jsonl``. The catalog imports new lines of that
index into its ``quarantine`` table (and marks the symbol × dataset failing) whenever it writes,
so processes that never open the catalog (run workers) quarantine too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import Timeout

from enrich.errors import CorruptFileError

if TYPE_CHECKING:
    from enrich.store.lake import Lake

DIR = "_quarantine"
INDEX = "index.jsonl"
LOCK_TIMEOUT_S = 5.0  # a reader does not wait long for an enrichment of the symbol to end
REFETCH_HINT = "corrupt file, re-fetch"


@dataclass(frozen=True)
class Quarantined:
    """One file moved aside. Paths are relative to the data directory (it may move)."""

    original: str
    moved_to: str
    dataset: str | None
    level: str | None
    symbol: str | None
    reason: str
    size_bytes: int
    quarantined_at: dt.datetime

    def message(self) -> str:
        """What a user reads where the symbol × dataset is shown failing."""
        what = f"{self.symbol} {self.dataset}" if self.symbol else "this dataset"
        if self.dataset in DERIVED:
            then = f"the next run that enriches {self.symbol} computes {self.dataset} again"
        elif self.dataset == "options_iv":  # a chain is a snapshot: only its moment has it
            then = (f"the next run fetches {what} as of then; `python -m enrich backfill "
                    f"options --symbol {self.symbol}` computes the sessions it held again")
        else:
            then = f"the next run fetches {what} again"
        return (f"{REFETCH_HINT}: {self.original} could not be read ({self.reason}); it was "
                f"moved to {self.moved_to} and {then}")


T = TypeVar("T")
MAX_SET_ASIDE = 16  # unreadable files one read may set aside before it gives up


def despite_bad_files(read: Callable[[], T]) -> tuple[T, list[CorruptFileError]]:
    """``read()`` (a read of the lake), again after each file it found unreadable: the read
    sets such a file aside (``CorruptFileError``), so the next attempt reads what remains.
    Returns the result and the error of each file set aside (its message says where it went
    and what happens next); raises the last ``CorruptFileError`` when files keep failing (one
    that could not be moved aside now)."""
    set_aside: list[CorruptFileError] = []
    for _ in range(MAX_SET_ASIDE):
        try:
            return read(), set_aside
        except CorruptFileError as exc:
            set_aside.append(exc)
    return read(), set_aside


# Datasets computed from others (features from bars, the vol summary from the option chains):
# a file set aside is computed again, not fetched.
DERIVED = ("features", "vol_summary")

MAGIC = b"PAR1"


def footer_error(path: Path, deep: bool = True) -> str | None:
    """Why ``path`` is not a readable Parquet file (judged from its footer), or None.

    ``deep`` parses the footer's metadata (~0.3 ms a file); otherwise only its frame is read:
    the magic bytes at both ends and a footer length that fits the file (~10 µs), which
    catches a truncated or overwritten file — the usual damage — cheaply enough for
    ``health`` to look at every file of a large lake.
    """
    try:
        if deep:
            pq.read_metadata(path)
            return None
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size < 12:
                return f"{size} bytes: too small to be a Parquet file"
            head, tail = os.pread(fd, 4, 0), os.pread(fd, 8, size - 8)
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None  # replaced or removed meanwhile: nothing to judge
    except (OSError, pa.ArrowException) as exc:
        return _short(exc)
    if head != MAGIC or tail[4:] != MAGIC:
        return "no Parquet magic bytes at its start or end: truncated or not Parquet"
    if int.from_bytes(tail[:4], "little") > size - 12:
        return "its footer is longer than the file: truncated"
    return None


def where(lake_root: Path, path: Path) -> tuple[str | None, str | None, str | None]:
    """(dataset, level, symbol) of a lake file from its place in the layout."""
    try:
        parts = Path(path).resolve().relative_to(Path(lake_root).resolve()).parts
    except ValueError:
        return None, None, None
    dataset = parts[0] if len(parts) > 1 else None
    level = next((p.partition("=")[2] for p in parts[1:-1]
                  if "=" in p and not p.startswith("symbol=")), None)
    symbol = next((unquote(p.removeprefix("symbol=")) for p in parts[1:-1]
                   if p.startswith("symbol=")), None)
    return dataset, level, symbol


def coverage_key(dataset: str | None, level: str | None) -> str | None:
    """The key of ``lake/_coverage/<SYM>.json`` that says how far ``dataset`` was fetched."""
    if dataset == "bars":
        return f"bars:{level or '1d'}"
    if dataset is None or dataset in DERIVED:
        return None  # a missing file is computed again by the next run
    return dataset


def move(lake: Lake, path: Path, reason: str,
         lock_timeout: float = LOCK_TIMEOUT_S) -> Quarantined | None:
    """Move an unreadable lake file aside, reset its coverage and record it (see the module
    docstring); None if the file turns out readable (replaced meanwhile). Raises
    ``CorruptFileError`` if it cannot be moved now (the symbol is locked longer than
    ``lock_timeout``, or the file system refuses)."""
    path = Path(path)
    dataset, level, symbol = where(lake.root, path)
    data_dir = lake.root.parent
    rel = _rel(path, data_dir)
    try:
        with contextlib.ExitStack() as stack:
            if symbol is not None:
                stack.enter_context(lake.write_lock(symbol, timeout=lock_timeout))
            if footer_error(path) is None and _readable(path, dataset):
                raise _Recovered  # replaced by a good file meanwhile: nothing to move
            size = path.stat().st_size
            now = dt.datetime.now(dt.UTC)
            inside = path.resolve().relative_to(lake.root.resolve())
            target = lake.root / DIR / inside.parent / f"{now:%Y%m%dT%H%M%S%fZ}-{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            lake.cache_forget(path)
            key = coverage_key(dataset, level)
            if symbol is not None and key is not None:
                lake.drop_coverage(symbol, key)
            item = Quarantined(rel, _rel(target, data_dir), dataset, level, symbol, reason,
                               size, now)
            _append(lake.root / DIR / INDEX, item)
            return item
    except _Recovered:
        return None
    except (Timeout, OSError, ValueError) as exc:
        raise CorruptFileError(
            f"{REFETCH_HINT}: {rel} could not be read ({reason}) and could not be moved aside "
            f"now ({_short(exc)}); it is retried on the next read",
            path=rel, dataset=dataset, symbol=symbol) from None


class _Recovered(Exception):
    """The file became readable while we waited for its lock."""


def read_index(lake_root: Path, offset: int = 0) -> tuple[list[Quarantined], int]:
    """Records appended to the index from byte ``offset`` on, and the offset after them."""
    p = Path(lake_root) / DIR / INDEX
    try:
        with open(p, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1  # a line still being appended is read next time
    items = []
    for line in data[:end].splitlines():
        with contextlib.suppress(ValueError, TypeError, KeyError):
            raw = json.loads(line)
            raw["quarantined_at"] = dt.datetime.fromisoformat(raw["quarantined_at"])
            items.append(Quarantined(**raw))
    return items, offset + end


def index_size(lake_root: Path) -> int:
    try:
        return (Path(lake_root) / DIR / INDEX).stat().st_size
    except OSError:
        return 0


def _append(index: Path, item: Quarantined) -> None:
    line = json.dumps({**asdict(item), "quarantined_at": item.quarantined_at.isoformat()},
                      sort_keys=True).encode() + b"\n"
    fd = os.open(index, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)  # one write of a short line: appends never interleave
    finally:
        os.close(fd)


def _readable(path: Path, dataset: str | None) -> bool:
    """Whether the whole file decodes (a footer can be intact over damaged pages) into the
    schema of ``dataset`` (a Parquet file of other columns is no file of that dataset)."""
    import polars as pl

    from enrich.schemas import DATASETS, conform

    try:
        frame = pl.read_parquet(path)
        if dataset in DATASETS:
            conform(frame, DATASETS[dataset])
    except FileNotFoundError:
        return True
    except Exception:  # noqa: BLE001 (any decoding failure means unreadable)
        return False
    return True


def _rel(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(path)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def as_row(item: Quarantined) -> dict[str, Any]:
    """The ``quarantine`` table's row for ``item``."""
    return {"moved_to": item.moved_to, "original": item.original, "kind": "lake_file",
            "dataset": item.dataset, "level": item.level, "symbol": item.symbol,
            "reason": item.reason, "size_bytes": item.size_bytes,
            "quarantined_at": item.quarantined_at}
