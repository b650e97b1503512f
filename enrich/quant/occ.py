"""OCC option symbols in Massive's form: ``O:`` + root + ``YYMMDD`` + ``C``/``P`` + strike.

``O:AAPL250117C00150000`` is the AAPL 2025-01-17 150 call: the root is not padded (Massive
drops the OSI spaces), the expiry is two-digit year, month, day (years 2000-2099), and the
strike is the price times 1000 as an 8-digit zero-padded integer (32.5 -> ``00032500``), so
strikes run from 0.001 to 99999.999 in steps of 0.001.

Roots are 1-6 upper-case letters or digits with at least one letter: one letter (``F``),
class shares folded in (``BRKB``), weeklies and index variants (``SPXW``), and roots adjusted
after a corporate action, which carry a digit (``AAPL1``). The functions are strict: anything
else raises ``InvalidSymbolError`` (a ``ValueError``) that says what is wrong.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

import numpy as np
import polars as pl

from enrich.errors import InvalidSymbolError

PREFIX = "O:"
_ROOT_RE = re.compile(r"^(?=[A-Z0-9]*[A-Z])[A-Z0-9]{1,6}$")
_MAX_THOUSANDTHS = 99_999_999
ContractType = Literal["call", "put"]


@dataclass(frozen=True)
class OccContract:
    underlying: str
    expiration: dt.date
    contract_type: ContractType
    strike: float

    @property
    def ticker(self) -> str:
        return format_occ(self.underlying, self.expiration, self.contract_type, self.strike)


def format_occ(
    underlying: str, expiration: dt.date, contract_type: ContractType, strike: float
) -> str:
    """The Massive ticker of one contract, e.g. ``O:AAPL250117C00150000``."""
    root = _check_root(underlying)
    if isinstance(expiration, dt.datetime) or not isinstance(expiration, dt.date):
        raise InvalidSymbolError(
            f"expiration must be a datetime.date, got {type(expiration).__name__}"
        )
    if not 2000 <= expiration.year <= 2099:
        raise InvalidSymbolError(
            f"expiration {expiration.isoformat()} is outside 2000-2099, which YYMMDD cannot hold"
        )
    if contract_type not in ("call", "put"):
        raise InvalidSymbolError(f"contract_type must be 'call' or 'put', got {contract_type!r}")
    thousandths = _strike_thousandths(strike)
    cp = "C" if contract_type == "call" else "P"
    return f"{PREFIX}{root}{expiration:%y%m%d}{cp}{thousandths:08d}"


def format_occ_array(
    underlying: str, expiration: np.ndarray, is_call: np.ndarray, strike: np.ndarray
) -> pl.Series:
    """``format_occ`` for many contracts of one underlying at once (a whole chain), as a
    String Series: the per-contract Python call costs more than the rest of a chain.

    ``expiration`` is datetime64[D], ``is_call`` bool and ``strike`` float, all of one length.
    The digits are written straight into a byte matrix. A row the vectorised checks do not
    accept goes through ``format_occ`` row by row, which raises its usual error.
    """
    root = _check_root(underlying)
    exp = np.asarray(expiration)
    if exp.dtype != np.dtype("datetime64[D]"):
        raise InvalidSymbolError(f"expiration must be datetime64[D], got {exp.dtype}")
    call = np.asarray(is_call, dtype=bool)
    k = np.asarray(strike, dtype=np.float64)
    months = exp.astype("datetime64[M]")
    month_no = months.astype(np.int64)
    year = month_no // 12 + 1970
    yymmdd = ((year % 100) * 10_000 + (month_no % 12 + 1) * 100
              + (exp - months).astype(np.int64) + 1)
    thousandths = np.round(k * 1000)
    # A float is a whole number of thousandths exactly when it is the nearest float to n/1000
    # (strikes are at most 8 digits), which is what _strike_thousandths checks via its repr.
    ok = ((year >= 2000) & (year <= 2099) & (thousandths / 1000 == k)
          & (thousandths > 0) & (thousandths <= _MAX_THOUSANDTHS))
    if not ok.all():
        return pl.Series([format_occ(root, e, "call" if c else "put", float(s))
                          for e, c, s in zip(exp.tolist(), call, k, strict=True)],
                         dtype=pl.String)
    head = np.frombuffer(f"{PREFIX}{root}".encode(), dtype=np.uint8)
    width = len(head) + 15
    out = np.empty((len(k), width), dtype=np.uint8)
    out[:, :len(head)] = head
    tens = 10 ** np.arange(7, -1, -1)
    out[:, len(head):len(head) + 6] = yymmdd[:, None] // tens[2:] % 10 + ord("0")
    out[:, len(head) + 6] = np.where(call, ord("C"), ord("P"))
    out[:, len(head) + 7:] = thousandths.astype(np.int64)[:, None] // tens % 10 + ord("0")
    return pl.Series(out.view(f"S{width}").ravel()).cast(pl.String)


def parse_occ(ticker: str) -> OccContract:
    """Split a ticker, with or without the ``O:`` prefix, into its contract terms."""
    if not isinstance(ticker, str):
        raise InvalidSymbolError(f"option ticker must be text, got {type(ticker).__name__}")
    body = ticker[len(PREFIX):] if ticker.startswith(PREFIX) else ticker
    # Root, then a fixed 15-character tail: YYMMDD (6) + C/P (1) + strike (8).
    if len(body) < 16:
        raise InvalidSymbolError(
            f"invalid option ticker {ticker!r}: expected [O:]ROOT+YYMMDD+C|P+8-digit strike, "
            "e.g. O:AAPL250117C00150000"
        )
    root, yymmdd, cp, digits = body[:-15], body[-15:-9], body[-9], body[-8:]
    _check_root(root, ticker)
    if not (yymmdd.isascii() and yymmdd.isdigit()):
        raise InvalidSymbolError(f"invalid option ticker {ticker!r}: date {yymmdd!r} is not YYMMDD")
    try:
        expiration = dt.date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:]))
    except ValueError as exc:
        raise InvalidSymbolError(
            f"invalid option ticker {ticker!r}: {yymmdd!r} is not a calendar date ({exc})"
        ) from None
    if cp not in ("C", "P"):
        raise InvalidSymbolError(f"invalid option ticker {ticker!r}: type {cp!r} is not C or P")
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidSymbolError(
            f"invalid option ticker {ticker!r}: strike {digits!r} is not 8 digits"
        )
    thousandths = int(digits)
    if thousandths == 0:
        raise InvalidSymbolError(f"invalid option ticker {ticker!r}: strike is zero")
    return OccContract(root, expiration, "call" if cp == "C" else "put", thousandths / 1000)


def _check_root(root: object, ticker: str | None = None) -> str:
    if not isinstance(root, str):
        raise InvalidSymbolError(f"underlying must be text, got {type(root).__name__}")
    if not _ROOT_RE.match(root):
        where = f"invalid option ticker {ticker!r}: " if ticker is not None else ""
        raise InvalidSymbolError(
            f"{where}underlying root {root!r} must be 1-6 upper-case letters or digits with at "
            "least one letter (e.g. F, GOOGL, BRKB, AAPL1)"
        )
    return root


def _strike_thousandths(strike: float) -> int:
    """Strike x 1000 as an int; refuses strikes that are not whole thousandths."""
    if isinstance(strike, bool) or not isinstance(strike, int | float | Decimal):
        raise InvalidSymbolError(f"strike must be a number, got {type(strike).__name__}")
    if not math.isfinite(strike):
        raise InvalidSymbolError(f"strike must be finite, got {strike!r}")
    # The float's shortest repr is the decimal the caller wrote (32.5, 1.005), so this is exact
    # for any strike typed or parsed from text, and refuses ones carrying arithmetic noise.
    try:
        value = Decimal(repr(strike)) if isinstance(strike, float) else Decimal(strike)
        thousandths = value * 1000
    except InvalidOperation:
        raise InvalidSymbolError(f"strike {strike!r} is not a number") from None
    if thousandths != thousandths.to_integral_value():
        raise InvalidSymbolError(
            f"strike {strike!r} is not representable in OCC form: it must be a whole multiple "
            "of 0.001"
        )
    n = int(thousandths)
    if not 0 < n <= _MAX_THOUSANDTHS:
        raise InvalidSymbolError(
            f"strike {strike!r} is out of range: OCC strikes run from 0.001 to 99999.999"
        )
    return n
