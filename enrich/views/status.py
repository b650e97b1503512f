"""Read models of the desk's status (the Overview and the Symbols list); this docstring
says what every read model of ``enrich.views`` keeps to.

Each catalog function opens one short connection, aggregates in SQL, and returns a polars
frame or a small dict. Nothing here loads a whole log into memory: logs are aggregated or
paginated in SQL. Lake reads are for one symbol at a time (``Lake.read(dataset, [symbol])``).

Three kinds of time, never mixed: session dates (``session``, ``latest_session``…) are DATE;
instants (``*_at``) are UTC; the daily and hourly buckets here are UTC days and hours.

The status *grid* is the base of the overview and symbol views: one row per active symbol ×
dataset that applies to its asset class (``enrich.symbols.DATASETS_BY_CLASS``), with a row even
when the dataset was never fetched, and a freshness ``state`` recomputed for ``now``
(``enrich.freshness``). A dataset the provider plan does not include gets the state
``not_entitled`` instead of ``failing``: retrying will not fix it, so it does not ask for
attention.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import polars as pl

from enrich.calendars import CALENDARS
from enrich.conventions import CONVENTIONS
from enrich.freshness import add_freshness, publication_lag
from enrich.schemas import SYMBOL_DATASETS, ColumnType
from enrich.store.catalog import Catalog, frame, utcnow
from enrich.store.plan_limits import NEXT_DAY_LAG
from enrich.symbols import calendar_for
from enrich.views.common import _applies_values
from enrich.views.metrics import latest_enrichment, overall_success, pipeline_metrics
from enrich.views.quality import symbol_quality
from enrich.views.runs import active_runs
from enrich.views.universe import search_symbols

STATUS_COLUMNS = (
    "symbol", "asset_class", "dataset", "state", "sessions_behind", "latest_session",
    "covered_through", "expected_session", "last_success_at", "last_attempt_at",
    "consecutive_failures", "last_error_class", "last_error_message", "last_error_at",
    "not_entitled",
)


# Freshness states of the grid, most urgent first (enrich.freshness); "not_expected" and
# "not_entitled" ask for no action.
GRID_STATES = ("failing", "stale", "never", "late", "due", "fresh", "not_expected",
               "not_entitled")


_URGENCY = {s: i for i, s in enumerate(GRID_STATES)}


STATUS_DATASETS = SYMBOL_DATASETS


def _lag_of_newest_run(con: duckdb.DuckDBPyConnection) -> dt.timedelta:
    """The publication lag of the provider that made the newest run (what the data is); for a
    plan found to serve a session only after its New York day ends, until then
    (``enrich.store.plan_limits``)."""
    row = con.execute("SELECT provider FROM runs WHERE provider IS NOT NULL "
                      "ORDER BY requested_at DESC LIMIT 1").fetchall()
    provider = row[0][0] if row else None
    lag = publication_lag(provider)
    if provider is not None and con.execute(
            "SELECT count(*) FROM plan_limits WHERE provider = ? AND limit_key = 'publication' "
            "AND value = 'next_day'", [provider]).fetchall()[0][0]:
        lag = max(lag, NEXT_DAY_LAG)
    return lag


# Expected to be fresh: active and not delisted (a delisted symbol is kept, its history up to
# its last trading day fetched once, and never refreshed after: ``not_expected``).
_ACTIVE = "(s.active AND s.delisted_on IS NULL)"


def status_table(catalog: Catalog, symbol: str | None = None,
                 now: dt.datetime | None = None,
                 lag: dt.timedelta | None = None) -> pl.DataFrame:
    """symbol × dataset status with freshness recomputed for ``now`` (UTC); ``lag`` is the
    provider's publication lag (default: that of the newest run's provider)."""
    sql = f"""
        SELECT s.symbol, s.asset_class, {_ACTIVE} AS active, st.dataset, st.latest_session,
               st.covered_through,
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
    with catalog.connect() as con:
        frame_ = frame(con, sql + " ORDER BY s.symbol, st.dataset", params)
        lag = _lag_of_newest_run(con) if lag is None else lag
    if frame_.is_empty():
        return pl.DataFrame(schema={c: pl.String for c in STATUS_COLUMNS})
    return add_freshness(frame_, now or utcnow(), lag).select(STATUS_COLUMNS)


_GRID_SCHEMA: dict[str, ColumnType] = {
    "symbol": pl.String, "name": pl.String, "asset_class": pl.String, "dataset": pl.String,
    "state": pl.String, "sessions_behind": pl.Int64, "latest_session": pl.Date,
    "covered_through": pl.Date, "last_success_at": pl.Datetime("us", "UTC"),
    "last_attempt_at": pl.Datetime("us", "UTC"), "consecutive_failures": pl.Int32,
    "last_error_class": pl.String, "last_error_message": pl.String,
    "last_error_at": pl.Datetime("us", "UTC"), "not_entitled": pl.Boolean,
    "expected_session": pl.Date, "due_session": pl.Date, "due_at": pl.Datetime("us", "UTC"),
}


def status_grid(catalog: Catalog, now: dt.datetime, symbol: str | None = None,
                active_only: bool = True, lag: dt.timedelta | None = None) -> pl.DataFrame:
    """Active symbol × applicable dataset, with ``state`` and ``sessions_behind`` for ``now``.

    Also ``expected_session`` (the latest session whose data is expected, an exchange date),
    and for a dataset ``due`` the closed session not yet published (``due_session``) and when
    it is expected (``due_at``, UTC). ``lag`` is the provider's publication lag (default:
    that of the newest run's provider). A deactivated symbol's rows are ``not_expected``.
    """
    where, params = ["true"], []
    if active_only:
        where.append("s.active")
    if symbol:
        where.append("s.symbol = ?")
        params.append(symbol)
    sql = f"""
        SELECT s.symbol, s.name, s.asset_class, {_ACTIVE} AS active, a.dataset, st.latest_session,
               st.covered_through, st.last_success_at, st.last_attempt_at,
               coalesce(st.consecutive_failures, 0) AS consecutive_failures,
               st.last_error_class, st.last_error_message, st.last_error_at,
               coalesce(st.not_entitled, false) AS not_entitled
        FROM symbols s
        JOIN {_applies_values("a")} ON a.asset_class = s.asset_class
        LEFT JOIN symbol_status st ON st.symbol = s.symbol AND st.dataset = a.dataset
        WHERE {' AND '.join(where)}
        ORDER BY s.symbol, a.dataset
    """
    with catalog.connect() as con:
        raw = frame(con, sql, params)
        lag = _lag_of_newest_run(con) if lag is None else lag
    if raw.is_empty():
        return pl.DataFrame(schema=_GRID_SCHEMA)
    out = add_freshness(raw, now, lag).with_columns(
        pl.when(pl.col("not_entitled") & pl.col("active")).then(pl.lit("not_entitled"))
        .otherwise(pl.col("state")).alias("state"))
    return out.select(list(_GRID_SCHEMA)).cast(
        {"sessions_behind": pl.Int64, "consecutive_failures": pl.Int32})


def expected_by_calendar(grid: pl.DataFrame) -> dict[str, dt.date]:
    """The latest expected session of each calendar among ``grid``'s rows (a status grid), in
    ``enrich.calendars.CALENDARS`` order. One date across calendars would mix them: on a
    Monday morning XNYS expects Friday while forex and crypto expect Sunday, a UTC day."""
    if grid.is_empty():
        return {}
    cal = grid["asset_class"].replace_strict(
        {c: calendar_for(c) for c in CONVENTIONS}, default=calendar_for(""),
        return_dtype=pl.String)
    newest = dict(grid.select(cal.alias("calendar"), "expected_session")
                  .group_by("calendar").agg(pl.col("expected_session").max()).iter_rows())
    return {c: newest[c] for c in CALENDARS if newest.get(c) is not None}


def state_distribution(grid: pl.DataFrame) -> pl.DataFrame:
    """dataset × state → symbols (every state present as a row, zero included)."""
    datasets = [d for d in STATUS_DATASETS if d in set(grid["dataset"].to_list())] \
        if not grid.is_empty() else []
    full = pl.DataFrame({"dataset": datasets}, schema={"dataset": pl.String}).join(
        pl.DataFrame({"state": list(GRID_STATES)}), how="cross")
    counts = grid.group_by("dataset", "state").agg(pl.len().alias("symbols"))
    return (full.join(counts, on=["dataset", "state"], how="left")
            .with_columns(pl.col("symbols").fill_null(0).cast(pl.Int64)))


def symbol_summary(grid: pl.DataFrame) -> pl.DataFrame:
    """One row per symbol: worst state, sessions behind, last error, one state per dataset.

    Columns: symbol, name, asset_class, state (the most urgent of its datasets), urgency
    (0 = most urgent), sessions_behind (max), last_success_at (newest), last_error_class and
    last_error_at (newest failing dataset), then one ``<dataset>`` state column and one
    ``<dataset>_behind`` column per dataset (null where the dataset does not apply).
    """
    cols: dict[str, ColumnType] = {
        "symbol": pl.String, "name": pl.String, "asset_class": pl.String,
        "state": pl.String, "urgency": pl.Int64, "sessions_behind": pl.Int64,
        "last_success_at": pl.Datetime("us", "UTC"), "last_error_class": pl.String,
        "last_error_at": pl.Datetime("us", "UTC")}
    for d in STATUS_DATASETS:
        cols[d] = pl.String
        cols[f"{d}_behind"] = pl.Int64
    if grid.is_empty():
        return pl.DataFrame(schema=cols)
    g = grid.with_columns(
        pl.col("state").replace_strict(_URGENCY, return_dtype=pl.Int64).alias("urgency"))
    errors = (g.filter(pl.col("state") == "failing")
              .sort("last_error_at", nulls_last=True, descending=True)
              .group_by("symbol", maintain_order=True)
              .agg(pl.col("last_error_class").first(), pl.col("last_error_at").first()))
    base = g.group_by("symbol", maintain_order=True).agg(
        pl.col("name").first(), pl.col("asset_class").first(),
        pl.col("urgency").min(), pl.col("sessions_behind").max(),
        pl.col("last_success_at").max())
    wide = g.pivot(on="dataset", index="symbol", values=["state", "sessions_behind"],
                   aggregate_function="first")
    rename = {}
    for c in wide.columns:
        if c.startswith("state_"):
            rename[c] = c.removeprefix("state_")
        elif c.startswith("sessions_behind_"):
            rename[c] = c.removeprefix("sessions_behind_") + "_behind"
    wide = wide.rename(rename)
    out = (base.join(errors, on="symbol", how="left").join(wide, on="symbol", how="left")
           .with_columns(pl.col("urgency").replace_strict(
               {i: s for s, i in _URGENCY.items()}, return_dtype=pl.String).alias("state")))
    for d in STATUS_DATASETS:
        if d not in out.columns:
            out = out.with_columns(pl.lit(None, pl.String).alias(d),
                                   pl.lit(None, pl.Int64).alias(f"{d}_behind"))
    return out.select(list(cols)).cast(pl.Schema(cols)).sort("symbol")


SYMBOL_SORTS = {
    "needs attention": (["urgency", "sessions_behind", "symbol"], [False, True, False]),
    "worst quality": (["quality", "symbol"], [False, False]),
    "symbol": (["symbol"], [False]),
    "sessions behind": (["sessions_behind", "symbol"], [True, False]),
    "last success (newest)": (["last_success_at", "symbol"], [True, False]),
    "last success (oldest)": (["last_success_at", "symbol"], [False, False]),
}


def filter_symbols(summary: pl.DataFrame, search: str | None = None,
                   state: str | None = None, dataset: str | None = None,
                   asset_class: str | None = None, sort: str = "needs attention",
                   limit: int = 100, offset: int = 0) -> tuple[pl.DataFrame, int]:
    """A page of ``symbol_summary`` rows matching the filters, and the number of matches.

    ``state`` filters on the symbol's worst state, or on ``dataset``'s state when given.
    ``search`` matches the symbol or its name, case-insensitively. The sort by quality needs
    the ``quality`` column of ``with_quality``; symbols not checked yet sort last.
    """
    out = search_symbols(summary, search)
    if state:
        col = dataset if dataset in STATUS_DATASETS else "state"
        out = out.filter(pl.col(col) == state)
    elif dataset in STATUS_DATASETS:
        out = out.filter(pl.col(dataset).is_not_null())
    if asset_class:
        out = out.filter(pl.col("asset_class") == asset_class)
    by, desc = SYMBOL_SORTS.get(sort, SYMBOL_SORTS["needs attention"])
    if any(c not in out.columns for c in by):
        by, desc = SYMBOL_SORTS["needs attention"]
    out = out.sort(by, descending=desc, nulls_last=True)
    return out.slice(offset, limit), out.height


# Most urgent states that ask for the operator: a run fixes the first four; a symbol whose
# every dataset the plan refused (``not_entitled``) needs the plan changed or the symbol removed.
ATTENTION_STATES = ("failing", "stale", "never", "late", "not_entitled")


def needs_attention(summary: pl.DataFrame, limit: int = 10) -> tuple[pl.DataFrame, int]:
    """The symbols of ``symbol_summary`` whose most urgent state is one of
    ``ATTENTION_STATES``: the ``limit`` most urgent, and how many there are."""
    return filter_symbols(summary.filter(pl.col("state").is_in(ATTENTION_STATES)), limit=limit)


def with_quality(summary: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    """``symbol_summary`` rows with each symbol's ``quality`` score and ``failing_checks``
    (``symbol_quality``), so the list sorts and filters on quality over every symbol."""
    return summary.join(
        scores.select("symbol", pl.col("score").alias("quality"),
                      pl.col("failing").alias("failing_checks")),
        on="symbol", how="left", maintain_order="left")


def symbols_page(catalog: Catalog, now: dt.datetime, search: str | None = None,
                 state: str | None = None, dataset: str | None = None,
                 asset_class: str | None = None, sort: str = "needs attention",
                 limit: int = 100, offset: int = 0) -> tuple[pl.DataFrame, int]:
    """What the Symbols page lists: ``filter_symbols`` over the summary at ``now``, with each
    symbol's quality score and failing checks (``symbol_quality``)."""
    table = with_quality(symbol_summary(status_grid(catalog, now)), symbol_quality(catalog))
    return filter_symbols(table, search, state, dataset, asset_class, sort, limit, offset)


def overview(catalog: Catalog, now: dt.datetime,
             wall: dt.datetime | None = None) -> dict[str, Any]:
    """What the Overview page shows, in one dict: symbols per worst state, the status
    distribution per dataset, the ten most urgent symbols, 24 h pipeline metrics (the 24 h
    before ``wall``, the clock that stamps the logs; default ``now``), all-time success, the
    latest enrichment and the active runs."""
    grid = status_grid(catalog, now)
    summary = symbol_summary(grid)
    attention, n_attention = needs_attention(summary)
    return {
        "as_of": now, "symbols": summary.height, "states": symbol_state_counts(summary),
        "distribution": state_distribution(grid),
        "needs_attention": {"total": n_attention, "top": attention.select(
            "symbol", "name", "state", "sessions_behind", "last_error_class",
            "last_success_at")},
        "metrics_24h": pipeline_metrics(catalog, (wall or now) - dt.timedelta(hours=24)),
        "overall": overall_success(catalog), "latest": latest_enrichment(catalog),
        "active_runs": active_runs(catalog),
    }


def symbol_state_counts(summary: pl.DataFrame) -> dict[str, int]:
    """Symbols per worst state (every state present, zero included)."""
    counts = dict.fromkeys(GRID_STATES, 0)
    if not summary.is_empty():
        for s, n in summary.group_by("state").len().iter_rows():
            counts[s] = int(n)
    return counts
