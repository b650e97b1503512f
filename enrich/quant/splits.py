"""Split adjustment of bars: bars brought onto the share basis of every split executed after
them, idempotently (``adjusted_asof`` records the basis a bar is on)."""

from __future__ import annotations

import datetime as dt

import polars as pl


def apply_splits(bars: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    """Bring bars onto the basis of every split in ``splits``.

    A bar dated before a split's execution date whose ``adjusted_asof`` is earlier than that
    date is still on the old basis: its prices are multiplied by ``split_from / split_to`` and
    its volume by the inverse, and its ``adjusted_asof`` moves to the execution date. Applying
    the same splits twice changes nothing, so a crash mid-way can never double-adjust.
    """
    if bars.is_empty() or splits.is_empty():
        return bars
    out = bars
    for e, s_from, s_to in splits.sort("execution_date").select(
            "execution_date", "split_from", "split_to").iter_rows():
        if not s_from or not s_to:
            continue
        ratio = s_from / s_to
        mask = (pl.col("session") < e) & (
            pl.col("adjusted_asof").is_null() | (pl.col("adjusted_asof") < e))
        out = out.with_columns(
            [pl.when(mask).then(pl.col(c) * ratio).otherwise(pl.col(c)).alias(c)
             for c in ("open", "high", "low", "close", "vwap")]
            + [pl.when(mask).then(pl.col("volume") / ratio).otherwise(pl.col("volume"))
               .alias("volume"),
               pl.when(mask).then(pl.lit(e)).otherwise(pl.col("adjusted_asof"))
               .alias("adjusted_asof")]
        )
    return out


def unsplit(bars: pl.DataFrame, splits: pl.DataFrame, since: dt.date) -> pl.DataFrame:
    """Take bars back off every split of ``splits`` executed on or after ``since``: a bar is on
    the basis of such a split executed on ``e`` when it is dated before ``e`` and its
    ``adjusted_asof`` is on or after ``e``; its prices are divided by that split's
    ``split_from / split_to`` (its volume multiplied), and a bar taken back off any gets the
    ``adjusted_asof`` of the day before ``since``. ``apply_splits`` then brings it onto the
    splits still stored. Taking back twice changes nothing (the second finds every
    ``adjusted_asof`` before ``since``).
    """
    if bars.is_empty():
        return bars
    hit: pl.Expr = pl.lit(False)
    factor: pl.Expr = pl.lit(1.0)
    for e, s_from, s_to in splits.filter(pl.col("execution_date") >= since).select(
            "execution_date", "split_from", "split_to").iter_rows():
        if s_from and s_to:
            on = (pl.col("session") < e) & (pl.col("adjusted_asof") >= e)
            hit = hit | on.fill_null(False)
            factor = factor * pl.when(on).then(s_to / s_from).otherwise(1.0)
    # ``factor`` is 1.0 wherever nothing was undone: the prices and volume as they were.
    return bars.with_columns(
        [(pl.col(c) * factor).alias(c) for c in ("open", "high", "low", "close", "vwap")]
        + [(pl.col("volume") / factor).alias("volume"),
           pl.when(hit).then(pl.lit(since - dt.timedelta(days=1))).otherwise(
               pl.col("adjusted_asof")).alias("adjusted_asof")]
    )
