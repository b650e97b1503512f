"""Read models: what the CLI and the pages display, as SQL over the catalog and lake.

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

import contextlib
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import duckdb
import polars as pl

from enrich import calendars
from enrich.freshness import add_freshness, publication_lag
from enrich.quant import vol_summary
from enrich.schemas import OPTIONS_IV, ColumnType, conform
from enrich.store.catalog import Catalog, frame, utcnow
from enrich.store.lake import Lake
from enrich.store.plan_limits import NEXT_DAY_LAG
from enrich.symbols import DATASETS_BY_CLASS, calendar_for

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
STATUS_DATASETS = ("bars", "dividends", "splits", "earnings", "news", "options_iv")
RUN_STATES = ("queued", "running", "succeeded", "partial", "failed", "cancelled", "paused",
              "interrupted", "missed")
ACTIVE_RUN_STATES = ("queued", "running")
RUN_KINDS = ("manual", "scheduled", "retry", "backfill", "cli", "api")
# fetch_log rows that end a step (not the intermediate "retried" attempts).
_STEP_DONE = "status IN ('ok', 'up_to_date', 'failed')"
_STEP_OK = "status IN ('ok', 'up_to_date')"


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


# -- status (CLI) -----------------------------------------------------------------------------
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


# -- the status grid ----------------------------------------------------------------------------
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


def overview(catalog: Catalog, now: dt.datetime) -> dict[str, Any]:
    """What the Overview page shows, in one dict: symbols per worst state, the status
    distribution per dataset, the ten most urgent symbols, 24 h pipeline metrics (the 24 h
    before ``now``), all-time success, the latest enrichment and the active runs."""
    grid = status_grid(catalog, now)
    summary = symbol_summary(grid)
    attention, n_attention = filter_symbols(
        summary.filter(pl.col("state").is_in(["failing", "stale", "never", "late"])), limit=10)
    return {
        "as_of": now, "symbols": summary.height, "states": symbol_state_counts(summary),
        "distribution": state_distribution(grid),
        "needs_attention": {"total": n_attention, "top": attention.select(
            "symbol", "name", "state", "sessions_behind", "last_error_class",
            "last_success_at")},
        "metrics_24h": pipeline_metrics(catalog, now - dt.timedelta(hours=24)),
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


# -- pipeline metrics --------------------------------------------------------------------------
def _log_metrics_sql(table: str) -> str:
    if table == "fetch_log":
        extra = """, CAST(coalesce(sum(requests), 0) AS BIGINT) AS requests,
                   CAST(coalesce(sum(received), 0) AS BIGINT) AS received,
                   CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
                   count(*) FILTER (status = 'retried') AS retries"""
        done, ok = _STEP_DONE, _STEP_OK
        timed = "status IN ('ok', 'failed')"
    else:
        extra = ""
        done, ok, timed = "status IN ('ok', 'failed')", "status = 'ok'", "true"
    return f"""
        SELECT count(*) FILTER ({done}) AS steps,
               count(*) FILTER ({ok}) AS ok,
               count(*) FILTER (status = 'failed') AS failed,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows
               {extra},
               quantile_cont(duration_ms, 0.5) FILTER ({timed}) AS p50_ms,
               quantile_cont(duration_ms, 0.95) FILTER ({timed}) AS p95_ms
        FROM {table}
    """


def pipeline_metrics(catalog: Catalog, since: dt.datetime | None = None) -> dict[str, dict]:
    """Fetch and compute pipeline totals since ``since`` (all time when None).

    fetch: steps (finished fetch steps), ok, failed, success_rate, rows (rows written to the
    lake), requests (provider calls), received, rejected, retries, p50_ms / p95_ms (duration
    of steps that called the provider). compute: steps, ok, failed, success_rate, rows,
    p50_ms, p95_ms.
    """
    where = " WHERE started_at >= ?" if since else ""
    params = [since] if since else []
    with catalog.connect() as con:
        fetch = _one(con, _log_metrics_sql("fetch_log") + where, params)
        compute = _one(con, _log_metrics_sql("compute_log") + where, params)
    for m in (fetch, compute):
        m["success_rate"] = _ratio(m["ok"], m["steps"])
        for k, v in list(m.items()):
            if k not in ("p50_ms", "p95_ms", "success_rate") and v is not None:
                m[k] = int(v)
    return {"fetch": fetch, "compute": compute}


def overall_success(catalog: Catalog) -> dict[str, Any]:
    """All-time success rates: runs, symbol tasks, fetch steps.

    A run counts when it ran to its end (succeeded, partial, failed, interrupted, missed):
    a run someone paused or cancelled stopped on request, which says nothing of the desk.
    """
    with catalog.connect() as con:
        runs = _one(con, """
            SELECT count(*) FILTER (state IN ('succeeded','partial','failed',
                                              'interrupted','missed')) AS finished,
                   count(*) FILTER (state = 'succeeded') AS succeeded,
                   count(*) FILTER (state = 'partial') AS partial,
                   count(*) FILTER (state = 'failed') AS failed
            FROM runs""")
        tasks = _one(con, """
            SELECT count(*) FILTER (state IN ('ok', 'skipped', 'failed')) AS finished,
                   count(*) FILTER (state IN ('ok', 'skipped')) AS ok
            FROM tasks""")
        steps = _one(con, f"""
            SELECT count(*) FILTER ({_STEP_DONE}) AS finished,
                   count(*) FILTER ({_STEP_OK}) AS ok FROM fetch_log""")
    return {
        "runs_finished": int(runs["finished"] or 0),
        "run_success_rate": _ratio(runs["succeeded"], runs["finished"]),
        "task_success_rate": _ratio(tasks["ok"], tasks["finished"]),
        "fetch_success_rate": _ratio(steps["ok"], steps["finished"]),
    }


def latest_enrichment(catalog: Catalog) -> dict[str, Any]:
    """Newest successful dataset update and the newest finished run."""
    with catalog.connect() as con:
        st = _one(con, "SELECT max(last_success_at) AS last_success_at FROM symbol_status")
        run = _one(con, """
            SELECT run_id, kind, state, finished_at, message FROM runs
            WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1""")
    return {"last_success_at": st["last_success_at"], "last_run": run
            if run.get("run_id") else None}


# -- runs -------------------------------------------------------------------------------------
def runs_table(catalog: Catalog, limit: int = 20, offset: int = 0, state: str | None = None,
               symbol: str | None = None, kind: str | None = None,
               since: dt.datetime | None = None) -> pl.DataFrame:
    """Recent runs, newest first, filtered in SQL."""
    return runs_search(catalog, limit=limit, offset=offset, state=state, symbol=symbol,
                       kind=kind, since=since)[0]


def search_symbols(frame: pl.DataFrame, search: str | None) -> pl.DataFrame:
    """Rows whose ``symbol`` or ``name`` contains ``search``, case-insensitively."""
    if not search or not search.strip():
        return frame
    needle = search.strip().lower()
    return frame.filter(pl.col("symbol").str.to_lowercase().str.contains(needle, literal=True)
                        | pl.col("name").fill_null("").str.to_lowercase()
                        .str.contains(needle, literal=True))


def _runs_where(state, symbol, kind, since, until) -> tuple[str, list]:
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
    if until:
        where.append("r.requested_at < ?")
        params.append(until)
    if symbol:
        # Any case: tickers are case-sensitive, but a filter typed in another case still finds
        # them (KIMpL and a KIMPL would both show).
        where.append("EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = r.run_id "
                     "AND lower(t.symbol) = lower(?))")
        params.append(symbol)
    return " AND ".join(where), params


def runs_search(catalog: Catalog, limit: int = 20, offset: int = 0, state: str | None = None,
                symbol: str | None = None, kind: str | None = None,
                since: dt.datetime | None = None,
                until: dt.datetime | None = None) -> tuple[pl.DataFrame, int]:
    """A page of runs (newest first) matching the filters, and the number of matches.

    ``since`` / ``until`` bound ``requested_at`` (UTC instants, ``until`` exclusive).
    """
    where, params = _runs_where(state, symbol, kind, since, until)
    sql = f"""
        SELECT r.run_id, r.kind, r.state, r.requested_at, r.started_at, r.finished_at,
               r.symbols_total, r.symbols_ok, r.symbols_failed, r.symbols_skipped,
               r.records_written, r.requests, r.retries, r.error_summary, r.message, r.params,
               date_diff('millisecond', r.started_at, coalesce(r.finished_at, now())) / 1000.0
                   AS duration_s
        FROM runs r WHERE {where}
        ORDER BY r.requested_at DESC LIMIT ? OFFSET ?
    """
    with catalog.connect() as con:
        page = frame(con, sql, [*params, limit, offset])
        total = _count(con, f"SELECT count(*) FROM runs r WHERE {where}", params)
    return page, int(total)


def active_runs(catalog: Catalog, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Queued and running runs with live progress (see ``run_progress``)."""
    rows = catalog.query(
        "SELECT run_id FROM runs WHERE state IN ('queued', 'running') ORDER BY requested_at")
    return [p for rid in rows["run_id"].to_list()
            if (p := run_progress(catalog, rid, now)) is not None]


def run_progress(catalog: Catalog, run_id: str,
                 now: dt.datetime | None = None) -> dict[str, Any] | None:
    """A run's progress: done / total symbols, the symbols in flight, requests made against
    the plan's budget, ETA in seconds.

    On a rate-limited provider the requests bound the run, so ``eta_s`` is the planned
    requests still to make at the plan's rate; otherwise it extrapolates the run's mean time
    per finished symbol (None until one finished).
    """
    with catalog.connect() as con:
        r = _one(con, """
            SELECT run_id, kind, state, requested_at, started_at, finished_at, heartbeat_at,
                   symbols_total, symbols_ok, symbols_failed, symbols_skipped,
                   records_written, requests, retries, message, requests_planned,
                   CAST(json_extract(plan, '$.rate_limit_per_min') AS DOUBLE) AS rate_per_min
            FROM runs WHERE run_id = ?""", [run_id])
        if r.get("run_id") is None:
            return None
        t = _one(con, """
            SELECT count(*) FILTER (state NOT IN ('running')) AS done,
                   count(*) FILTER (state = 'failed') AS failed,
                   list(symbol ORDER BY started_at) FILTER (state = 'running') AS current
            FROM tasks WHERE run_id = ?""", [run_id])
    now = now or utcnow()
    total = int(r["symbols_total"] or 0)
    done = max(int(t["done"] or 0),
               int((r["symbols_ok"] or 0) + (r["symbols_failed"] or 0)
                   + (r["symbols_skipped"] or 0)))
    done = min(done, total) if total else done
    elapsed = None
    if r["started_at"] is not None:
        elapsed = ((r["finished_at"] or now) - r["started_at"]).total_seconds()
    eta = None
    planned, made, rate = r["requests_planned"], int(r["requests"] or 0), r["rate_per_min"]
    if r["state"] == "running" and planned is not None and rate:
        eta = max(int(planned) - made, 0) * 60.0 / rate
    elif r["state"] == "running" and elapsed and done and total > done:
        eta = elapsed / done * (total - done)
    r.update(done=done, total=total, current=list(t["current"] or []),
             failed_so_far=int(t["failed"] or 0), elapsed_s=elapsed, eta_s=eta,
             fraction=(done / total) if total else (1.0 if r["finished_at"] else 0.0))
    return r


def run_detail(catalog: Catalog, run_id: str) -> dict[str, Any] | None:
    """Every column of a run, with ``params`` and ``error_summary`` parsed from JSON."""
    with catalog.connect() as con:
        r = _one(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])
    if r.get("run_id") is None:
        return None
    for k in ("params", "error_summary"):
        if isinstance(r.get(k), str):
            with contextlib.suppress(ValueError):
                r[k] = json.loads(r[k])
    return r


def run_tasks(catalog: Catalog, run_id: str) -> pl.DataFrame:
    """The run's symbol tasks (timeline rows), with duration in seconds."""
    return catalog.query("""
        SELECT symbol, state, started_at, finished_at,
               date_diff('millisecond', started_at, finished_at) / 1000.0 AS duration_s,
               records, requests, retries, error_class, error_message
        FROM tasks WHERE run_id = ? ORDER BY started_at NULLS LAST, symbol""", [run_id])


def failed_symbols(catalog: Catalog, run_id: str) -> list[str]:
    rows = catalog.query(
        "SELECT symbol FROM tasks WHERE run_id = ? AND state = 'failed' ORDER BY symbol",
        [run_id])
    return rows["symbol"].to_list()


def run_fetch_summary(catalog: Catalog, run_id: str) -> pl.DataFrame:
    """Per dataset within a run: steps, failures, rows, requests, p50/p95 response time."""
    return catalog.query(f"""
        SELECT dataset, count(*) FILTER ({_STEP_DONE}) AS steps,
               count(*) FILTER (status = 'failed') AS failed,
               count(*) FILTER (status = 'retried') AS retries,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               CAST(coalesce(sum(requests), 0) AS BIGINT) AS requests,
               CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
               quantile_cont(duration_ms, 0.5) FILTER (status IN ('ok', 'failed')) AS p50_ms,
               quantile_cont(duration_ms, 0.95) FILTER (status IN ('ok', 'failed')) AS p95_ms
        FROM fetch_log WHERE run_id = ? GROUP BY dataset ORDER BY dataset""", [run_id])


def run_fetch_log(catalog: Catalog, run_id: str, symbol: str | None = None,
                  errors_only: bool = False, limit: int = 100,
                  offset: int = 0) -> tuple[pl.DataFrame, int]:
    """A page of a run's fetch-log rows (response times and records), and the match count."""
    where, params = ["run_id = ?"], [run_id]
    if symbol:
        where.append("symbol = ?")
        params.append(symbol)
    if errors_only:
        where.append("status IN ('failed', 'retried')")
    w = " AND ".join(where)
    with catalog.connect() as con:
        page = frame(con, f"""
            SELECT symbol, dataset, status, started_at, duration_ms, records, received,
                   rejected, requests, attempt, error_class, error_message,
                   window_start, window_end
            FROM fetch_log WHERE {w}
            ORDER BY started_at, symbol, dataset LIMIT ? OFFSET ?""", [*params, limit, offset])
        total = _count(con, f"SELECT count(*) FROM fetch_log WHERE {w}", params)
    return page, int(total)


# -- metrics ----------------------------------------------------------------------------------
def alltime_stats(catalog: Catalog) -> dict[str, Any]:
    """Counts since the catalog was created."""
    with catalog.connect() as con:
        runs = _one(con, """
            SELECT count(*) AS runs, min(requested_at) AS first_run_at,
                   max(requested_at) AS last_run_at,
                   CAST(coalesce(sum(records_written), 0) AS BIGINT) AS rows_written,
                   median(date_diff('millisecond', started_at, finished_at)) / 1000.0
                       AS median_run_s
            FROM runs""")
        by_state = dict(con.execute(
            "SELECT state, count(*) FROM runs GROUP BY state ORDER BY state").fetchall())
        syms = _one(con, """
            SELECT count(*) AS symbols, count(*) FILTER (active) AS active_symbols
            FROM symbols""")
        tasks = _one(con, "SELECT count(*) AS symbol_tasks FROM tasks")
    out = {**runs, **syms, **tasks, "runs_by_state": by_state}
    for k in ("runs", "rows_written", "symbols", "active_symbols", "symbol_tasks"):
        out[k] = int(out[k] or 0)
    return out


def fetch_by_dataset(catalog: Catalog, since: dt.datetime | None = None) -> pl.DataFrame:
    """Per dataset: steps, success rate, requests, rows, received, rejected, p50/p95 ms."""
    where = "WHERE started_at >= ?" if since else ""
    return catalog.query(f"""
        SELECT dataset, count(*) FILTER ({_STEP_DONE}) AS steps,
               count(*) FILTER ({_STEP_OK}) / nullif(count(*) FILTER ({_STEP_DONE}), 0)
                   AS success_rate,
               count(*) FILTER (status = 'failed') AS failed,
               count(*) FILTER (status = 'retried') AS retries,
               CAST(coalesce(sum(requests), 0) AS BIGINT) AS requests,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               CAST(coalesce(sum(received), 0) AS BIGINT) AS received,
               CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
               quantile_cont(duration_ms, 0.5) FILTER (status IN ('ok', 'failed')) AS p50_ms,
               quantile_cont(duration_ms, 0.95) FILTER (status IN ('ok', 'failed')) AS p95_ms
        FROM fetch_log {where} GROUP BY dataset ORDER BY dataset""",
        [since] if since else [])


def compute_by_dataset(catalog: Catalog, since: dt.datetime | None = None) -> pl.DataFrame:
    where = "WHERE started_at >= ?" if since else ""
    return catalog.query(f"""
        SELECT dataset, count(*) AS steps,
               count(*) FILTER (status = 'ok') / nullif(count(*), 0) AS success_rate,
               count(*) FILTER (status = 'failed') AS failed,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               quantile_cont(duration_ms, 0.5) AS p50_ms,
               quantile_cont(duration_ms, 0.95) AS p95_ms
        FROM compute_log {where} GROUP BY dataset ORDER BY dataset""",
        [since] if since else [])


def errors_by_class(catalog: Catalog, since: dt.datetime | None = None) -> pl.DataFrame:
    """Failed fetch steps and retried attempts per dataset × error class."""
    where = "AND started_at >= ?" if since else ""
    return catalog.query(f"""
        SELECT dataset, coalesce(error_class, 'unknown') AS error_class,
               count(*) FILTER (status = 'failed') AS failures,
               count(*) FILTER (status = 'retried') AS retried
        FROM fetch_log WHERE status IN ('failed', 'retried') {where}
        GROUP BY ALL ORDER BY failures DESC, retried DESC, dataset""",
        [since] if since else [])


def failures_by_class(catalog: Catalog, since: dt.datetime | None = None) -> pl.DataFrame:
    """Failed fetch steps and failed computations per error class (newest first)."""
    where = "AND started_at >= ?" if since else ""
    p = [since, since] if since else []
    return catalog.query(f"""
        SELECT error_class, count(*) AS failures, count(DISTINCT symbol) AS symbols,
               max(started_at) AS last_at, arg_max(error_message, started_at) AS last_message
        FROM (SELECT coalesce(error_class, 'unknown') AS error_class, symbol, started_at,
                     error_message
              FROM fetch_log WHERE status = 'failed' {where}
              UNION ALL
              SELECT coalesce(error_class, 'unknown'), symbol, started_at, error_message
              FROM compute_log WHERE status = 'failed' {where})
        GROUP BY error_class ORDER BY failures DESC""", p)


def fetch_daily(catalog: Catalog, now: dt.datetime, days: int = 30) -> pl.DataFrame:
    """Per UTC day × dataset over the last ``days`` days: steps, failures, requests, rows,
    rejected, p50/p95 ms."""
    return catalog.query(f"""
        SELECT CAST(date_trunc('day', started_at) AS DATE) AS day, dataset,
               count(*) FILTER ({_STEP_DONE}) AS steps,
               count(*) FILTER (status = 'failed') AS failed,
               CAST(coalesce(sum(requests), 0) AS BIGINT) AS requests,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
               quantile_cont(duration_ms, 0.5) FILTER (status IN ('ok', 'failed')) AS p50_ms,
               quantile_cont(duration_ms, 0.95) FILTER (status IN ('ok', 'failed')) AS p95_ms
        FROM fetch_log WHERE started_at >= ?
        GROUP BY ALL ORDER BY day, dataset""", [now - dt.timedelta(days=days)])


def compute_daily(catalog: Catalog, now: dt.datetime, days: int = 30) -> pl.DataFrame:
    return catalog.query("""
        SELECT CAST(date_trunc('day', started_at) AS DATE) AS day, dataset,
               count(*) AS steps, count(*) FILTER (status = 'failed') AS failed,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               quantile_cont(duration_ms, 0.5) AS p50_ms,
               quantile_cont(duration_ms, 0.95) AS p95_ms
        FROM compute_log WHERE started_at >= ?
        GROUP BY ALL ORDER BY day, dataset""", [now - dt.timedelta(days=days)])


def hourly(catalog: Catalog, now: dt.datetime, hours: int = 24) -> pl.DataFrame:
    """Per UTC hour over the last ``hours``: fetch steps, failures, requests, rows, p95 ms."""
    return catalog.query(f"""
        SELECT date_trunc('hour', started_at) AS hour,
               count(*) FILTER ({_STEP_DONE}) AS steps,
               count(*) FILTER (status = 'failed') AS failed,
               CAST(coalesce(sum(requests), 0) AS BIGINT) AS requests,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               quantile_cont(duration_ms, 0.95) FILTER (status IN ('ok', 'failed')) AS p95_ms
        FROM fetch_log WHERE started_at >= ?
        GROUP BY ALL ORDER BY hour""", [now - dt.timedelta(hours=hours)])


def quality(catalog: Catalog) -> pl.DataFrame:
    """Data quality per dataset: rows received, refused by validation, and the share refused."""
    return catalog.query("""
        SELECT dataset, CAST(coalesce(sum(received), 0) AS BIGINT) AS received,
               CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
               CAST(coalesce(sum(rejected), 0) AS BIGINT) / nullif(sum(received) + sum(rejected), 0)
                   AS rejected_share,
               count(*) FILTER (rejected > 0) AS steps_with_rejections,
               count(*) FILTER (error_class = 'validation') AS payloads_refused,
               max(started_at) FILTER (rejected > 0) AS last_rejection_at
        FROM fetch_log GROUP BY dataset ORDER BY dataset""")


def recent_rejections(catalog: Catalog, limit: int = 20) -> pl.DataFrame:
    """The newest fetch steps that refused rows, with the causes noted."""
    return catalog.query("""
        SELECT started_at, symbol, dataset, received, rejected, error_message AS causes
        FROM fetch_log WHERE rejected > 0
        ORDER BY started_at DESC LIMIT ?""", [limit])



def metrics_totals(catalog: Catalog) -> dict[str, Any]:
    """What the Metrics page shows for all time, read on one attach of the catalog (its
    reads scan the same logs, so one attach saves the file's reopening and re-reading):
    ``alltime`` (``alltime_stats``), ``fetch_by_dataset``, ``errors_by_class``,
    ``compute_by_dataset``, ``quality``, ``recent_rejections`` (20), ``quality_by_dataset``,
    ``quality_by_check``."""
    with catalog.connect():
        return {"alltime": alltime_stats(catalog),
                "fetch_by_dataset": fetch_by_dataset(catalog),
                "errors_by_class": errors_by_class(catalog),
                "compute_by_dataset": compute_by_dataset(catalog),
                "quality": quality(catalog),
                "recent_rejections": recent_rejections(catalog, 20),
                "quality_by_dataset": quality_by_dataset(catalog),
                "quality_by_check": quality_by_check(catalog)}


def metrics_window(catalog: Catalog, now: dt.datetime, days: int = 30) -> dict[str, Any]:
    """What the Metrics page shows for recent time, on one attach: ``last_24h``
    (``pipeline_metrics`` since ``now`` - 24 h), ``hourly``, and the last ``days`` days of
    ``fetch_daily``, ``compute_daily`` and ``quality_daily``."""
    with catalog.connect():
        return {"last_24h": pipeline_metrics(catalog, now - dt.timedelta(hours=24)),
                "hourly": hourly(catalog, now),
                "fetch_daily": fetch_daily(catalog, now, days),
                "compute_daily": compute_daily(catalog, now, days),
                "quality_daily": quality_daily(catalog, now, days)}

# -- universe -------------------------------------------------------------------------------------
def universe_table(catalog: Catalog) -> pl.DataFrame:
    """Every symbol of the universe with its newest successful dataset update."""
    return catalog.query("""
        SELECT s.symbol, s.name, s.asset_class, s.active, s.added_at,
               max(st.last_success_at) AS last_success_at
        FROM symbols s LEFT JOIN symbol_status st USING (symbol)
        GROUP BY ALL ORDER BY s.symbol""")


# -- scheduler --------------------------------------------------------------------------------
def scheduler_state(catalog: Catalog) -> dict[str, Any]:
    """The persisted scheduler row: paused flag (who, when, why), heartbeat, next fire."""
    with catalog.connect() as con:
        return _one(con, "SELECT * FROM scheduler_state WHERE id = 1")


# -- one symbol (catalog) -----------------------------------------------------------------------
def symbol_info(catalog: Catalog, symbol: str) -> dict[str, Any] | None:
    """The universe's row of ``symbol``, or of the one held symbol equal to it but for case
    (``?symbol=kimpl`` opens KIMpL); None if there is none."""
    with catalog.connect() as con:
        r = _one(con, "SELECT * FROM symbols WHERE symbol = ?", [symbol])
        if not r.get("symbol"):
            rows = con.execute("SELECT symbol FROM symbols WHERE lower(symbol) = lower(?)",
                               [symbol]).fetchall()
            if len(rows) == 1:
                r = _one(con, "SELECT * FROM symbols WHERE symbol = ?", [rows[0][0]])
    return r if r.get("symbol") else None


def symbol_fetch_stats(catalog: Catalog, symbol: str) -> pl.DataFrame:
    """Per dataset of one symbol: fetch steps, failures, retries, rows refused, last duration."""
    return catalog.query(f"""
        SELECT dataset, count(*) FILTER ({_STEP_DONE}) AS steps,
               count(*) FILTER (status = 'failed') AS failures,
               count(*) FILTER (status = 'retried') AS retries,
               CAST(coalesce(sum(received), 0) AS BIGINT) AS received,
               CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
               arg_max(duration_ms, started_at) FILTER (status IN ('ok', 'failed'))
                   AS last_duration_ms,
               max(started_at) AS last_fetch_at
        FROM fetch_log WHERE symbol = ? GROUP BY dataset ORDER BY dataset""", [symbol])


# -- one symbol (lake) --------------------------------------------------------------------------
def price_history(lake: Lake, symbol: str, timeframe: str = "1d") -> pl.DataFrame:
    """Bars of one symbol with the chart features (MAs, Bollinger, volatility, RSI)."""
    bars = lake.read("bars", [symbol], level=timeframe)
    feats = lake.read("features", [symbol], level=timeframe)
    cols = ["ma20", "ma50", "ma200", "bb_upper", "bb_lower", "volatility_20d", "rsi14"]
    if feats.is_empty():
        return bars.with_columns(pl.lit(None, pl.Float64).alias(c) for c in cols)
    return bars.join(feats.select("ts", *cols), on="ts", how="left").sort("ts")


def corporate_actions(lake: Lake, symbol: str) -> pl.DataFrame:
    """Dividends, splits and earnings of one symbol as one table: date, kind, detail, value.

    ``date`` is the ex date (dividends), execution date (splits) or filing date (earnings,
    the period end when not filed yet); all session dates.
    """
    schema = {"date": pl.Date, "kind": pl.String, "detail": pl.String, "value": pl.Float64}
    parts = [pl.DataFrame(schema=schema)]
    div = lake.read("dividends", [symbol])
    if not div.is_empty():
        parts.append(div.select(
            pl.col("ex_date").alias("date"), pl.lit("dividend").alias("kind"),
            pl.format("{} {} per share, pays {}", pl.col("cash_amount").round(4),
                      pl.col("currency").fill_null(""),
                      pl.col("pay_date").cast(pl.String).fill_null("?")).alias("detail"),
            pl.col("cash_amount").alias("value")))
    spl = lake.read("splits", [symbol])
    if not spl.is_empty():
        parts.append(spl.select(
            pl.col("execution_date").alias("date"), pl.lit("split").alias("kind"),
            pl.format("{}-for-{}", pl.col("split_to").round(4),
                      pl.col("split_from").round(4)).alias("detail"),
            (pl.col("split_to") / pl.col("split_from")).alias("value")))
    ern = lake.read("earnings", [symbol])
    if not ern.is_empty():
        parts.append(ern.select(
            pl.coalesce("filing_date", "period_end").alias("date"),
            pl.lit("earnings").alias("kind"),
            pl.format("FY{} Q{}: EPS {} (diluted), revenue {}", pl.col("fiscal_year"),
                      pl.col("fiscal_quarter"), pl.col("eps_diluted").round(2),
                      pl.col("revenue").round(0)).alias("detail"),
            pl.col("eps_diluted").alias("value")))
    return pl.concat(parts, how="vertical").sort("date", descending=True)


def latest_news(lake: Lake, symbol: str, limit: int = 20) -> pl.DataFrame:
    """The newest articles; ``url`` only when it is an http(s) address (it is shown as a
    link, so never ``javascript:`` or another scheme a provider might send)."""
    news = lake.read("news", [symbol])
    web = pl.col("url").str.to_lowercase().str.contains(r"^https?://[^\s]+$")
    return (news.sort("published_utc", descending=True).head(limit)
            .select("published_utc", "title", "publisher",
                    pl.when(web).then(pl.col("url")).alias("url"), "sentiment",
                    "sentiment_reasoning"))


def _latest_options(lake: Lake, symbol: str) -> pl.DataFrame:
    # Options are month-partitioned: the newest snapshot lives in the newest month file, so
    # read that one instead of a symbol's whole options history.
    files = lake.files("options_iv", [symbol])
    if not files:
        return lake.read("options_iv", [symbol])
    chain = lake.read_file(files[-1])
    return chain.filter(pl.col("as_of") == chain["as_of"].max())


def iv_smile(lake: Lake, symbol: str, expiries: int = 3) -> pl.DataFrame:
    """Implied volatility by strike for the nearest ``expiries`` expirations of the newest
    snapshot, out-of-the-money side only (calls at or above the forward, puts below:
    ``enrich.quant.vol_summary.otm_expr``), with moneyness (strike / underlying)."""
    chain = _latest_options(lake, symbol)
    cols = ["as_of", "expiration", "strike", "contract_type", "iv", "underlying_price"]
    if chain.is_empty():
        return chain.select(cols).with_columns(pl.lit(None, pl.Float64).alias("moneyness"))
    chain = conform(chain, OPTIONS_IV)  # a file written before the inputs were recorded
    near = chain["expiration"].unique().sort().head(expiries)
    return (chain.filter(pl.col("expiration").is_in(near.implode()) & vol_summary.otm_expr()
                         & pl.col("iv").is_not_null())
            .select(*cols, (pl.col("strike") / pl.col("underlying_price")).alias("moneyness"))
            .sort("expiration", "strike"))


def atm_term_structure(lake: Lake, symbol: str) -> pl.DataFrame:
    """At-the-money IV per expiration of the newest snapshot, read at the forward between the
    out-of-the-money strikes around it (``enrich.quant.vol_summary.term_structure``); ``days``
    counts calendar days to expiry."""
    chain = _latest_options(lake, symbol)
    if chain.is_empty():
        return vol_summary.term_structure(OPTIONS_IV.empty())
    return vol_summary.term_structure(conform(chain, OPTIONS_IV))


def options_inputs(lake: Lake, symbol: str) -> dict[str, Any] | None:
    """How the newest snapshot's IVs were found: the session, when the snapshot was taken and
    whether it is partial, the rate's and dividend yield's sources and the model, each as
    ``{value: contracts}``, and how many prices came from quotes, trades or nowhere."""
    chain = _latest_options(lake, symbol)
    if chain.is_empty():
        return None
    chain = conform(chain, OPTIONS_IV)

    def counts(col: str) -> dict[str, int]:
        got = chain.group_by(pl.col(col).fill_null("none")).len().sort("len", descending=True)
        return dict(got.iter_rows())

    return {"as_of": chain["as_of"][0], "snapshot_at": chain["snapshot_at"].max(),
            "partial": bool(chain["partial"].fill_null(False).any()),
            "contracts": chain.height, "with_iv": chain.height - chain["iv"].null_count(),
            "adjusted": int(chain["adjusted"].fill_null(False).sum()),
            "rate_source": counts("rate_source"), "dividend_method": counts("dividend_method"),
            "iv_model": counts("iv_model"), "price_source": counts("price_source")}


def vol_history(lake: Lake, symbol: str) -> pl.DataFrame:
    """Per session: the 30-day ATM implied volatility, 25-delta risk reversal and butterfly,
    put/call ratios (``vol_summary``) beside the realised ``volatility_20d`` (``features``,
    daily bars), on the sessions that have a summary."""
    summary = lake.read("vol_summary", [symbol])
    feats = lake.read("features", [symbol], level="1d")
    out = summary.select("as_of", "atm_iv_30d", "rr25_30d", "bf25_30d", "put_call_volume",
                         "put_call_oi", "partial", "source")
    if summary.is_empty() or feats.is_empty():
        return out.with_columns(pl.lit(None, pl.Float64).alias("volatility_20d"))
    realised = feats.select(pl.col("session").alias("as_of"), "volatility_20d")
    return out.join(realised, on="as_of", how="left").sort("as_of")


# The date each dataset's rows are placed on (session dates; news: its UTC publication day).
DATE_COLUMNS = {"bars": "session", "dividends": "ex_date", "splits": "execution_date",
                "earnings": "period_end", "news": "published_utc", "options_iv": "as_of",
                "features": "session"}


def dataset_rows(lake: Lake, symbol: str, dataset: str, timeframe: str = "1d",
                 start: dt.date | None = None, end: dt.date | None = None) -> pl.DataFrame:
    """The stored rows of one symbol's dataset (for downloads), optionally only those
    dated ``start`` to ``end`` inclusive (``DATE_COLUMNS``)."""
    level = timeframe if dataset in ("bars", "features") else None
    rows = lake.read(dataset, [symbol], level=level)
    if (start is None and end is None) or rows.is_empty():
        return rows
    col = pl.col(DATE_COLUMNS[dataset])
    if rows.schema[DATE_COLUMNS[dataset]] != pl.Date:
        col = col.dt.date()
    if start is not None:
        rows = rows.filter(col >= start)
    if end is not None:
        rows = rows.filter(col <= end)
    return rows


def symbol_lake_quality(lake: Lake, symbol: str, asset_class: str,
                        timeframe: str = "1d") -> pl.DataFrame:
    """Per dataset held in the lake for one symbol: rows, first and last date, and for bars
    the sessions missing between the first and last bar (by the exchange calendar)."""
    date_col = DATE_COLUMNS
    rows = []
    for ds in (*DATASETS_BY_CLASS.get(asset_class, ("bars",)), "features"):
        f = dataset_rows(lake, symbol, ds, timeframe)
        first: Any = None  # dates (the column is a Date, or instants taken to their date)
        last: Any = None
        missing = None
        if not f.is_empty():
            col = f[date_col[ds]]
            if col.dtype != pl.Date:
                col = col.dt.date()
            first, last = col.min(), col.max()
            if ds == "bars" and timeframe == "1d":
                expected = calendars.session_array(calendar_for(asset_class), first, last)
                missing = int(len(expected) - col.n_unique())
        rows.append({"dataset": ds, "rows": f.height, "first": first, "last": last,
                     "missing_sessions": missing})
    return pl.DataFrame(rows, schema={"dataset": pl.String, "rows": pl.Int64,
                                      "first": pl.Date, "last": pl.Date,
                                      "missing_sessions": pl.Int64})


# -- data quality (enrich.checks.quality) -------------------------------------------------------
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
        FROM quality_status GROUP BY symbol ORDER BY symbol""")


def worst_quality(catalog: Catalog, dataset: str | None = None,
                  limit: int = 20) -> pl.DataFrame:
    """The symbols with failing checks, worst quality score first (of ``dataset`` when
    given, else over every dataset): symbol, score, checks, failed, failed_errors, and the
    failing checks as ``dataset/check`` text."""
    w = _weight_sql()
    where, params = ("WHERE dataset = ?", [dataset]) if dataset else ("", [])
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
            FROM quality_status GROUP BY ALL)
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
        FROM quality_status GROUP BY dataset, check_name
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
    old and new value, relative change, the run and when."""
    return catalog.query("""
        SELECT dataset, session, column_name, old_value, new_value, change, run_id,
               detected_at
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
    where, params = "NOT passed", []
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


# -- the plan's limits ------------------------------------------------------------------------
def not_entitled_summary(catalog: Catalog) -> list[dict[str, Any]]:
    """Datasets the plan refused (``enrich.store.plan_limits.not_entitled_table``)."""
    from enrich.store import plan_limits

    return plan_limits.not_entitled_table(catalog)


def plan_limit_rows(catalog: Catalog) -> list[dict[str, Any]]:
    """The plan limits found so far (``enrich.store.plan_limits.table``)."""
    from enrich.store import plan_limits

    return plan_limits.table(catalog)
