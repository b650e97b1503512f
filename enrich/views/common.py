"""Helpers the read models share: one row, one count, a ratio, the datasets that apply, a lake
read despite unreadable files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import duckdb

from enrich.errors import CorruptFileError
from enrich.symbols import DATASETS_BY_CLASS

T = TypeVar("T")
MAX_SET_ASIDE = 16  # unreadable files one read may set aside before it gives up


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> dict:
    cur = con.execute(sql, list(params))
    row = cur.fetchone()
    cols = [d[0] for d in cur.description]
    return dict(zip(cols, row, strict=True)) if row else dict.fromkeys(cols)


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> int:
    """The one number a ``SELECT count(*) …`` answers."""
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def _ratio(num: float | None, den: float | None) -> float | None:
    return (num or 0) / den if den else None


def _applies_values(alias: str) -> str:
    """An inline table of (asset_class, dataset) pairs that apply."""
    pairs = [f"('{c}', '{d}')" for c, ds in DATASETS_BY_CLASS.items() for d in ds]
    return "(VALUES " + ", ".join(pairs) + f") AS {alias}(asset_class, dataset)"


def despite_bad_files(read: Callable[[], T]) -> tuple[T, list[str]]:
    """``read()`` (a read of the lake), again after each file it found unreadable: the read
    sets such a file aside (``CorruptFileError``), so the next attempt reads what remains.
    Returns the result and one message per file set aside (where it went, what happens
    next); raises the last ``CorruptFileError`` when files keep failing (one that could not
    be moved aside now)."""
    notes: list[str] = []
    for _ in range(MAX_SET_ASIDE):
        try:
            return read(), notes
        except CorruptFileError as exc:
            notes.append(str(exc))
    return read(), notes
