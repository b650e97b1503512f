"""Massive's raw JSON rows, one at a time: field readers that say what is wrong with a field,
the row parsers of each endpoint (with the schema of the rows they make), and ``_Check``,
which collects the rows that do not fit and refuses the payload if any.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

import numpy as np
import polars as pl

from enrich import calendars, conventions
from enrich.errors import ValidationError
from enrich.identity import TickerChange
from enrich.quant.rates import TENORS
from enrich.schemas import ColumnType

_Row = TypeVar("_Row")  # what a row parser makes of one raw row
MAX_CAUSES = 5  # rejected rows quoted in the error that refuses a payload
_V3_DIVIDEND_TYPES = {"CD": "recurring", "SC": "special", "LT": "irregular", "ST": "irregular"}
_SENTIMENTS = {"positive", "neutral", "negative"}


class _Bad(Exception):
    """One row that does not fit; the message is the cause shown to the user."""


class _Check:
    """Collects rejected rows of one payload; ``done`` refuses the payload if any."""

    def __init__(self, subject: str, total: int):
        self.subject = subject
        self.total = total
        self.rejected = 0
        self.causes: list[str] = []

    def row(self, index: int, raw: Any, parse: Callable[..., _Row | None],
            *args: Any) -> _Row | None:
        try:
            if not isinstance(raw, dict):
                raise _Bad(f"a {type(raw).__name__}, not an object")
            return parse(raw, *args)
        except _Bad as exc:
            self.rejected += 1
            if len(self.causes) < MAX_CAUSES:
                self.causes.append(f"row {index}: {exc}")
            return None

    def done(self) -> None:
        if self.rejected:
            raise ValidationError(
                f"{self.subject}: {self.rejected} of {self.total} rows refused "
                f"({'; '.join(self.causes)})",
                rejected=self.rejected,
                causes=self.causes,
            )


def _num(raw: dict, key: str, *, required: bool = True, minimum: float | None = None):
    value = raw.get(key)
    if value is None:
        if required:
            raise _Bad(f"missing {key!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{key!r} is not a number: {value!r:.40}")
    if not math.isfinite(value):
        raise _Bad(f"{key!r} is not finite")
    if minimum is not None and value < minimum:
        raise _Bad(f"{key!r} is negative: {value!r}")
    return float(value)


def _int(raw: dict, key: str, *, required: bool = True) -> int | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise _Bad(f"missing {key!r}")
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{key!r} is not a whole number: {value!r:.40}")
    return value


def _req_str(raw: dict, key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise _Bad(f"missing {key!r}" if value is None else f"{key!r} is not text")
    return value


def _opt_str(raw: dict, key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and value else None


def _text(raw: dict, key: str) -> str | None:
    """Text the spec lets be absent (None when absent or empty); any other type is refused."""
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise _Bad(f"{key!r} is not text")
    return value or None


@overload
def _date(raw: dict, key: str) -> dt.date: ...


@overload
def _date(raw: dict, key: str, *, required: bool) -> dt.date | None: ...


def _date(raw: dict, key: str, *, required: bool = True) -> dt.date | None:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise _Bad(f"missing {key!r}")
        return None
    if isinstance(value, str):
        for fmt in ("%Y-%m-%d", "%Y%m%d"):
            try:
                return dt.datetime.strptime(value, fmt).date()
            except ValueError:
                continue
    raise _Bad(f"{key!r} is not a date: {value!r:.40}")


def _instant(raw: dict, key: str) -> dt.datetime:
    value = raw.get(key)
    if not isinstance(value, str):
        raise _Bad(f"missing {key!r}" if value is None else f"{key!r} is not text")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Bad(f"{key!r} is not an RFC 3339 time: {value!r:.40}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def _obj(raw: dict, key: str) -> dict:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f"{key!r} is not an object")
    return value


_BAR_ROW_SCHEMA: dict[str, ColumnType] = {
    "t": pl.Int64, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
    "close": pl.Float64, "volume": pl.Float64, "vwap": pl.Float64, "trades": pl.Int64,
}


def _bar_row(raw: dict, volume: bool = True) -> dict:
    """One aggregate. ``volume``: whether the class trades volume (index bars carry only
    ``o h l c t``, reference §7: their volume, VWAP and trade count are null)."""
    t = _int(raw, "t")
    o, h, lo, c = (_num(raw, k, minimum=0) for k in ("o", "h", "l", "c"))
    if h < lo:
        raise _Bad(f"high {h} < low {lo} at t={t}")
    return {
        "t": t, "open": o, "high": h, "low": lo, "close": c,
        "volume": _num(raw, "v", minimum=0) if volume else None,
        "vwap": _num(raw, "vw", required=False, minimum=0) if volume else None,
        "trades": _int(raw, "n", required=False) if volume else None,
    }


def _bar_frame(rows: list[dict], conv: conventions.Convention,
               daily: bool) -> pl.DataFrame:
    """``ts`` is ``t`` (ms) as UTC; ``session`` the date of that instant in the class's zone
    (``enrich.conventions``). A daily bar's ``ts`` becomes the session's midnight in that
    zone, whichever instant the provider stamped (crypto: 00:00 UTC recorded, 04:00 UTC in the
    spec's example; indices: 01:00 New York), so every path lands on one lake key."""
    frame = pl.DataFrame(rows, schema=_BAR_ROW_SCHEMA).with_columns(
        ts=pl.from_epoch("t", time_unit="ms").dt.replace_time_zone("UTC"),
    ).with_columns(
        session=pl.col("ts").dt.convert_time_zone(conv.session_zone).dt.date(),
    )
    if daily:
        frame = frame.with_columns(
            ts=pl.col("session").cast(pl.Datetime("us")).dt.replace_time_zone(conv.session_zone)
            .dt.convert_time_zone("UTC"))
    return frame


def _off_calendar(frame: pl.DataFrame, calendar: str) -> pl.Series | None:
    """Which rows of a forex frame fall on no session (Saturdays: stray quotes after the
    Friday close, in recorded responses); None for the other calendars, whose rows are kept
    for the quality checks to judge."""
    if calendar != "FX" or frame.is_empty():
        return None
    days = frame["session"].to_numpy().astype("datetime64[D]")
    first, last = (cast(dt.date, frame["session"].min()), cast(dt.date, frame["session"].max()))
    held = calendars.session_array(calendar, first, last)
    return pl.Series(~np.isin(days, held))


def _ticker_details(raw: dict) -> dict:
    delisted = raw.get("delisted_utc")
    return {
        "ticker": _req_str(raw, "ticker"),
        "name": _opt_str(raw, "name"),
        "market": _opt_str(raw, "market"),
        "type": _opt_str(raw, "type"),
        "active": raw.get("active") is not False,
        "list_date": _date(raw, "list_date", required=False),
        "delisted": _instant(raw, "delisted_utc").date() if delisted else None,
        "composite_figi": _opt_str(raw, "composite_figi"),
        "share_class_figi": _opt_str(raw, "share_class_figi"),
    }


def _ticker_change(raw: dict) -> TickerChange | None:
    # The spec's schema names the field ``event_type``, its example ``type``: read both.
    kind = raw.get("type", raw.get("event_type"))
    if kind != "ticker_change":
        return None
    return TickerChange(_date(raw, "date"), _req_str(_obj(raw, "ticker_change"), "ticker"))


def _unnamed_change(raw: object) -> bool:
    """A ticker change without its new ticker: the spec requires only the event's type and
    date, so the event is no broken payload, but it names nothing to follow."""
    if not isinstance(raw, dict) or raw.get("type", raw.get("event_type")) != "ticker_change":
        return False
    change = raw.get("ticker_change")
    return change is None or (isinstance(change, dict) and change.get("ticker") is None)


_DIVIDEND_ROW_SCHEMA: dict[str, ColumnType] = {
    "id": pl.String, "ex_date": pl.Date, "declaration_date": pl.Date, "record_date": pl.Date,
    "pay_date": pl.Date, "cash_amount": pl.Float64, "currency": pl.String,
    "frequency": pl.Int32, "distribution_type": pl.String,
}


def _dividend_common(raw: dict) -> dict:
    """Every field but the v1 type may be absent (the spec requires only
    ``distribution_type``): a row without an ex-date or an amount is kept with nulls, for
    validation to refuse it alone (the lake holds cash dividends); a field of the wrong type
    refuses the payload."""
    ex_date = _date(raw, "ex_dividend_date", required=False)
    return {
        "id": _opt_str(raw, "id") or f"{raw.get('ticker')}:{ex_date}:{raw.get('cash_amount')}",
        "ex_date": ex_date,
        "declaration_date": _date(raw, "declaration_date", required=False),
        "record_date": _date(raw, "record_date", required=False),
        "pay_date": _date(raw, "pay_date", required=False),
        "cash_amount": _num(raw, "cash_amount", required=False, minimum=0),
        "currency": _opt_str(raw, "currency"),
        "frequency": _int(raw, "frequency", required=False),
    }


def _dividend_row_v1(raw: dict) -> dict:
    return {**_dividend_common(raw), "distribution_type": _opt_str(raw, "distribution_type")}


def _dividend_row_v3(raw: dict) -> dict:
    row = _dividend_common(raw)
    kind = _opt_str(raw, "dividend_type")
    if kind == "CD" and row["frequency"] == 0:
        row["distribution_type"] = "irregular"
    else:
        row["distribution_type"] = _V3_DIVIDEND_TYPES.get(kind or "", "unknown")
    return row


_SPLIT_ROW_SCHEMA: dict[str, ColumnType] = {
    "execution_date": pl.Date, "split_from": pl.Float64, "split_to": pl.Float64,
    "adjustment_type": pl.String,
}


def _split_row(raw: dict) -> dict:
    """v1 requires only ``adjustment_type``: a row without its date or ratio is kept with
    nulls, for validation to refuse it alone; a ratio that is not positive refuses the
    payload."""
    split_from = _num(raw, "split_from", required=False)
    split_to = _num(raw, "split_to", required=False)
    if (split_from is not None and split_from <= 0) or (split_to is not None and split_to <= 0):
        raise _Bad(f"split ratio {split_to}:{split_from} is not positive")
    kind = _opt_str(raw, "adjustment_type")
    if kind is None:  # the v3 endpoint has no type: read it off the ratio
        kind = (
            "unknown" if split_from is None or split_to is None
            else "forward_split" if split_to > split_from
            else "reverse_split" if split_to < split_from
            else "unknown"
        )
    return {"execution_date": _date(raw, "execution_date", required=False),
            "split_from": split_from, "split_to": split_to, "adjustment_type": kind}


_EARNINGS_ROW_SCHEMA: dict[str, ColumnType] = {
    "fiscal_year": pl.Int32, "fiscal_quarter": pl.Int32, "period_end": pl.Date,
    "filing_date": pl.Date, "revenue": pl.Float64, "eps_basic": pl.Float64,
    "eps_diluted": pl.Float64,
}


def _quarter(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 4:
        raise _Bad(f"fiscal quarter {value!r} is not 1..4")
    return value


def _earnings_row_v1(raw: dict) -> dict:
    """No field is required by the spec: a row without its fiscal year or quarter (the lake's
    key) is kept with nulls, for validation to refuse it alone."""
    return {
        "fiscal_year": _int(raw, "fiscal_year", required=False),
        "fiscal_quarter": _quarter(_int(raw, "fiscal_quarter", required=False)),
        "period_end": _date(raw, "period_end", required=False),
        "filing_date": _date(raw, "filing_date", required=False),
        "revenue": _num(raw, "revenue", required=False),
        "eps_basic": _num(raw, "basic_earnings_per_share", required=False),
        "eps_diluted": _num(raw, "diluted_earnings_per_share", required=False),
    }


def _earnings_row_vx(raw: dict) -> dict | None:
    period = _req_str(raw, "fiscal_period")
    if not re.fullmatch(r"Q[1-4]", period):
        return None  # FY / H1 rows are not quarters: not an error, just not ours
    year = raw.get("fiscal_year")  # optional in the spec: absent, validation refuses the row
    if isinstance(year, str) and year.strip().isdigit():
        year = int(year.strip())
    if year is not None and (isinstance(year, bool) or not isinstance(year, int)):
        raise _Bad(f"'fiscal_year' is not a year: {year!r:.40}")
    income = _obj(_obj(raw, "financials"), "income_statement")

    def value(concept: str) -> float | None:
        return _num(_obj(income, concept), "value", required=False)

    return {
        "fiscal_year": year,
        "fiscal_quarter": int(period[1]),
        "period_end": _date(raw, "end_date", required=False),
        "filing_date": _date(raw, "filing_date", required=False),
        "revenue": value("revenues"),
        "eps_basic": value("basic_earnings_per_share"),
        "eps_diluted": value("diluted_earnings_per_share"),
    }


_NEWS_ROW_SCHEMA: dict[str, ColumnType] = {
    "id": pl.String, "published_utc": pl.Datetime("us", "UTC"), "title": pl.String,
    "publisher": pl.String, "url": pl.String, "sentiment": pl.String,
    "sentiment_reasoning": pl.String,
}


def _news_row(raw: dict, symbol: str) -> dict:
    insights = raw.get("insights") or []
    if not isinstance(insights, list):
        raise _Bad("'insights' is not a list")
    mine = next(
        (i for i in insights if isinstance(i, dict) and i.get("ticker") == symbol), {}
    )
    sentiment = mine.get("sentiment")
    return {
        "id": _req_str(raw, "id"),
        "published_utc": _instant(raw, "published_utc"),
        "title": _opt_str(raw, "title"),
        "publisher": _opt_str(_obj(raw, "publisher"), "name"),
        "url": _opt_str(raw, "article_url"),
        "sentiment": sentiment if sentiment in _SENTIMENTS else None,
        "sentiment_reasoning": _opt_str(mine, "sentiment_reasoning"),
    }


_CHAIN_ROW_SCHEMA: dict[str, ColumnType] = {
    "contract": pl.String, "expiration": pl.Date, "strike": pl.Float64,
    "contract_type": pl.String, "shares_per_contract": pl.Float64, "exercise_style": pl.String,
    "underlying_price": pl.Float64, "open_interest": pl.Int64, "bid": pl.Float64,
    "ask": pl.Float64, "quote_at": pl.Datetime("us", "UTC"), "trade_price": pl.Float64,
    "trade_at": pl.Datetime("us", "UTC"), "volume": pl.Float64, "provider_iv": pl.Float64,
}


# The terms a contract needs to be priced or chosen (the contracts listing requires none of
# them, the snapshot repeats the listing's record): a row without one is kept with nulls.
CONTRACT_TERMS = {"contract": "ticker", "expiration": "expiration_date", "strike": "strike_price",
                  "contract_type": "contract_type"}


def _contract_fields(details: dict, ticker_key: str) -> dict | None:
    """A contract's terms. One without its ticker, type, expiration or strike is kept with
    nulls, for validation to refuse it alone (``frames._apart``); a field of the wrong type
    refuses the payload."""
    kind = _text(details, "contract_type")
    if kind is not None and kind not in ("call", "put"):
        return None  # "other" (non-standard deliverables) has no place in a call/put smile
    strike = _num(details, "strike_price", required=False)
    if strike is not None and strike <= 0:
        raise _Bad(f"strike {strike} is not positive")
    shares = _num(details, "shares_per_contract", required=False)
    if shares is not None and shares <= 0:
        raise _Bad(f"shares_per_contract {shares} is not positive")
    return {
        "contract": _text(details, ticker_key),
        "expiration": _date(details, "expiration_date", required=False),
        "strike": strike,
        "contract_type": kind,
        "shares_per_contract": shares,
        "exercise_style": _opt_str(details, "exercise_style"),
    }


def _ns(raw: dict, key: str) -> dt.datetime | None:
    """A nanosecond Unix timestamp (snapshot ``last_updated``, ``sip_timestamp``) as UTC."""
    value = _int(raw, key, required=False)
    if value is None or value <= 0:
        return None
    return dt.datetime.fromtimestamp(value // 1000 / 1e6, dt.UTC)


def _chain_row(raw: dict) -> dict | None:
    details = _obj(raw, "details")
    fields = _contract_fields(details, "ticker")
    if fields is None:
        return None
    day = _obj(raw, "day")
    quote = _obj(raw, "last_quote")  # only on plans with quotes
    trade = _obj(raw, "last_trade")  # only on plans with trades
    underlying = _obj(raw, "underlying_asset")
    und_price = _num(underlying, "price", required=False, minimum=0)
    if und_price is None:  # index underlyings carry "value" instead of "price"
        und_price = _num(underlying, "value", required=False, minimum=0)
    # A number in the spec (``format: double``); the lake counts whole contracts.
    open_interest = _num(raw, "open_interest", required=False, minimum=0)
    trade_price = _num(trade, "price", required=False, minimum=0)
    trade_at = _ns(trade, "sip_timestamp")
    if not trade_price:  # no trades on this plan: the day's close is the last trade
        trade_price = _num(day, "close", required=False, minimum=0) or None
        trade_at = _ns(day, "last_updated") if trade_price else None
    return {
        **fields,
        "underlying_price": und_price,
        "open_interest": None if open_interest is None else round(open_interest),
        "bid": _num(quote, "bid", required=False, minimum=0),
        "ask": _num(quote, "ask", required=False, minimum=0),
        "quote_at": _ns(quote, "last_updated"),
        "trade_price": trade_price,
        "trade_at": trade_at,
        "volume": _num(day, "volume", required=False, minimum=0),
        "provider_iv": _num(raw, "implied_volatility", required=False, minimum=0),
    }


_CONTRACT_ROW_SCHEMA: dict[str, ColumnType] = {
    "contract": pl.String, "expiration": pl.Date, "strike": pl.Float64,
    "contract_type": pl.String, "shares_per_contract": pl.Float64, "exercise_style": pl.String,
    "deliverables": pl.String,
}


def _contract_row(raw: dict) -> dict | None:
    fields = _contract_fields(raw, "ticker")
    if fields is None:
        return None
    extra = raw.get("additional_underlyings")
    if extra is not None and not isinstance(extra, list):
        raise _Bad("'additional_underlyings' is not a list")
    return {**fields, "deliverables": json.dumps(extra, sort_keys=True) if extra else None}


def _treasury_row(raw: dict) -> dict:
    """No field is required by the spec: a row without its date is kept with a null one, for
    validation to refuse it alone."""
    row: dict[str, Any] = {"date": _date(raw, "date", required=False)}
    for col in TENORS:
        row[col] = _num(raw, col, required=False)
    return row
