"""One explicit schema per lake dataset, declared once, with its natural key and partitioning.

Time columns: ``ts`` is the bar's start instant in UTC; ``session`` is the trading date in the
exchange's time zone (a date, never a datetime). Every other datetime is UTC.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from polars.datatypes import DataTypeClass

# A column's type in a schema: a class (``pl.String``) or an instance (``pl.Datetime("us")``).
ColumnType = pl.DataType | DataTypeClass

UTC_TS = pl.Datetime("us", "UTC")

FEATURE_COLUMNS: tuple[str, ...] = (
    "log_return",
    "ma20",
    "ma50",
    "ma200",
    "volatility_20d",
    "ema12",
    "ema26",
    "macd",
    "macd_signal",
    "rsi14",
    "atr14",
    "bb_upper",
    "bb_lower",
    "volume_z20",
    "high_52w_dist",
    "low_52w_dist",
    "tr_close",
)


@dataclass(frozen=True)
class Dataset:
    name: str
    schema: dict[str, ColumnType]
    key: tuple[str, ...]
    # Column used to split a symbol's rows into month files (None: one file per symbol).
    month_column: str | None = None
    # Extra path level taken from a column's value (bars and features: the timeframe).
    level_column: str | None = None
    description: str = ""

    @property
    def columns(self) -> list[str]:
        return list(self.schema)

    def empty(self) -> pl.DataFrame:
        """No rows, this dataset's columns (built once: building one costs ~0.1 ms)."""
        shape = (self.name, tuple(self.schema.items()))
        frame = _EMPTY.get(shape)
        if frame is None:
            frame = _EMPTY[shape] = pl.DataFrame(schema=self.schema)
        return frame.clone()


_EMPTY: dict[tuple, pl.DataFrame] = {}


BARS = Dataset(
    "bars",
    {
        "symbol": pl.String,
        "timeframe": pl.String,  # "1d", "1h", "5m"
        "ts": UTC_TS,  # bar start instant
        "session": pl.Date,  # trading date in the exchange time zone
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.Float64,
        "vwap": pl.Float64,
        "trades": pl.Int64,
        # Splits executed up to this date are reflected in the prices (split-adjusted basis).
        "adjusted_asof": pl.Date,
    },
    key=("symbol", "timeframe", "ts"),
    level_column="timeframe",
    description="OHLCV bars, split-adjusted",
)

DIVIDENDS = Dataset(
    "dividends",
    {
        "symbol": pl.String,
        "ex_date": pl.Date,
        "declaration_date": pl.Date,
        "record_date": pl.Date,
        "pay_date": pl.Date,
        "cash_amount": pl.Float64,
        "currency": pl.String,
        "frequency": pl.Int32,
        "distribution_type": pl.String,
        # Of cash_amount, the regular (recurring) part, where distributions of several kinds
        # share the ex-date and were summed into this one row (the key is symbol, ex_date);
        # null otherwise (distribution_type says what the whole amount is).
        "regular_cash_amount": pl.Float64,
    },
    key=("symbol", "ex_date"),
    description="Cash dividends as declared",
)

SPLITS = Dataset(
    "splits",
    {
        "symbol": pl.String,
        "execution_date": pl.Date,
        "split_from": pl.Float64,
        "split_to": pl.Float64,
        "adjustment_type": pl.String,
    },
    key=("symbol", "execution_date"),
    description="Stock splits; split_to/split_from new shares per old share",
)

EARNINGS = Dataset(
    "earnings",
    {
        "symbol": pl.String,
        "fiscal_year": pl.Int32,
        "fiscal_quarter": pl.Int32,
        "period_end": pl.Date,
        "filing_date": pl.Date,
        "revenue": pl.Float64,
        "eps_basic": pl.Float64,
        "eps_diluted": pl.Float64,
    },
    key=("symbol", "fiscal_year", "fiscal_quarter"),
    description="Quarterly income-statement figures",
)

NEWS = Dataset(
    "news",
    {
        "symbol": pl.String,
        "id": pl.String,
        "published_utc": UTC_TS,
        "title": pl.String,
        "publisher": pl.String,
        "url": pl.String,
        "sentiment": pl.String,  # positive | neutral | negative | null
        "sentiment_reasoning": pl.String,
    },
    key=("symbol", "id"),
    description="News items per ticker with sentiment",
)

OPTIONS_IV = Dataset(
    "options_iv",
    {
        "symbol": pl.String,  # the underlying
        "as_of": pl.Date,  # session the figures belong to
        "contract": pl.String,  # OCC ticker, O:AAPL250117C00150000
        "expiration": pl.Date,
        "strike": pl.Float64,
        "contract_type": pl.String,  # call | put
        "option_price": pl.Float64,  # the price IV is solved from (see price_source)
        "underlying_price": pl.Float64,
        "iv": pl.Float64,  # annualised, 0.25 = 25 %
        # Greeks in market units: vega per vol point, theta per calendar day, rho per rate point.
        "delta": pl.Float64,
        "gamma": pl.Float64,
        "vega": pl.Float64,
        "theta": pl.Float64,
        "rho": pl.Float64,
        "open_interest": pl.Int64,
        # snapshot (a chain snapshot; IV computed here from its quotes) | computed (history:
        # IV from the contract's daily close)
        "source": pl.String,
        "iv_null_reason": pl.String,
        # The quote and the last trade the price was chosen from (enrich.quant.snapshots).
        "bid": pl.Float64,
        "ask": pl.Float64,
        "quote_at": UTC_TS,
        "trade_price": pl.Float64,
        "trade_at": UTC_TS,
        "price_source": pl.String,  # mid | last_trade | close (history) | null: no usable price
        "price_age_s": pl.Float64,  # seconds from the quote or trade to the snapshot
        "volume": pl.Float64,  # contracts traded that session
        # The contract's terms; adjusted contracts (non-standard deliverable) get no IV.
        "shares_per_contract": pl.Float64,
        "exercise_style": pl.String,  # american | european | bermudan
        "deliverables": pl.String,  # JSON of additional_underlyings, null when standard
        "adjusted": pl.Boolean,
        # The inputs IV was solved with, and how each was found.
        "rate": pl.Float64,  # continuous risk-free rate to expiry
        "rate_source": pl.String,  # treasury | fallback (ENRICH_RISK_FREE_RATE)
        "dividend_yield": pl.Float64,  # continuous q
        "dividend_method": pl.String,  # parity | trailing_12m | none
        "iv_model": pl.String,  # american | european
        "provider_iv": pl.Float64,  # the provider's own IV, for comparison (null if none)
        "snapshot_at": UTC_TS,  # the instant the snapshot describes
        "partial": pl.Boolean,  # taken before the session's close: replaced after it
    },
    key=("symbol", "as_of", "contract"),
    month_column="as_of",
    description="Option implied volatility and greeks per contract and session",
)

RATES = Dataset(
    "rates",
    {
        "symbol": pl.String,  # the curve: UST
        "date": pl.Date,  # observation date
        **{f"yield_{t}": pl.Float64 for t in (
            "1_month", "3_month", "6_month", "1_year", "2_year", "3_year", "5_year", "7_year",
            "10_year", "20_year", "30_year")},  # percent, investment basis (enrich.quant.rates)
    },
    key=("symbol", "date"),
    description="US Treasury constant-maturity yields by tenor, percent",
)

VOL_SUMMARY = Dataset(
    "vol_summary",
    {
        "symbol": pl.String,
        "as_of": pl.Date,
        # 30 calendar days, interpolated in total variance (enrich.quant.vol_summary).
        "atm_iv_30d": pl.Float64,
        "rr25_30d": pl.Float64,  # IV(25-delta call) - IV(25-delta put)
        "bf25_30d": pl.Float64,  # (IV(25-delta call) + IV(25-delta put)) / 2 - ATM IV
        "call_volume": pl.Float64,
        "put_volume": pl.Float64,
        "put_call_volume": pl.Float64,
        "call_oi": pl.Int64,
        "put_oi": pl.Int64,
        "put_call_oi": pl.Float64,
        "expirations": pl.Int32,  # expirations with a usable smile
        "contracts": pl.Int32,  # contracts with an IV
        "source": pl.String,  # snapshot | computed, as the contracts'
        "partial": pl.Boolean,  # from a snapshot taken before the session's close
    },
    key=("symbol", "as_of"),
    description="Per session: 30-day ATM IV, 25-delta risk reversal and butterfly, put/call",
)

FEATURES = Dataset(
    "features",
    {
        "symbol": pl.String,
        "timeframe": pl.String,
        "ts": UTC_TS,
        "session": pl.Date,
        **{c: pl.Float64 for c in FEATURE_COLUMNS},
    },
    key=("symbol", "timeframe", "ts"),
    level_column="timeframe",
    description="Features computed from bars (see enrich.quant.features)",
)

DATASETS: dict[str, Dataset] = {
    d.name: d for d in (BARS, DIVIDENDS, SPLITS, EARNINGS, NEWS, OPTIONS_IV, FEATURES, RATES,
                        VOL_SUMMARY)
}

# The datasets a provider serves per symbol, each with a status per symbol × dataset (the
# status grid, the coverage heatmap, quarantine): declared once, here.
SYMBOL_DATASETS: tuple[str, ...] = ("bars", "dividends", "splits", "earnings", "news",
                                    "options_iv")
# Datasets fetched from a provider (features are computed, not fetched).
FETCHED: tuple[str, ...] = (*SYMBOL_DATASETS, "rates")


def conform(frame: pl.DataFrame, dataset: Dataset) -> pl.DataFrame:
    """Select and cast ``frame`` to the dataset's schema; missing nullable columns become null.

    Raises ``KeyError`` naming missing key columns. Casting is strict: a value that does not
    convert raises instead of silently becoming null.
    """
    if frame.schema == dataset.schema:
        return frame
    missing_keys = [k for k in dataset.key if k not in frame.columns]
    if missing_keys:
        raise KeyError(f"{dataset.name}: missing key columns {missing_keys}")
    exprs = []
    for name, dtype in dataset.schema.items():
        if name in frame.columns:
            exprs.append(pl.col(name).cast(dtype, strict=True))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return frame.select(exprs)
