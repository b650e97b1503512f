from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from enrich.errors import InvalidSymbolError
from enrich.quant.occ import OccContract, format_occ, format_occ_array, parse_occ

D = dt.date

# Real-format symbols: monthlies (third Friday), weeklies, fractional strikes, 1-letter,
# long and digit-carrying (adjusted) roots.
KNOWN = [
    ("O:AAPL250117C00150000", "AAPL", D(2025, 1, 17), "call", 150.0),  # monthly
    ("O:AAPL211119C00085000", "AAPL", D(2021, 11, 19), "call", 85.0),
    ("O:SPY251219C00650000", "SPY", D(2025, 12, 19), "call", 650.0),
    ("O:XYZ240119P00045000", "XYZ", D(2024, 1, 19), "put", 45.0),
    ("O:SPY240103P00472500", "SPY", D(2024, 1, 3), "put", 472.5),  # Wednesday weekly
    ("O:QQQ240105C00405000", "QQQ", D(2024, 1, 5), "call", 405.0),  # Friday weekly
    ("O:SPXW240102C04750000", "SPXW", D(2024, 1, 2), "call", 4750.0),  # index weekly root
    ("O:F250321P00012500", "F", D(2025, 3, 21), "put", 12.5),
    ("O:GOOGL250620C00032500", "GOOGL", D(2025, 6, 20), "call", 32.5),
    ("O:BRKB250117P00480000", "BRKB", D(2025, 1, 17), "put", 480.0),
    ("O:AAPL1250117C00150000", "AAPL1", D(2025, 1, 17), "call", 150.0),  # adjusted root
    ("O:GME1240119C00003500", "GME1", D(2024, 1, 19), "call", 3.5),
    ("O:X240216C00000500", "X", D(2024, 2, 16), "call", 0.5),
    ("O:BKNG260116C05712500", "BKNG", D(2026, 1, 16), "call", 5712.5),
    ("O:TSLA240628P00001005", "TSLA", D(2024, 6, 28), "put", 1.005),
    ("O:NVDA241231C00131250", "NVDA", D(2024, 12, 31), "call", 131.25),
]


@pytest.mark.parametrize("ticker, root, expiry, kind, strike", KNOWN)
def test_known_symbols_round_trip(ticker, root, expiry, kind, strike):
    parsed = parse_occ(ticker)
    assert parsed == OccContract(root, expiry, kind, strike)
    assert format_occ(root, expiry, kind, strike) == ticker
    assert parsed.ticker == ticker
    assert parse_occ(ticker.removeprefix("O:")) == parsed


def test_strike_forms():
    assert format_occ("AAPL", D(2025, 1, 17), "call", 150) == "O:AAPL250117C00150000"
    assert format_occ("AAPL", D(2025, 1, 17), "put", Decimal("32.5")) == "O:AAPL250117P00032500"
    assert format_occ("AAPL", D(2025, 1, 17), "put", 0.001) == "O:AAPL250117P00000001"
    assert format_occ("AAPL", D(2025, 1, 17), "put", 99999.999) == "O:AAPL250117P99999999"


roots = st.from_regex(r"[A-Z][A-Z0-9]{0,5}", fullmatch=True)
expiries = st.dates(D(2000, 1, 1), D(2099, 12, 31))
strikes = st.integers(1, 99_999_999).map(lambda n: n / 1000)


@given(roots, expiries, st.sampled_from(["call", "put"]), strikes)
def test_round_trip_property(root, expiry, kind, strike):
    ticker = format_occ(root, expiry, kind, strike)
    assert len(ticker) == 2 + len(root) + 15
    assert parse_occ(ticker) == OccContract(root, expiry, kind, strike)


@given(roots, st.lists(st.tuples(expiries, st.booleans(), strikes), max_size=30))
def test_array_form_matches_the_scalar_one(root, rows):
    exp = np.array([e for e, _, _ in rows], dtype="datetime64[D]")
    call = np.array([c for _, c, _ in rows], dtype=bool)
    strike = np.array([k for _, _, k in rows], dtype=np.float64)
    got = format_occ_array(root, exp, call, strike)
    assert got.dtype == pl.String
    assert got.to_list() == [format_occ(root, e, "call" if c else "put", k) for e, c, k in rows]


@pytest.mark.parametrize(
    "root, expiry, strike, needle",
    [
        ("AAPL", D(2025, 1, 17), 150.0001, "whole multiple of 0.001"),
        ("AAPL", D(2025, 1, 17), 0.1 + 0.2, "whole multiple of 0.001"),
        ("AAPL", D(2025, 1, 17), 0.0, "out of range"),
        ("AAPL", D(2025, 1, 17), 100_000.0, "out of range"),
        ("AAPL", D(2025, 1, 17), float("nan"), "finite"),
        ("AAPL", D(2100, 1, 15), 150.0, "2000-2099"),
        ("BRK.B", D(2025, 1, 17), 150.0, "upper-case"),
    ],
)
def test_array_form_rejects_like_the_scalar_one(root, expiry, strike, needle):
    exp = np.array([D(2025, 1, 17), expiry], dtype="datetime64[D]")
    with pytest.raises(InvalidSymbolError, match=needle):
        format_occ_array(root, exp, np.array([True, False]), np.array([150.0, strike]))


def test_array_form_wants_day_expirations():
    with pytest.raises(InvalidSymbolError, match="datetime64"):
        format_occ_array("AAPL", np.array(["2025-01-17T10"], dtype="datetime64[h]"),
                         np.array([True]), np.array([150.0]))


@pytest.mark.parametrize(
    "ticker, needle",
    [
        ("", "expected"),
        ("O:AAPL", "expected"),
        ("O:250117C00150000", "expected"),  # no root
        ("O:AAPL250117X00150000", "not C or P"),
        ("O:AAPL251317C00150000", "not a calendar date"),  # month 13
        ("O:AAPL250230C00150000", "not a calendar date"),  # 30 February
        ("O:AAPL25O117C00150000", "not YYMMDD"),
        ("O:AAPL250117C0015000O", "not 8 digits"),
        ("O:AAPL250117C-0150000", "not 8 digits"),
        ("O:AAPL250117C00000000", "strike is zero"),
        ("O:aapl250117C00150000", "upper-case"),
        ("O:TOOLONG250117C00150000", "1-6"),
        ("O:12250117C00150000", "at least one letter"),
        ("O:BRK.B250117C00150000", "root"),
        ("O:AAPL 250117C00150000", "root"),
        ("X:AAPL250117C00150000", "root"),  # wrong prefix is not a root
        ("O:AAPL250117C000150000", "not YYMMDD"),  # 9-digit strike (a docs typo)
    ],
)
def test_parse_rejects(ticker, needle):
    with pytest.raises(ValueError, match=needle) as info:
        parse_occ(ticker)
    assert isinstance(info.value, InvalidSymbolError)


def test_parse_rejects_non_text():
    with pytest.raises(ValueError, match="must be text"):
        parse_occ(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args, needle",
    [
        (("AAPL", D(2025, 1, 17), "call", 150.0001), "whole multiple of 0.001"),
        (("AAPL", D(2025, 1, 17), "call", 0.1 + 0.2), "whole multiple of 0.001"),
        (("AAPL", D(2025, 1, 17), "call", 0.0), "out of range"),
        (("AAPL", D(2025, 1, 17), "call", -5.0), "out of range"),
        (("AAPL", D(2025, 1, 17), "call", 100_000.0), "out of range"),
        (("AAPL", D(2025, 1, 17), "call", float("nan")), "finite"),
        (("AAPL", D(2025, 1, 17), "call", float("inf")), "finite"),
        (("AAPL", D(2025, 1, 17), "call", "150"), "must be a number"),
        (("AAPL", D(2025, 1, 17), "call", True), "must be a number"),
        (("AAPL", D(2025, 1, 17), "C", 150.0), "'call' or 'put'"),
        (("AAPL", dt.datetime(2025, 1, 17), "call", 150.0), "datetime.date"),
        (("AAPL", "2025-01-17", "call", 150.0), "datetime.date"),
        (("AAPL", D(1999, 12, 17), "call", 150.0), "2000-2099"),
        (("aapl", D(2025, 1, 17), "call", 150.0), "upper-case"),
        (("BRK.B", D(2025, 1, 17), "call", 150.0), "upper-case"),
        (("", D(2025, 1, 17), "call", 150.0), "upper-case"),
    ],
)
def test_format_rejects(args, needle):
    with pytest.raises(ValueError, match=needle):
        format_occ(*args)


def test_contract_is_frozen():
    c = parse_occ("O:AAPL250117C00150000")
    with pytest.raises(AttributeError):
        c.strike = 1.0  # type: ignore[misc]
