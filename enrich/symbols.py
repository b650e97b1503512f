"""Symbols: validation at the boundary, asset classes, and the demo universe."""

from __future__ import annotations

import re
from dataclasses import dataclass

from enrich.errors import InvalidSymbolError

# Upper-case letters and digits, optionally one class suffix (BRK.B) or a crypto/fx pair
# with a prefix (X:BTCUSD, C:EURUSD) or an index (I:SPX). Nothing that can escape a path.
_SYMBOL_RE = re.compile(r"^(?:[XCI]:)?[A-Z0-9]{1,12}(?:\.[A-Z0-9]{1,4})?$")

ASSET_CLASSES = ("stocks", "etfs", "crypto", "fx", "indices")

# Which fetched datasets make sense per asset class.
DATASETS_BY_CLASS: dict[str, tuple[str, ...]] = {
    "stocks": ("bars", "dividends", "splits", "earnings", "news", "options_iv"),
    "etfs": ("bars", "dividends", "splits", "news", "options_iv"),
    "crypto": ("bars", "news"),
    "fx": ("bars",),
    "indices": ("bars",),
}


def validate_symbol(raw: str) -> str:
    """Return the canonical form of ``raw`` or raise ``InvalidSymbolError`` saying why."""
    if not isinstance(raw, str):
        raise InvalidSymbolError(f"symbol must be text, got {type(raw).__name__}")
    sym = raw.strip()
    if not sym:
        raise InvalidSymbolError("symbol is empty")
    # ASCII before upper-casing: 'ß'.upper() is 'SS', and other letters fold the same way.
    sym = sym.upper() if sym.isascii() else sym
    if not sym.isascii() or not _SYMBOL_RE.match(sym):
        raise InvalidSymbolError(
            f"invalid symbol {raw!r}: use 1-12 ASCII letters or digits, optionally a class suffix "
            "like BRK.B or a prefix X: (crypto), C: (fx), I: (index); no spaces, quotes or '/'"
        )
    return sym


def asset_class_of(symbol: str) -> str:
    """A best guess from the symbol's form, used when the universe does not say."""
    if symbol.startswith("X:"):
        return "crypto"
    if symbol.startswith("C:"):
        return "fx"
    if symbol.startswith("I:"):
        return "indices"
    return "stocks"


def calendar_for(asset_class: str) -> str:
    """Exchange calendar name: every day for crypto, XNYS for US listings."""
    return "24/7" if asset_class == "crypto" else "XNYS"


@dataclass(frozen=True)
class SymbolInfo:
    symbol: str
    asset_class: str
    name: str


DEMO_UNIVERSE: tuple[SymbolInfo, ...] = (
    SymbolInfo("AAPL", "stocks", "Apple Inc."),
    SymbolInfo("MSFT", "stocks", "Microsoft Corp."),
    SymbolInfo("GOOGL", "stocks", "Alphabet Inc. Class A"),
    SymbolInfo("AMZN", "stocks", "Amazon.com Inc."),
    SymbolInfo("NVDA", "stocks", "NVIDIA Corp."),
    SymbolInfo("META", "stocks", "Meta Platforms Inc."),
    SymbolInfo("TSLA", "stocks", "Tesla Inc."),
    SymbolInfo("JPM", "stocks", "JPMorgan Chase & Co."),
    SymbolInfo("V", "stocks", "Visa Inc."),
    SymbolInfo("JNJ", "stocks", "Johnson & Johnson"),
    SymbolInfo("WMT", "stocks", "Walmart Inc."),
    SymbolInfo("PG", "stocks", "Procter & Gamble Co."),
    SymbolInfo("XOM", "stocks", "Exxon Mobil Corp."),
    SymbolInfo("KO", "stocks", "Coca-Cola Co."),
    SymbolInfo("DIS", "stocks", "Walt Disney Co."),
    SymbolInfo("NFLX", "stocks", "Netflix Inc."),
    SymbolInfo("INTC", "stocks", "Intel Corp."),
    SymbolInfo("BRK.B", "stocks", "Berkshire Hathaway Inc. Class B"),
    SymbolInfo("SPY", "etfs", "SPDR S&P 500 ETF Trust"),
    SymbolInfo("QQQ", "etfs", "Invesco QQQ Trust"),
    SymbolInfo("IWM", "etfs", "iShares Russell 2000 ETF"),
    SymbolInfo("DIA", "etfs", "SPDR Dow Jones Industrial Average ETF"),
    SymbolInfo("GLD", "etfs", "SPDR Gold Shares"),
    SymbolInfo("TLT", "etfs", "iShares 20+ Year Treasury Bond ETF"),
    SymbolInfo("XLE", "etfs", "Energy Select Sector SPDR Fund"),
    SymbolInfo("X:BTCUSD", "crypto", "Bitcoin / US Dollar"),
)
