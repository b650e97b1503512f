"""Restatements: stored history that a re-fetch changed.

Before the engine upserts a fetched frame, ``detect`` compares it with the stored rows it is
about to replace (same natural key). Each row gets a content hash (``polars`` row hash of its
value columns); rows whose hashes match are unchanged, the others are compared column by
column with a relative tolerance (``THRESHOLDS.rel_tol``), so float noise is not a change.

Two kinds of change are told apart:

* a **split re-base** — the stored bar was on an older split basis (``adjusted_asof``) and,
  once brought onto the new basis with the splits stored for the symbol, equals the fetched
  bar. Nothing was restated; it is logged like the engine's own re-base (``compute_log``
  status ``rebased``), as a count.
* a **restatement** — a value differs beyond the tolerance (after any re-base). One row per
  session × column goes to ``restatements`` (run, symbol, dataset, session, column, old, new,
  change), old on the new split basis.

A row a complete re-fetch of its window no longer lists (a cancelled or re-dated dividend or
income statement) is removed by the lake (``Lake.replace_window``) and recorded by ``removal``
the same way, its new values null.

Datasets tracked (session is the row's date): bars (session; prices, volume, vwap, trades),
dividends (ex date; cash amount), splits (execution date; ratio), earnings (period end;
revenue, EPS). The upsert writes the new values, so the engine's derive step sees changed
bars and recomputes the features.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import polars as pl

from enrich.checks.quality import THRESHOLDS, Thresholds
from enrich.errors import CorruptFileError
from enrich.schemas import DATASETS
from enrich.store.lake import Lake, in_key_order, tail_overlap

log = logging.getLogger(__name__)

# dataset: (date column reported as the session, compared value columns)
TRACKED: dict[str, tuple[str, tuple[str, ...]]] = {
    "bars": ("session", ("open", "high", "low", "close", "volume", "vwap", "trades")),
    "dividends": ("ex_date", ("cash_amount",)),
    "splits": ("execution_date", ("split_from", "split_to")),
    "earnings": ("period_end", ("revenue", "eps_basic", "eps_diluted")),
}
PRICE_COLUMNS = ("open", "high", "low", "close", "vwap")
MAX_ROWS = 5000  # restatement rows recorded per fetch step (a whole-history revision is capped)


@dataclass
class Diff:
    symbol: str
    dataset: str
    restated: pl.DataFrame  # session, column_name, old_value, new_value, change
    rebased: int = 0  # stored rows that only moved to a newer split basis
    compared: int = 0  # stored rows the fetch overlapped

    @property
    def empty(self) -> bool:
        return self.restated.is_empty() and self.rebased == 0


_RESTATED_SCHEMA = pl.Schema({"session": pl.Date, "column_name": pl.String,
                              "old_value": pl.Float64, "new_value": pl.Float64,
                              "change": pl.Float64})


def _rebase_factor(joined: pl.DataFrame, splits: pl.DataFrame) -> pl.Series:
    """Per joined row: the price factor that brings the stored bar from its ``adjusted_asof``
    to the fetched bar's: the product of split_from/split_to of the splits executed after the
    bar's session in (old asof, new asof] — or its inverse over (new asof, old asof] when the
    fetched bar is on an older basis (a backfill's chunk, adjusted as of its window's end,
    over history the desk holds on today's: it is re-based after, no restatement)."""
    n = joined.height
    if splits.is_empty():
        return pl.Series("factor", [1.0] * n)
    old = pl.col("_old_asof").fill_null(dt.date.min)
    new = pl.col("_new_asof")
    f = (joined.select("_i", "session", "_old_asof", "_new_asof")
         .join(splits.select("execution_date", "split_from", "split_to"), how="cross")
         .filter((pl.col("execution_date") > pl.col("session"))
                 & (pl.col("execution_date") > pl.min_horizontal(old, new))
                 & (pl.col("execution_date") <= pl.max_horizontal(old, new)))
         .group_by("_i").agg((pl.col("split_from") / pl.col("split_to")).product()
                             .alias("factor"), (new < old).first().alias("_older")))
    f = f.with_columns(pl.when(pl.col("_older")).then(1.0 / pl.col("factor"))
                       .otherwise(pl.col("factor")).alias("factor"))
    return (joined.select("_i").join(f.select("_i", "factor"), on="_i", how="left")
            .sort("_i")["factor"].fill_null(1.0))


def _same_values(old: pl.DataFrame, new: pl.DataFrame, cols: tuple[str, ...]) -> bool:
    """Whether rows aligned by key have the same ``cols`` values and types: what the content
    hashes below would call unchanged (nulls equal, NaN equals NaN, -0.0 equals 0.0)."""
    return all(new[c].dtype == old[c].dtype and new[c].equals(old[c]) for c in cols)


def detect(lake: Lake, dataset: str, incoming: pl.DataFrame, timeframe: str = "1d",
           th: Thresholds = THRESHOLDS) -> Diff | None:
    """Compare one symbol's fetched rows with the stored rows they overlap; None when the
    dataset is not tracked or nothing stored overlaps (a first fetch costs a directory look).

    Never raises — detection must not fail the fetch it watches (a failure is logged) — but
    for ``CorruptFileError``: the stored file was unreadable and has been quarantined, and the
    fetch must fail so that the next run fetches the whole history again."""
    if dataset not in TRACKED or incoming.is_empty():
        return None
    try:
        return _detect(lake, dataset, incoming, timeframe, th)
    except CorruptFileError:
        raise  # the stored file was quarantined: this fetch must not stand in for its history
    except Exception:
        log.exception("restatement detection failed for %s %s", dataset,
                      incoming["symbol"][0])
        return None


def _detect(lake: Lake, dataset: str, incoming: pl.DataFrame, timeframe: str,
            th: Thresholds) -> Diff | None:
    symbol = incoming["symbol"][0]
    level = timeframe if dataset == "bars" else None
    if not lake.files(dataset, [symbol], level=level):
        return None
    ds = DATASETS[dataset]
    key = [k for k in ds.key if k != "symbol"]
    date_col, cols = TRACKED[dataset]
    stored = lake.read(dataset, [symbol], level=level)
    if in_key_order(incoming, list(ds.key)):
        # A daily refresh: new rows after the stored ones, re-asked ones as stored. Found
        # without the join: nothing overlaps, or what overlaps has the same values.
        m = tail_overlap(stored, incoming, list(ds.key))
        if m == 0:
            return None
        if m and _same_values(stored.slice(stored.height - m), incoming.head(m), cols):
            return Diff(symbol, dataset, pl.DataFrame(schema=_RESTATED_SCHEMA), 0, m)
    extra = ["adjusted_asof"] if dataset == "bars" else []
    new = incoming.select(*dict.fromkeys([*key, date_col, *cols, *extra]))
    old = stored.select(*key, *[c for c in (date_col, *cols, *extra) if c not in key])
    joined = new.join(old, on=key, how="inner", suffix="_old")
    if joined.is_empty():
        return None
    # Content hashes: rows that hash alike are the same; only the others are compared.
    hash_new = pl.struct([pl.col(c) for c in cols]).hash(seed=7)
    hash_old = pl.struct([pl.col(f"{c}_old").alias(c) for c in cols]).hash(seed=7)
    compared = joined.height
    joined = joined.filter(hash_new != hash_old)
    if joined.is_empty():
        return Diff(symbol, dataset, pl.DataFrame(schema=_RESTATED_SCHEMA), 0, compared)
    joined = joined.with_row_index("_i")
    if dataset == "bars":
        joined = joined.with_columns(pl.col("adjusted_asof_old").alias("_old_asof"),
                                     pl.col("adjusted_asof").alias("_new_asof"))
        basis_moved = (pl.col("_new_asof").is_not_null()
                       & (pl.col("_old_asof").is_null()
                          | (pl.col("_new_asof") != pl.col("_old_asof"))))
        factor = _rebase_factor(joined, lake.read("splits", [symbol]))
        joined = joined.with_columns(factor.alias("_f"), basis_moved.alias("_moved"))
        joined = joined.with_columns(
            *[(pl.col(f"{c}_old") * pl.col("_f")).alias(f"{c}_old") for c in PRICE_COLUMNS],
            (pl.col("volume_old") / pl.col("_f")).alias("volume_old"))
    else:
        joined = joined.with_columns(pl.lit(False).alias("_moved"))
    diffs = []
    for c in cols:
        o = pl.col(f"{c}_old").cast(pl.Float64)
        n = pl.col(c).cast(pl.Float64)
        tol = th.rel_tol * pl.max_horizontal(o.abs(), n.abs()) + 1e-12
        changed = ((o.is_null() != n.is_null())
                   | ((n - o).abs() > tol).fill_null(False))
        diffs.append(changed.alias(f"_d_{c}"))
    joined = joined.with_columns(diffs)
    any_diff = pl.any_horizontal(*(pl.col(f"_d_{c}") for c in cols))
    rebased = joined.filter(pl.col("_moved") & ~any_diff).height
    parts = [
        joined.filter(pl.col(f"_d_{c}")).select(
            pl.col(date_col).alias("session"), pl.lit(c).alias("column_name"),
            pl.col(f"{c}_old").cast(pl.Float64).alias("old_value"),
            pl.col(c).cast(pl.Float64).alias("new_value"))
        for c in cols
    ]
    restated = (pl.concat(parts, how="vertical")
                .with_columns(pl.when(pl.col("old_value") != 0)
                              .then(pl.col("new_value") / pl.col("old_value") - 1)
                              .alias("change"))
                .sort("session", "column_name"))
    return Diff(symbol, dataset, restated.cast(_RESTATED_SCHEMA), rebased, compared)


def removal(dataset: str, removed: pl.DataFrame) -> Diff | None:
    """Stored rows a complete re-fetch no longer lists (a cancelled or re-dated event,
    ``Lake.replace_window``) as a diff: one row per row × compared column, the new value null
    (the session is the row's date; a row without one is dated by its window's column)."""
    if dataset not in TRACKED or removed.is_empty():
        return None
    date_col, cols = TRACKED[dataset]
    window_col = {"earnings": "filing_date"}.get(dataset, date_col)
    session = pl.coalesce(date_col, window_col).alias("session")
    restated = pl.concat([
        removed.filter(session.is_not_null()).select(
            session, pl.lit(c).alias("column_name"),
            pl.col(c).cast(pl.Float64).alias("old_value"),
            pl.lit(None, pl.Float64).alias("new_value"), pl.lit(None, pl.Float64).alias("change"))
        for c in cols], how="vertical").sort("session", "column_name")
    return Diff(removed["symbol"][0], dataset, restated.cast(_RESTATED_SCHEMA), 0,
                removed.height)


def record(log_buffer: Any, run_id: str | None, diff: Diff | None,
           timeframe: str = "1d") -> None:
    """Add a diff to the engine's ``LogBuffer``: restatement rows, and one ``compute_log``
    row (status ``rebased``) counting the bars that only changed split basis. Call it with
    the step's ``Durable`` before the lake write the diff describes: the rows are journaled
    first, so a crash between that write and the catalog's flush does not lose them."""
    if diff is None or diff.empty:
        return
    at = dt.datetime.now(dt.UTC)
    rows = diff.restated.head(MAX_ROWS).to_dicts()

    def add(b) -> None:
        for r in rows:
            b.insert("restatements", {"run_id": run_id, "symbol": diff.symbol,
                                      "dataset": diff.dataset, "detected_at": at, **r})
        if diff.rebased:
            b.insert("compute_log", {
                "run_id": run_id, "symbol": diff.symbol, "dataset": diff.dataset,
                "timeframe": timeframe if diff.dataset == "bars" else None,
                "started_at": at, "duration_ms": 0.0, "records": diff.rebased,
                "status": "rebased",
                "error_message": "re-fetched bars on a newer split basis"})

    log_buffer.add_durable(add)
