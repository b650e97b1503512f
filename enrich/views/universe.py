"""The universe as the Settings page lists it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import polars as pl

from enrich.store.catalog import Catalog


def search_symbols(frame: pl.DataFrame, search: str | None) -> pl.DataFrame:
    """Rows whose ``symbol`` or ``name`` contains ``search``, case-insensitively."""
    if not search or not search.strip():
        return frame
    needle = search.strip().lower()
    return frame.filter(pl.col("symbol").str.to_lowercase().str.contains(needle, literal=True)
                        | pl.col("name").fill_null("").str.to_lowercase()
                        .str.contains(needle, literal=True))


def resolve_symbols(symbols: Sequence[str],
                    typed: Iterable[str]) -> tuple[list[str], list[str]]:
    """Typed entries (each may hold several, separated by commas or spaces) as symbols of
    ``symbols``: as written, else in any case (tickers are case-sensitive, one typed in
    another case still finds them). Returns (found, in order without repeats; not found)."""
    exact = set(symbols)
    folded: dict[str, str] = {}
    for s in symbols:
        folded.setdefault(s.lower(), s)
    found: list[str] = []
    unknown: list[str] = []
    for entry in typed:
        for word in re.split(r"[\s,;]+", str(entry).strip()):
            if not word:
                continue
            sym = word if word in exact else folded.get(word.lower())
            if sym is None:
                if word not in unknown:
                    unknown.append(word)
            elif sym not in found:
                found.append(sym)
    return found, unknown


def universe_table(catalog: Catalog) -> pl.DataFrame:
    """Every symbol of the universe with its newest successful dataset update."""
    return catalog.query("""
        SELECT s.symbol, s.name, s.asset_class, s.active, s.added_at,
               max(st.last_success_at) AS last_success_at
        FROM symbols s LEFT JOIN symbol_status st USING (symbol)
        GROUP BY ALL ORDER BY s.symbol""")
