"""The universe as the Settings page lists it."""

from __future__ import annotations

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


def universe_table(catalog: Catalog) -> pl.DataFrame:
    """Every symbol of the universe with its newest successful dataset update."""
    return catalog.query("""
        SELECT s.symbol, s.name, s.asset_class, s.active, s.added_at,
               max(st.last_success_at) AS last_success_at
        FROM symbols s LEFT JOIN symbol_status st USING (symbol)
        GROUP BY ALL ORDER BY s.symbol""")
