"""Ticker identity: which security a symbol is, from the provider's ticker reference.

A ticker names a security only for a span of time. ``META`` traded as ``FB`` until 2022-06-08
and, before 2022-06-09, the ticker ``META`` belonged to another security (reference
``massive-refresh-and-correctness.md`` §8): aggregates are keyed by the ticker *as traded*,
so ten years of ``META`` bars mix two securities. A provider's reference
(``ticker_reference``) says what the symbol is now (name, type, market, active, listing,
delisting, FIGIs) and the ticker changes of the entity that holds it now; from those,
``Identity`` gives the spans over which each ticker traded for that entity:

- a renamed company (``FB`` → ``META``): the history of the old ticker is fetched, over its own
  span, and stored under the current symbol;
- a recycled ticker (a ticker the entity took over from another security): nothing before the
  entity's first ticker change, or its listing, is ever fetched;
- a delisted security: kept, fetched up to its last trading day, then no longer refreshed.

``symbols add`` reads the reference first and refuses a ticker it does not know; a symbol that
entered the universe another way (the demo universe, a CSV import) has its reference read by
the engine before its first history fetch (``Engine`` identity step). The result is kept on
the symbol's catalog row (``to_row``/``from_row``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The reference's markets and types, as the universe's asset classes.
_CLASS_OF_MARKET = {"crypto": "crypto", "fx": "fx", "indices": "indices"}
_FUND_TYPES = {"ETF", "ETN", "ETV", "ETS", "FUND"}
RECHECK_AFTER = dt.timedelta(days=7)  # an unknown ticker's reference is asked again after


@dataclass(frozen=True)
class TickerChange:
    """The entity traded as ``ticker`` from ``date`` on."""

    date: dt.date
    ticker: str


@dataclass(frozen=True)
class TickerReference:
    """What a provider's reference says about a ticker now."""

    ticker: str  # as the provider spells it (case included)
    name: str | None
    market: str | None  # stocks | otc | crypto | fx | indices
    type: str | None  # CS, ETF, PFD, INDEX, … (Massive's ticker types)
    active: bool
    list_date: dt.date | None = None
    delisted: dt.date | None = None  # the last day it traded
    composite_figi: str | None = None
    share_class_figi: str | None = None
    changes: tuple[TickerChange, ...] = ()  # the holding entity's ticker changes
    source: str = ""  # the provider

    @property
    def asset_class(self) -> str:
        if self.market in _CLASS_OF_MARKET:
            return _CLASS_OF_MARKET[self.market]
        return "etfs" if (self.type or "").upper() in _FUND_TYPES else "stocks"

    def identity(self) -> Identity:
        """The spans over which each ticker traded for the entity that holds it now."""
        changes = sorted(self.changes, key=lambda c: c.date)
        if changes and changes[-1].ticker != self.ticker:
            # The events are the current holder's; its last change must be to this ticker.
            changes.append(TickerChange(changes[-1].date, self.ticker))
        spans: list[Span] = []
        for i, c in enumerate(changes):
            end = changes[i + 1].date - dt.timedelta(days=1) if i + 1 < len(changes) else None
            if end is not None and end < c.date:
                continue  # two changes on one day: the later one holds
            spans.append(Span(c.ticker, c.date, end))
        start = spans[0].start if spans else self.list_date
        if start is not None and self.list_date is not None:
            start = max(start, self.list_date)
        if not spans:
            spans = [Span(self.ticker, start, None)]
        elif spans[0].start is not None and start is not None and spans[0].start < start:
            spans[0] = Span(spans[0].ticker, start, spans[0].end)
        return Identity(self.ticker, start, self.delisted if not self.active else None,
                        tuple(spans))


@dataclass(frozen=True)
class Span:
    """``ticker`` is the symbol's name as traded from ``start`` to ``end`` (inclusive; None:
    open)."""

    ticker: str
    start: dt.date | None
    end: dt.date | None


@dataclass(frozen=True)
class Identity:
    """What history a symbol may have: nothing before ``history_from``, nothing after
    ``delisted`` (its last trading day), each span under the ticker it traded as."""

    symbol: str
    history_from: dt.date | None = None
    delisted: dt.date | None = None
    spans: tuple[Span, ...] = field(default_factory=tuple)

    def clamp(self, start: dt.date, end: dt.date) -> tuple[dt.date, dt.date] | None:
        """[start, end] within the symbol's life; None when nothing of it is."""
        if self.history_from is not None and start < self.history_from:
            start = self.history_from
        if self.delisted is not None and end > self.delisted:
            end = self.delisted
        return (start, end) if start <= end else None

    def pieces(self, start: dt.date, end: dt.date) -> list[tuple[str, dt.date, dt.date]]:
        """(ticker as traded, start, end) covering [start, end] within the symbol's life,
        oldest first."""
        window = self.clamp(start, end)
        if window is None:
            return []
        start, end = window
        if not self.spans:
            return [(self.symbol, start, end)]
        out = []
        for s in self.spans:
            a = start if s.start is None else max(start, s.start)
            z = end if s.end is None else min(end, s.end)
            if a <= z:
                out.append((s.ticker, a, z))
        return out

    @property
    def renamed(self) -> bool:
        return any(s.ticker != self.symbol for s in self.spans)


NO_IDENTITY = Identity("")


def to_row(ref: TickerReference, at: dt.datetime) -> dict[str, Any]:
    """The ``symbols`` columns that keep a reference (catalog migration 9)."""
    ident = ref.identity()
    return {
        "ticker_type": ref.type, "market": ref.market, "composite_figi": ref.composite_figi,
        "share_class_figi": ref.share_class_figi, "listed_since": ref.list_date,
        "delisted_on": ident.delisted, "history_from": ident.history_from,
        "ticker_spans": json.dumps([[s.ticker, _iso(s.start), _iso(s.end)]
                                    for s in ident.spans]),
        "reference_checked_at": at, "reference_source": ref.source, "reference_error": None,
    }


def from_row(symbol: str, row: Mapping[str, Any]) -> Identity | None:
    """The identity kept on a ``symbols`` row; None when its reference was never read."""
    if row.get("reference_checked_at") is None or row.get("reference_error"):
        return None
    raw = row.get("ticker_spans")
    spans = tuple(Span(t, _date(a), _date(z)) for t, a, z in (json.loads(raw) if raw else []))
    return Identity(symbol, _date(row.get("history_from")), _date(row.get("delisted_on")),
                    spans)


def _iso(d: dt.date | None) -> str | None:
    return None if d is None else d.isoformat()


def _date(v: Any) -> dt.date | None:
    if v is None or isinstance(v, dt.date):
        return v
    return dt.date.fromisoformat(str(v))
