"""Massive rows to lake frames, per symbol: the transforms shared by the per-symbol calls and
the universe-wide answers (``MassiveMarketRows``), which split market-wide rows by ticker
before any row is parsed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import polars as pl

from enrich.errors import ValidationError
from enrich.providers.massive.parse import (
    _DIVIDEND_ROW_SCHEMA,
    _EARNINGS_ROW_SCHEMA,
    _NEWS_ROW_SCHEMA,
    _SPLIT_ROW_SCHEMA,
    _Check,
    _news_row,
    _split_row,
)
from enrich.schemas import DIVIDENDS, EARNINGS, NEWS, SPLITS, Dataset, conform


def _apart(frame: pl.DataFrame, needed: tuple[str, ...]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows that have every ``needed`` field (the lake's key and what it must hold), and
    the others. Listings may leave out nearly any field (the spec requires few), so a row
    without one is not a broken payload: it is passed on alone, after the whole ones (never
    merged with one, never hiding one), and validation (``enrich.checks.validate``) refuses it
    with its cause, counted in the fetch log, while the rows beside it are stored."""
    whole = pl.all_horizontal([pl.col(c).is_not_null() for c in needed])
    return frame.filter(whole), frame.filter(~whole)


def _dated(frame: pl.DataFrame, column: str, start: dt.date, end: dt.date) -> pl.DataFrame:
    """Rows dated in [start, end], and those without a date (for validation to refuse)."""
    return frame.filter(pl.col(column).is_null() | pl.col(column).is_between(start, end))


def _dividends_frame(symbol: str, rows: list, parse: Callable[[dict], dict], start: dt.date,
                     end: dt.date, subject: str) -> pl.DataFrame:
    check = _Check(subject, len(rows))
    parsed = [r for i, raw in enumerate(rows) if (r := check.row(i, raw, parse))]
    check.done()
    frame = pl.DataFrame(parsed, schema=_DIVIDEND_ROW_SCHEMA).unique("id", keep="first")
    # A distribution without an amount (paid in shares, or declared only as a ratio) is no
    # cash dividend: it neither adds to nor names a cash dividend of its ex-date.
    frame, unusable = _apart(frame, ("ex_date", "cash_amount"))
    frame = frame.filter(pl.col("ex_date").is_between(start, end))
    # Two distributions on one ex-date (a regular and a special) share the lake key:
    # store their sum, say what was summed, and keep the regular part apart (the dividend
    # yield counts only that: enrich.quant.dividend_yield).
    kind, freq = pl.col("distribution_type"), pl.col("frequency")
    regular = (kind == "recurring") | (kind.is_null() & (freq.is_null() | (freq > 0)))
    recurring = pl.col("cash_amount").filter(regular)
    frame = frame.sort("ex_date", "id").group_by("ex_date", maintain_order=True).agg(
        pl.col("declaration_date", "record_date", "pay_date", "currency", "frequency").first(),
        pl.col("cash_amount").sum(),
        pl.col("distribution_type").drop_nulls().unique(maintain_order=True).str.join("+"),
        regular_cash_amount=pl.when(pl.len() > 1).then(recurring.sum()),
    )
    frame = frame.with_columns(
        symbol=pl.lit(symbol),
        distribution_type=pl.when(pl.col("distribution_type") == "")
        .then(None)
        .otherwise(pl.col("distribution_type")),
    )
    unusable = _dated(unusable, "ex_date", start, end).with_columns(symbol=pl.lit(symbol))
    return pl.concat([conform(frame, DIVIDENDS), conform(unusable, DIVIDENDS)])


def _splits_frame(symbol: str, rows: list, start: dt.date, end: dt.date,
                  subject: str) -> pl.DataFrame:
    check = _Check(subject, len(rows))
    parsed = [r for i, raw in enumerate(rows) if (r := check.row(i, raw, _split_row))]
    check.done()
    frame, unusable = _apart(pl.DataFrame(parsed, schema=_SPLIT_ROW_SCHEMA),
                             ("execution_date", "split_from", "split_to"))
    frame = (
        frame.filter(pl.col("execution_date").is_between(start, end))
        .unique("execution_date", keep="first")
        .sort("execution_date")
        .with_columns(symbol=pl.lit(symbol))
    )
    unusable = _dated(unusable, "execution_date", start, end).with_columns(symbol=pl.lit(symbol))
    return pl.concat([conform(frame, SPLITS), conform(unusable, SPLITS)])


def _earnings_frame(symbol: str, rows: list, parse: Callable[[dict], Any],
                    subject: str) -> pl.DataFrame:
    check = _Check(subject, len(rows))
    parsed = [r for i, raw in enumerate(rows) if (r := check.row(i, raw, parse))]
    check.done()
    frame, unusable = _apart(pl.DataFrame(parsed, schema=_EARNINGS_ROW_SCHEMA),
                             ("fiscal_year", "fiscal_quarter"))
    # A restated quarter appears again with a later filing: keep the latest.
    frame = (
        frame.sort("filing_date", nulls_last=False)
        .unique(["fiscal_year", "fiscal_quarter"], keep="last")
        .sort("fiscal_year", "fiscal_quarter")
        .with_columns(symbol=pl.lit(symbol))
    )
    unusable = unusable.with_columns(symbol=pl.lit(symbol))
    return pl.concat([conform(frame, EARNINGS), conform(unusable, EARNINGS)])


# The news text a server writes: stored and served as given, so never with the key in it.
_NEWS_TEXT = ("title", "publisher", "url", "sentiment_reasoning")


def _news_frame(symbol: str, rows: list, start: dt.date, end: dt.date,
                subject: str, scrub: Callable[[str | None], str | None] = lambda t: t
                ) -> pl.DataFrame:
    check = _Check(subject, len(rows))
    parsed = [r for i, raw in enumerate(rows) if (r := check.row(i, raw, _news_row, symbol))]
    check.done()
    for r in parsed:  # a server echoing the key in an article's fields (any case, a piece)
        for k in _NEWS_TEXT:
            r[k] = scrub(r[k])
    frame = pl.DataFrame(parsed, schema=_NEWS_ROW_SCHEMA)
    frame = (
        frame.filter(
            pl.col("published_utc").dt.convert_time_zone("America/New_York").dt.date()
            .is_between(start, end)
        )
        .unique("id", keep="first")
        .sort("published_utc", "id")
        .with_columns(symbol=pl.lit(symbol))
    )
    return conform(frame, NEWS)


def _by_ticker(rows: list, symbols: frozenset[str], field: str) -> dict[str, list]:
    """Market-wide rows of ``symbols``, per symbol, in order. ``field`` is ``ticker`` (one
    text) or ``tickers`` (a list: a row about several tickers goes to each of them)."""
    out: dict[str, list] = {}
    for raw in rows:
        if not isinstance(raw, dict):
            continue  # not attributable to anyone: nobody's payload is refused for it
        value = raw.get(field)
        tickers = value if isinstance(value, list) else [value]
        for t in tickers:
            if isinstance(t, str) and t in symbols:
                out.setdefault(t, []).append(raw)
    return out


class MassiveMarketRows:
    """A universe-wide answer: each symbol's frame, or the error its rows raised."""

    def __init__(self, dataset: Dataset, frames: dict[str, pl.DataFrame],
                 errors: dict[str, Exception] | None = None):
        self._dataset = dataset
        self._frames = frames
        self._errors = errors or {}
        self.not_yet: tuple[dt.date, ...] = ()  # sessions the plan does not serve yet

    @classmethod
    def of_frame(cls, dataset: Dataset, frame: pl.DataFrame,
                 errors: dict[str, Exception] | None = None) -> MassiveMarketRows:
        parts = frame.partition_by("symbol", as_dict=True) if frame.height else {}
        return cls(dataset, {k[0]: v for k, v in parts.items()}, errors)

    @classmethod
    def build(cls, dataset: Dataset, rows: dict[str, list],
              transform: Callable[[str, list], pl.DataFrame]) -> MassiveMarketRows:
        frames: dict[str, pl.DataFrame] = {}
        errors: dict[str, Exception] = {}
        for sym, rs in rows.items():
            try:
                frames[sym] = transform(sym, rs)
            except ValidationError as exc:
                errors[sym] = exc
        return cls(dataset, frames, errors)

    def for_symbol(self, symbol: str) -> pl.DataFrame:
        if symbol in self._errors:
            raise self._errors[symbol]
        return self._frames.get(symbol, self._dataset.empty())
