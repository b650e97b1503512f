"""Read models: what the CLI and the pages display, as SQL over the catalog and lake.

Each function opens one short connection, aggregates in SQL, and returns a polars frame or a
small dict. Nothing here loads a whole log into memory.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from enrich.catalog import Catalog, utcnow
from enrich.freshness import add_freshness

STATUS_COLUMNS = (
    "symbol", "asset_class", "dataset", "state", "sessions_behind", "latest_session",
    "covered_through", "expected_session", "last_success_at", "last_attempt_at",
    "consecutive_failures", "last_error_class", "last_error_message", "last_error_at",
    "not_entitled",
)


def status_table(catalog: Catalog, symbol: str | None = None,
                 now: dt.datetime | None = None) -> pl.DataFrame:
    """symbol × dataset status with freshness recomputed for ``now`` (UTC)."""
    sql = """
        SELECT s.symbol, s.asset_class, st.dataset, st.latest_session, st.covered_through,
               st.expected_session, st.last_success_at, st.last_attempt_at,
               st.consecutive_failures, st.last_error_class, st.last_error_message,
               st.last_error_at, st.not_entitled
        FROM symbols s JOIN symbol_status st USING (symbol)
        WHERE true
    """
    params: list = []
    if symbol:
        sql += " AND s.symbol = ?"
        params.append(symbol)
    frame = catalog.query(sql + " ORDER BY s.symbol, st.dataset", params)
    if frame.is_empty():
        return pl.DataFrame(schema={c: pl.String for c in STATUS_COLUMNS})
    return add_freshness(frame, now or utcnow()).select(STATUS_COLUMNS)


def runs_table(catalog: Catalog, limit: int = 20, offset: int = 0, state: str | None = None,
               symbol: str | None = None, kind: str | None = None,
               since: dt.datetime | None = None) -> pl.DataFrame:
    """Recent runs, newest first, filtered in SQL."""
    where, params = ["true"], []
    if state:
        where.append("r.state = ?")
        params.append(state)
    if kind:
        where.append("r.kind = ?")
        params.append(kind)
    if since:
        where.append("r.requested_at >= ?")
        params.append(since)
    if symbol:
        where.append("EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = r.run_id AND t.symbol = ?)")
        params.append(symbol)
    sql = f"""
        SELECT r.run_id, r.kind, r.state, r.requested_at, r.started_at, r.finished_at,
               r.symbols_total, r.symbols_ok, r.symbols_failed, r.symbols_skipped,
               r.records_written, r.requests, r.retries, r.error_summary, r.message, r.params
        FROM runs r WHERE {' AND '.join(where)}
        ORDER BY r.requested_at DESC LIMIT ? OFFSET ?
    """
    return catalog.query(sql, [*params, limit, offset])
