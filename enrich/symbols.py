"""Symbols: validation at the boundary, asset classes, and the demo universe."""

from __future__ import annotations

import re
from dataclasses import dataclass

from enrich import conventions
from enrich.errors import InvalidSymbolError

# ASCII letters and digits, optionally one class suffix (BRK.B) or a crypto/fx pair with a
# prefix (X:BTCUSD, C:EURUSD) or an index (I:SPX). Case is the provider's: tickers are
# case-sensitive (KIMpL, a preferred, is not KIMPL). Nothing that can escape a path.
_SYMBOL_RE = re.compile(r"^(?:[XCI]:)?[A-Za-z0-9]{1,12}(?:\.[A-Za-z0-9]{1,4})?$")

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
    """Return ``raw`` without surrounding spaces, in its own case, or raise
    ``InvalidSymbolError`` saying why. Case is kept: the provider's ticker reference decides
    the spelling (``enrich.store.universe`` matches a differently cased name to a held symbol)."""
    if not isinstance(raw, str):
        raise InvalidSymbolError(f"symbol must be text, got {type(raw).__name__}")
    sym = raw.strip()
    if not sym:
        raise InvalidSymbolError("symbol is empty")
    if sym[1:2] == ":":
        sym = sym[0].upper() + sym[1:]  # the class prefix (x:btcusd -> X:btcusd)
    if not sym.isascii() or not _SYMBOL_RE.match(sym):
        raise InvalidSymbolError(
            f"invalid symbol {raw!r}: use 1-12 ASCII letters or digits, optionally a class suffix "
            "like BRK.B or a prefix X: (crypto), C: (fx), I: (index); no spaces, quotes or '/'"
        )
    return sym


def asset_class_of(symbol: str) -> str:
    """A best guess from the symbol's form, used when the universe does not say."""
    return conventions.asset_class_of(symbol)


def calendar_for(asset_class: str) -> str:
    """The class's calendar (``enrich.conventions``): XNYS for US listings and indices, every
    UTC day for crypto, UTC days Sunday to Friday for forex."""
    return conventions.convention(asset_class).calendar


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
    SymbolInfo("X:ETHUSD", "crypto", "Ether / US Dollar"),
    SymbolInfo("C:EURUSD", "fx", "Euro / US Dollar"),
    SymbolInfo("I:SPX", "indices", "S&P 500 Index"),
)
