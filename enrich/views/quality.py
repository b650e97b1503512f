"""Data quality: scores, failing checks, restatements, rebases, the coverage heatmap.

Every read over many symbols counts the active symbols of the universe, as the status grid
does; one symbol's own reads (``quality_scores``, ``symbol_checks``) answer for any symbol."""

from __future__ import annotations

import datetime as dt

import polars as pl

from enrich.store.catalog import Catalog

# The symbols the desk counts: active ones in the universe (the Overview's, the Symbols
# list's, the heatmap's and the quality alert's). Checks of a removed or deactivated symbol
# stay in ``quality_status`` (its data stays in the lake) but are no one's failure to fix.
_COUNTED = "symbol IN (SELECT symbol FROM symbols WHERE active)"


def _weight_sql(col: str = "severity") -> str:
    from enrich.checks.quality import SEVERITY_WEIGHT

    cases = " ".join(f"WHEN '{k}' THEN {v}" for k, v in SEVERITY_WEIGHT.items())
    return f"(CASE {col} {cases} ELSE 1.0 END)"


def _check_order_sql() -> str:
    from enrich.checks.quality import CHECKS

    cases = " ".join(f"WHEN '{c.dataset}/{c.name}' THEN {i}" for i, c in enumerate(CHECKS))
    return f"(CASE dataset || '/' || check_name {cases} ELSE 99 END)"


def quality_scores(catalog: Catalog, symbol: str | None = None) -> pl.DataFrame:
    """Per symbol × dataset (of one ``symbol`` when given), from the latest check results:
    ``score`` (share of checks passing, weighted by severity:
    ``enrich.checks.quality.SEVERITY_WEIGHT``), checks, failed, failed errors, when checked."""
    w = _weight_sql()
    where, params = ("WHERE symbol = ?", [symbol]) if symbol else ("", [])
    return catalog.query(f"""
        SELECT symbol, dataset,
               sum({w} * CAST(passed AS INTEGER)) / sum({w}) AS score,
               count(*) AS checks, count(*) FILTER (NOT passed) AS failed,
               count(*) FILTER (NOT passed AND severity = 'error') AS failed_errors,
               max(checked_at) AS checked_at
        FROM quality_status {where} GROUP BY ALL ORDER BY symbol, dataset""", params)


def symbol_quality(catalog: Catalog) -> pl.DataFrame:
    """Per symbol: its quality ``score`` over every check of every dataset (weighted by
    severity), checks, failed, and the failing checks as ``dataset/check`` text."""
    w = _weight_sql()
    return catalog.query(f"""
        SELECT symbol, sum({w} * CAST(passed AS INTEGER)) / sum({w}) AS score,
               count(*) AS checks, count(*) FILTER (NOT passed) AS failed,
               string_agg(dataset || '/' || check_name, ', ' ORDER BY dataset, check_name)
                   FILTER (NOT passed) AS failing
        FROM quality_status WHERE {_COUNTED} GROUP BY symbol ORDER BY symbol""")


def worst_quality(catalog: Catalog, dataset: str | None = None,
                  limit: int = 20) -> pl.DataFrame:
    """The symbols with failing checks, worst quality score first (of ``dataset`` when
    given, else over every dataset): symbol, score, checks, failed, failed_errors, and the
    failing checks as ``dataset/check`` text."""
    w = _weight_sql()
    where, params = (f"WHERE {_COUNTED} AND dataset = ?", [dataset]) if dataset \
        else (f"WHERE {_COUNTED}", [])
    return catalog.query(f"""
        SELECT symbol, sum({w} * CAST(passed AS INTEGER)) / sum({w}) AS score,
               count(*) AS checks, count(*) FILTER (NOT passed) AS failed,
               count(*) FILTER (NOT passed AND severity = 'error') AS failed_errors,
               string_agg(dataset || '/' || check_name, ', ' ORDER BY dataset, check_name)
                   FILTER (NOT passed) AS failing
        FROM quality_status {where} GROUP BY symbol HAVING count(*) FILTER (NOT passed) > 0
        ORDER BY score, failed DESC, symbol LIMIT ?""", [*params, limit])


def symbol_checks(catalog: Catalog, symbol: str) -> pl.DataFrame:
    """The latest result of every check of one symbol: failing first (errors before
    warnings), each with what it looks for and its evidence (``detail``)."""
    from enrich.checks.quality import CHECKS

    out = catalog.query(f"""
        SELECT dataset, check_name, severity, passed, observed, threshold, detail,
               checked_at, run_id
        FROM quality_status WHERE symbol = ?
        ORDER BY passed, severity = 'warning', {_check_order_sql()}""", [symbol])
    titles = pl.DataFrame({"dataset": [c.dataset for c in CHECKS],
                           "check_name": [c.name for c in CHECKS],
                           "title": [c.title for c in CHECKS]})
    if out.is_empty():
        return out.with_columns(pl.lit(None, pl.String).alias("title"))
    return out.join(titles, on=["dataset", "check_name"], how="left", maintain_order="left")


def quality_by_dataset(catalog: Catalog) -> pl.DataFrame:
    """Per dataset: symbols checked, mean quality score, symbols with a failing check,
    failing checks (latest results)."""
    w = _weight_sql()
    return catalog.query(f"""
        WITH s AS (
            SELECT symbol, dataset, sum({w} * CAST(passed AS INTEGER)) / sum({w}) AS score,
                   count(*) FILTER (NOT passed) AS failed
            FROM quality_status WHERE {_COUNTED} GROUP BY ALL)
        SELECT dataset, count(*) AS symbols, avg(score) AS mean_score,
               min(score) AS worst_score,
               count(*) FILTER (failed > 0) AS symbols_failing,
               CAST(sum(failed) AS BIGINT) AS failed_checks
        FROM s GROUP BY dataset ORDER BY dataset""")


def quality_by_check(catalog: Catalog) -> pl.DataFrame:
    """Per check (latest results): severity, symbols checked, symbols failing, the worst
    observed value and the newest failure's evidence."""
    return catalog.query(f"""
        SELECT dataset, check_name, any_value(severity) AS severity, count(*) AS symbols,
               count(*) FILTER (NOT passed) AS failing,
               max(observed) AS worst_observed, any_value(threshold) AS threshold,
               arg_max(symbol || ': ' || detail, checked_at) FILTER (NOT passed)
                   AS last_failure
        FROM quality_status WHERE {_COUNTED} GROUP BY dataset, check_name
        ORDER BY min({_check_order_sql()})""")


def quality_daily(catalog: Catalog, now: dt.datetime, days: int = 30) -> pl.DataFrame:
    """Per UTC day × dataset over the last ``days`` days (every check result logged that
    day): checks, failed, and ``pass_rate`` weighted by severity."""
    w = _weight_sql()
    return catalog.query(f"""
        SELECT CAST(date_trunc('day', checked_at) AS DATE) AS day, dataset,
               count(*) AS checks, count(*) FILTER (NOT passed) AS failed,
               sum({w} * CAST(passed AS INTEGER)) / sum({w}) AS pass_rate
        FROM quality_log WHERE checked_at >= ?
        GROUP BY ALL ORDER BY day, dataset""", [now - dt.timedelta(days=days)])


def symbol_restatements(catalog: Catalog, symbol: str, limit: int = 500) -> pl.DataFrame:
    """Stored history of one symbol that re-fetches changed, newest first: session, column,
    ``what`` happened, old and new value, relative change, the run and when. ``what`` is
    ``removed`` when the new value is null: a complete re-fetch no longer lists the row (a
    cancelled or re-dated dividend, ``checks.restatements.removal``) or no longer gives the
    value; else ``changed``."""
    return catalog.query("""
        SELECT dataset, session, column_name,
               CASE WHEN new_value IS NULL THEN 'removed' ELSE 'changed' END AS what,
               old_value, new_value, change, run_id, detected_at
        FROM restatements WHERE symbol = ?
        ORDER BY detected_at DESC, session DESC, column_name LIMIT ?""", [symbol, limit])


def symbol_rebases(catalog: Catalog, symbol: str) -> pl.DataFrame:
    """When one symbol's bars moved to a newer split basis (``compute_log`` status
    ``rebased``): not restatements, the same history on today's share basis."""
    return catalog.query("""
        SELECT started_at, timeframe, records, run_id,
               coalesce(error_message, 'stored bars re-based on a new split') AS how
        FROM compute_log WHERE symbol = ? AND status = 'rebased'
        ORDER BY started_at DESC""", [symbol])


def failing_checks(catalog: Catalog, dataset: str | None = None,
                   limit: int = 200) -> pl.DataFrame:
    """The checks failing now (latest results), errors first, with their evidence and the
    quality ``score`` of their symbol × dataset."""
    where, params = f"NOT passed AND {_COUNTED}", []
    if dataset:
        where += " AND dataset = ?"
        params.append(dataset)
    w = _weight_sql("q.severity")
    return catalog.query(f"""
        WITH s AS (
            SELECT symbol, dataset, sum({w} * CAST(passed AS INTEGER)) / sum({w}) AS score
            FROM quality_status q {"WHERE dataset = ?" if dataset else ""} GROUP BY ALL)
        SELECT symbol, dataset, check_name, severity, s.score, observed, threshold, detail,
               checked_at
        FROM quality_status JOIN s USING (symbol, dataset) WHERE {where}
        ORDER BY severity = 'warning', s.score, symbol, {_check_order_sql()} LIMIT ?""",
        [*params[:1], *params, limit] if dataset else [limit])


def quality_report(catalog: Catalog, symbol: str | None = None, failing: bool = False,
                   dataset: str | None = None) -> dict[str, pl.DataFrame]:
    """Checks and scores, as ``enrich quality`` and ``GET /api/v1/quality`` show them.

    With ``symbol``: its scores per dataset and its checks (only failing ones with
    ``failing``). Without: with ``failing`` the checks failing now (of ``dataset``); else the
    score of every symbol, per dataset and per check.
    """
    if symbol:
        checks = symbol_checks(catalog, symbol)
        if failing and not checks.is_empty():
            checks = checks.filter(~pl.col("passed"))
        if dataset and not checks.is_empty():
            checks = checks.filter(pl.col("dataset") == dataset)
        return {"scores": quality_scores(catalog, symbol), "checks": checks}
    if failing:
        return {"failing": failing_checks(catalog, dataset, limit=10_000)}
    return {"symbols": symbol_quality(catalog), "by_dataset": quality_by_dataset(catalog),
            "by_check": quality_by_check(catalog)}


def coverage_heatmap(catalog: Catalog, dataset: str, now: dt.datetime, sessions: int = 60,
                     granularity: str = "auto"):
    """``enrich.backfill.heatmap.heatmap`` (symbols × sessions, present / missing / failed / not
    expected), here so pages read it like every other read model."""
    from enrich.backfill.heatmap import heatmap

    return heatmap(catalog, dataset, now, sessions, granularity)
