"""One symbol: what the catalog knows of it, and its data from the lake."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

import polars as pl

from enrich import calendars, conventions
from enrich.quant import vol_summary
from enrich.schemas import OPTIONS_IV, conform
from enrich.store.catalog import Catalog
from enrich.store.lake import Lake
from enrich.symbols import DATASETS_BY_CLASS, calendar_for
from enrich.views.common import _one
from enrich.views.runs import _STEP_DONE


def symbol_info(catalog: Catalog, symbol: str) -> dict[str, Any] | None:
    """The universe's row of ``symbol``, or of the one held symbol equal to it but for case
    (``?symbol=kimpl`` opens KIMpL); None if there is none."""
    with catalog.connect() as con:
        r = _one(con, "SELECT * FROM symbols WHERE symbol = ?", [symbol])
        if not r.get("symbol"):
            rows = con.execute("SELECT symbol FROM symbols WHERE lower(symbol) = lower(?)",
                               [symbol]).fetchall()
            if len(rows) == 1:
                r = _one(con, "SELECT * FROM symbols WHERE symbol = ?", [rows[0][0]])
    return r if r.get("symbol") else None


def symbol_fetch_stats(catalog: Catalog, symbol: str) -> pl.DataFrame:
    """Per dataset of one symbol: fetch steps, failures, retries, rows refused, last duration."""
    return catalog.query(f"""
        SELECT dataset, count(*) FILTER ({_STEP_DONE}) AS steps,
               count(*) FILTER (status = 'failed') AS failures,
               count(*) FILTER (status = 'retried') AS retries,
               CAST(coalesce(sum(received), 0) AS BIGINT) AS received,
               CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
               arg_max(duration_ms, started_at) FILTER (status IN ('ok', 'failed'))
                   AS last_duration_ms,
               max(started_at) AS last_fetch_at
        FROM fetch_log WHERE symbol = ? GROUP BY dataset ORDER BY dataset""", [symbol])


def price_history(lake: Lake, symbol: str, timeframe: str = "1d") -> pl.DataFrame:
    """Bars of one symbol with the chart features (MAs, Bollinger, volatility, RSI)."""
    bars = lake.read("bars", [symbol], level=timeframe)
    feats = lake.read("features", [symbol], level=timeframe)
    cols = ["ma20", "ma50", "ma200", "bb_upper", "bb_lower", "volatility_20d", "rsi14"]
    if feats.is_empty():
        return bars.with_columns(pl.lit(None, pl.Float64).alias(c) for c in cols)
    return bars.join(feats.select("ts", *cols), on="ts", how="left").sort("ts")


def corporate_actions(lake: Lake, symbol: str) -> pl.DataFrame:
    """Dividends, splits and earnings of one symbol as one table: date, kind, detail, value.

    ``date`` is the ex date (dividends), execution date (splits) or filing date (earnings,
    the period end when not filed yet); all session dates.
    """
    schema = {"date": pl.Date, "kind": pl.String, "detail": pl.String, "value": pl.Float64}
    parts = [pl.DataFrame(schema=schema)]
    div = lake.read("dividends", [symbol])
    if not div.is_empty():
        parts.append(div.select(
            pl.col("ex_date").alias("date"), pl.lit("dividend").alias("kind"),
            pl.format("{} {} per share, pays {}", pl.col("cash_amount").round(4),
                      pl.col("currency").fill_null(""),
                      pl.col("pay_date").cast(pl.String).fill_null("?")).alias("detail"),
            pl.col("cash_amount").alias("value")))
    spl = lake.read("splits", [symbol])
    if not spl.is_empty():
        parts.append(spl.select(
            pl.col("execution_date").alias("date"), pl.lit("split").alias("kind"),
            pl.format("{}-for-{}", pl.col("split_to").round(4),
                      pl.col("split_from").round(4)).alias("detail"),
            (pl.col("split_to") / pl.col("split_from")).alias("value")))
    ern = lake.read("earnings", [symbol])
    if not ern.is_empty():
        parts.append(ern.select(
            pl.coalesce("filing_date", "period_end").alias("date"),
            pl.lit("earnings").alias("kind"),
            pl.format("FY{} Q{}: EPS {} (diluted), revenue {}", pl.col("fiscal_year"),
                      pl.col("fiscal_quarter"), pl.col("eps_diluted").round(2),
                      pl.col("revenue").round(0)).alias("detail"),
            pl.col("eps_diluted").alias("value")))
    return pl.concat(parts, how="vertical").sort("date", descending=True)


def latest_news(lake: Lake, symbol: str, limit: int = 20) -> pl.DataFrame:
    """The newest articles; ``url`` only when it is an http(s) address (it is shown as a
    link, so never ``javascript:`` or another scheme a provider might send)."""
    news = lake.read("news", [symbol])
    web = pl.col("url").str.to_lowercase().str.contains(r"^https?://[^\s]+$")
    return (news.sort("published_utc", descending=True).head(limit)
            .select("published_utc", "title", "publisher",
                    pl.when(web).then(pl.col("url")).alias("url"), "sentiment",
                    "sentiment_reasoning"))


def _latest_options(lake: Lake, symbol: str) -> pl.DataFrame:
    # Options are month-partitioned: the newest snapshot lives in the newest month file, so
    # read that one instead of a symbol's whole options history.
    files = lake.files("options_iv", [symbol])
    if not files:
        return lake.read("options_iv", [symbol])
    chain = lake.read_one("options_iv", files[-1])
    return chain.filter(pl.col("as_of") == chain["as_of"].max())


def iv_smile(lake: Lake, symbol: str, expiries: int = 3) -> pl.DataFrame:
    """Implied volatility by strike for the nearest ``expiries`` expirations of the newest
    snapshot, out-of-the-money side only (calls at or above the forward, puts below:
    ``enrich.quant.vol_summary.otm_expr``), with moneyness (strike / underlying)."""
    chain = _latest_options(lake, symbol)
    cols = ["as_of", "expiration", "strike", "contract_type", "iv", "underlying_price"]
    if chain.is_empty():
        return chain.select(cols).with_columns(pl.lit(None, pl.Float64).alias("moneyness"))
    chain = conform(chain, OPTIONS_IV)  # a file written before the inputs were recorded
    near = chain["expiration"].unique().sort().head(expiries)
    return (chain.filter(pl.col("expiration").is_in(near.implode()) & vol_summary.otm_expr()
                         & pl.col("iv").is_not_null())
            .select(*cols, (pl.col("strike") / pl.col("underlying_price")).alias("moneyness"))
            .sort("expiration", "strike"))


def atm_term_structure(lake: Lake, symbol: str) -> pl.DataFrame:
    """At-the-money IV per expiration of the newest snapshot, read at the forward between the
    out-of-the-money strikes around it (``enrich.quant.vol_summary.term_structure``); ``days``
    counts calendar days to expiry."""
    chain = _latest_options(lake, symbol)
    if chain.is_empty():
        return vol_summary.term_structure(OPTIONS_IV.empty())
    return vol_summary.term_structure(conform(chain, OPTIONS_IV))


def options_inputs(lake: Lake, symbol: str) -> dict[str, Any] | None:
    """How the newest snapshot's IVs were found: the session, when the snapshot was taken and
    whether it is partial, the rate's and dividend yield's sources and the model, each as
    ``{value: contracts}``, and how many prices came from quotes, trades or nowhere."""
    chain = _latest_options(lake, symbol)
    if chain.is_empty():
        return None
    chain = conform(chain, OPTIONS_IV)

    def counts(col: str) -> dict[str, int]:
        got = chain.group_by(pl.col(col).fill_null("none")).len().sort("len", descending=True)
        return dict(got.iter_rows())

    return {"as_of": chain["as_of"][0], "snapshot_at": chain["snapshot_at"].max(),
            "partial": bool(chain["partial"].fill_null(False).any()),
            "contracts": chain.height, "with_iv": chain.height - chain["iv"].null_count(),
            "adjusted": int(chain["adjusted"].fill_null(False).sum()),
            "rate_source": counts("rate_source"), "dividend_method": counts("dividend_method"),
            "iv_model": counts("iv_model"), "price_source": counts("price_source")}


def vol_history(lake: Lake, symbol: str) -> pl.DataFrame:
    """Per session: the 30-day ATM implied volatility, 25-delta risk reversal and butterfly,
    put/call ratios (``vol_summary``) beside the realised ``volatility_20d`` (``features``,
    daily bars), on the sessions that have a summary."""
    summary = lake.read("vol_summary", [symbol])
    feats = lake.read("features", [symbol], level="1d")
    out = summary.select("as_of", "atm_iv_30d", "rr25_30d", "bf25_30d", "put_call_volume",
                         "put_call_oi", "partial", "source")
    if summary.is_empty() or feats.is_empty():
        return out.with_columns(pl.lit(None, pl.Float64).alias("volatility_20d"))
    realised = feats.select(pl.col("session").alias("as_of"), "volatility_20d")
    return out.join(realised, on="as_of", how="left").sort("as_of")


_Instants = TypeVar("_Instants", pl.Expr, pl.Series)
# The date each dataset's rows are placed on: session dates; news, the New York date of its
# publication instant (``news_date``).
DATE_COLUMNS = {"bars": "session", "dividends": "ex_date", "splits": "execution_date",
                "earnings": "period_end", "news": "published_utc", "options_iv": "as_of",
                "features": "session", "vol_summary": "as_of", "rates": "date"}


def news_date(published: _Instants) -> _Instants:
    """The date a news item is placed on: its publication's New York date, as the provider's
    news windows, the coverage watermark and the quality checks count it (not its UTC day:
    an evening article would show a day later here than on the Quality page)."""
    return published.dt.convert_time_zone(conventions.NEW_YORK).dt.date()


def dataset_rows(lake: Lake, symbol: str, dataset: str, timeframe: str = "1d",
                 start: dt.date | None = None, end: dt.date | None = None) -> pl.DataFrame:
    """The stored rows of one symbol's dataset (for downloads), optionally only those
    dated ``start`` to ``end`` inclusive (``DATE_COLUMNS``)."""
    level = timeframe if dataset in ("bars", "features") else None
    rows = lake.read(dataset, [symbol], level=level)
    if (start is None and end is None) or rows.is_empty():
        return rows
    col = pl.col(DATE_COLUMNS[dataset])
    if rows.schema[DATE_COLUMNS[dataset]] != pl.Date:
        col = news_date(col)
    if start is not None:
        rows = rows.filter(col >= start)
    if end is not None:
        rows = rows.filter(col <= end)
    return rows


def symbol_lake_quality(lake: Lake, symbol: str, asset_class: str,
                        timeframe: str = "1d") -> pl.DataFrame:
    """Per dataset held in the lake for one symbol: rows, first and last date, and for bars
    the sessions missing between the first and last bar (by the exchange calendar)."""
    date_col = DATE_COLUMNS
    rows = []
    for ds in (*DATASETS_BY_CLASS.get(asset_class, ("bars",)), "features"):
        f = dataset_rows(lake, symbol, ds, timeframe)
        first: Any = None  # dates (the column is a Date, or instants taken to their date)
        last: Any = None
        missing = None
        if not f.is_empty():
            col = f[date_col[ds]]
            if col.dtype != pl.Date:
                col = news_date(col)
            first, last = col.min(), col.max()
            if ds == "bars" and timeframe == "1d":
                expected = calendars.session_array(calendar_for(asset_class), first, last)
                missing = int(len(expected) - col.n_unique())
        rows.append({"dataset": ds, "rows": f.height, "first": first, "last": last,
                     "missing_sessions": missing})
    return pl.DataFrame(rows, schema={"dataset": pl.String, "rows": pl.Int64,
                                      "first": pl.Date, "last": pl.Date,
                                      "missing_sessions": pl.Int64})
