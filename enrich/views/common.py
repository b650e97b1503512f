"""Helpers the read models share: one row, one count, a ratio, the datasets that apply."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from enrich.symbols import DATASETS_BY_CLASS


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

