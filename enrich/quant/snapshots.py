"""Option chains as a volatility desk needs them: prices, terms, inputs, implied volatility.

A provider's chain snapshot (``Provider.option_chain``) carries, per contract, the last quote
(``bid, ask, quote_at``), the last trade (``trade_price, trade_at``), the session's volume,
open interest, the contract's terms (``shares_per_contract, exercise_style, deliverables``),
the provider's own IV (kept as ``provider_iv``), the underlying's price and the instant the
snapshot describes (``snapshot_at``). :func:`price_chain` turns it into ``options_iv`` rows:

Price (``price_source``). The mid of the last quote when both sides exist, ``0 < bid <= ask``,
the spread is sane (at most ``MAX_SPREAD_REL`` of the mid or ``MAX_SPREAD_ABS``, whichever is
wider) and the quote is from this session; otherwise the last trade if it was made this
session; otherwise no price (IV null, ``no_price``). ``price_age_s`` is the age of the quote
or trade at the snapshot: a last trade can be hours older than the underlying's price.

Adjusted contracts (``adjusted``): a non-standard deliverable after a corporate action: a
number of shares other than 100, other deliverables (cash, other securities), or a root that
is not the underlying's own (``AAPL1``). They are stored, flagged, and left out of IV
(``adjusted_contract``): priced as standard they would show a false smile.

Inputs. ``rate`` is the Treasury curve of the session interpolated to each expiry
(:mod:`enrich.quant.rates`; ``rate_source``); ``dividend_yield`` is implied by put–call parity per
expiry where both sides quote, else the trailing twelve months' regular dividends
(:mod:`enrich.quant.dividend_yield`; ``dividend_method``).

Model (``iv_model``). American exercise (listed US equity options; also when the style is not
given) is solved with :mod:`enrich.quant.american`, European with Black–Scholes–Merton. Every
contract gets an IV; smiles, ATM and 25-delta figures are read from out-of-the-money options
only (calls above the forward, puts below: :mod:`enrich.quant.vol_summary`), where the
early-exercise premium is small and the model's own error is 2e-5 in volatility at most.

Partial. A snapshot taken before its session's close is stored under that session with
``partial = true``; the next snapshot after the close replaces it.

:func:`solve` is the part shared with the history of daily closes
(``enrich.quant.options_history``).
"""

from __future__ import annotations

import datetime as dt
import functools
import math

import numpy as np
import polars as pl

from enrich.quant import dividend_yield, rates
from enrich.quant.american import american_iv_greeks
from enrich.quant.bsm import to_market_units
from enrich.quant.iv import GREEKS, NullReason
from enrich.schemas import OPTIONS_IV, conform

MAX_SPREAD_REL = 0.5
MAX_SPREAD_ABS = 0.10
STANDARD_SHARES = 100.0
MID, LAST_TRADE, CLOSE = "mid", "last_trade", "close"
PARITY_ROUNDS = 8
PARITY_TOL = 1e-6
SNAPSHOT = "snapshot"
_LABELS = np.array([NullReason(c).label for c in range(max(NullReason) + 1)], dtype=object)


METHOD_NOTE = (
    "IV of American options from an American model (Black-Scholes-Merton plus the early-"
    "exercise premium of a Leisen-Reimer tree); smiles, ATM and 25-delta figures from out-of-"
    "the-money options only (calls above the forward, puts below). Prices are quote mids, else "
    "the session's last trade; adjusted contracts get no IV.")


def describe_inputs(inputs: dict) -> str:
    """One plain sentence on how a snapshot's IVs were found (``queries.options_inputs``)."""
    def share(counts: dict[str, int], labels: dict[str, str]) -> str:
        total = sum(counts.values()) or 1
        return ", ".join(f"{labels.get(k, k)} {100 * n / total:.0f}%"
                         for k, n in counts.items())

    return (f"{inputs['with_iv']} of {inputs['contracts']} contracts with an IV. Rate: "
            + share(inputs["rate_source"], {"treasury": "Treasury curve",
                                            "fallback": "ENRICH_RISK_FREE_RATE"})
            + ". Dividend yield: " + share(inputs["dividend_method"], {
                "parity": "put-call parity", "trailing_12m": "trailing 12 months",
                "none": "no dividends"})
            + ". Prices: " + share(inputs["price_source"], {
                "mid": "quote mid", "last_trade": "last trade", "close": "daily close",
                "none": "none usable"})
            + (f". Adjusted contracts left out: {inputs['adjusted']}" if inputs["adjusted"]
               else "") + ".")


def occ_root(symbol: str) -> str:
    """The standard OCC root of an underlying (class shares fold in: BRK.B -> BRKB)."""
    return symbol.replace(".", "")


def choose_prices(chain: pl.DataFrame, session_open: dt.datetime | None) -> pl.DataFrame:
    """``option_price``, ``price_source`` and ``price_age_s`` from the quote and last trade
    (see the module docstring); a quote or trade stamped before ``session_open`` is stale."""
    return chain.with_columns(**_prices(session_open))


@functools.lru_cache(maxsize=64)  # building them costs more than running them on a chain
def _prices(session_open: dt.datetime | None) -> dict[str, pl.Expr]:
    bid, ask = pl.col("bid"), pl.col("ask")
    mid = (bid + ask) / 2.0
    fresh_quote = fresh_trade = pl.lit(True)
    if session_open is not None:  # unstamped quotes and trades are taken as this session's
        fresh_quote = pl.col("quote_at").is_null() | (pl.col("quote_at") >= session_open)
        fresh_trade = pl.col("trade_at").is_null() | (pl.col("trade_at") >= session_open)
    sane = ((bid > 0) & (ask >= bid)
            & ((ask - bid) <= pl.max_horizontal(MAX_SPREAD_REL * mid, pl.lit(MAX_SPREAD_ABS)))
            & fresh_quote).fill_null(False)
    traded = ((pl.col("trade_price") > 0) & fresh_trade).fill_null(False)
    source = pl.when(sane).then(pl.lit(MID)).when(traded).then(pl.lit(LAST_TRADE))
    age = (pl.col("snapshot_at") - pl.when(sane).then(pl.col("quote_at"))
           .when(traded).then(pl.col("trade_at"))).dt.total_microseconds() / 1e6
    return {"option_price": pl.when(sane).then(mid).when(traded).then(pl.col("trade_price")),
            "price_source": source, "price_age_s": age}


def _adjusted(columns: list[str]) -> pl.Expr:
    root = pl.col("contract").str.slice(2).str.head(pl.col("contract").str.len_chars() - 17)
    own = pl.col("symbol").str.replace_all(".", "", literal=True)
    odd = root != own
    if "shares_per_contract" in columns:
        shares = pl.col("shares_per_contract")
        odd = odd | (shares.is_not_null() & (shares != STANDARD_SHARES))
    if "deliverables" in columns:
        odd = odd | pl.col("deliverables").is_not_null()
    return odd.fill_null(False)


def flag_adjusted(chain: pl.DataFrame) -> pl.DataFrame:
    """``adjusted``: a deliverable other than 100 shares of the underlying itself."""
    return chain.with_columns(adjusted=_adjusted(chain.columns))


def price_chain(chain: pl.DataFrame, *, curves: pl.DataFrame, dividends: pl.DataFrame,
                splits: pl.DataFrame, fallback_rate: float,
                close: float | None = None, session_open: dt.datetime | None = None,
                session_close: dt.datetime | None = None,
                snapshot_at: dt.datetime | None = None) -> pl.DataFrame:
    """``options_iv`` rows from one session's chain snapshot (see the module docstring).

    ``close``: the underlying's stored close of the session, for rows whose snapshot gives no
    underlying price (the quotes were made against the snapshot's own). ``session_open``,
    ``session_close``: the session's instants (UTC). ``snapshot_at``: when the snapshot was
    taken, for rows the provider did not stamp."""
    if chain.is_empty():
        return OPTIONS_IV.empty()
    frame = conform(chain, OPTIONS_IV)
    filled = {"source": pl.lit(SNAPSHOT)}
    if snapshot_at is not None:
        filled["snapshot_at"] = pl.col("snapshot_at").fill_null(snapshot_at)
    if close is not None and close > 0:  # the snapshot's own price, which its quotes face
        filled["underlying_price"] = pl.col("underlying_price").fill_null(float(close))
    partial = pl.lit(False)
    if session_close is not None:
        partial = (pl.col("snapshot_at") < session_close).fill_null(False)
    # One query: choose_prices and flag_adjusted, after the fills they read.
    frame = frame.lazy().with_columns(**filled).with_columns(
        partial=partial, adjusted=_adjusted(frame.columns), **_prices(session_open)).collect()
    return solve(frame, curves=curves, dividends=dividends, splits=splits,
                 fallback_rate=fallback_rate, parity=True)


def solve(frame: pl.DataFrame, *, curves: pl.DataFrame, dividends: pl.DataFrame,
          splits: pl.DataFrame, fallback_rate: float, parity: bool) -> pl.DataFrame:
    """Fill ``rate, rate_source, dividend_yield, dividend_method, iv, greeks, iv_model`` and
    ``iv_null_reason`` of priced rows (``option_price``, ``adjusted``, ``exercise_style``,
    ``price_source``); ``parity``: imply ``q`` from both sides' quotes where they exist."""
    if frame.is_empty():
        return conform(frame, OPTIONS_IV)
    days = (pl.col("expiration") - pl.col("as_of")).dt.total_days().cast(pl.Float64)
    t = frame.select(days / 365.0).to_series().to_numpy()
    r, r_source = rates.rate_to(curves, frame["as_of"], t, fallback_rate)
    frame = dividend_yield.trailing_yield(dividends, splits, frame.with_columns(
        rate=pl.Series(r), rate_source=pl.Series(r_source, dtype=pl.String)))
    # Every column the solver reads, in one pass over the frame (each Series method would be
    # a query of its own: most of the cost on a chain of a few hundred rows).
    kind = pl.col("contract_type")
    cols = frame.select(
        usable=(pl.col("option_price").is_not_null() & ~pl.col("adjusted").fill_null(False)
                & kind.is_in(["call", "put"]).fill_null(False)
                & pl.col("underlying_price").is_not_null()),
        american=pl.col("exercise_style").fill_null("american") != "european",
        price=_floats("option_price"), s=_floats("underlying_price"), k=_floats("strike"),
        is_call=(kind == "call").fill_null(False), q=_floats("dividend_yield"),
        quoted=(pl.col("price_source") == MID).fill_null(False),
        pair=(pl.col("as_of").cast(pl.Int64) * 100_000
              + pl.col("expiration").cast(pl.Int64)).fill_null(-1),
        as_of=pl.col("as_of").cast(pl.Int64).fill_null(-1),
        no_price=pl.col("option_price").is_null(), adjusted=pl.col("adjusted").fill_null(False),
        no_spot=pl.col("underlying_price").is_null(),
    )
    col = {name: cols[name].to_numpy() for name in cols.columns}
    usable, american = col["usable"], col["american"]
    inputs = {"price": col["price"], "s": col["s"], "k": col["k"], "t": t, "r": r,
              "is_call": col["is_call"]}
    q = col["q"].copy()
    q[np.isnan(q)] = 0.0
    method = frame["dividend_method"].to_numpy().astype(object)
    if parity:
        quoted = usable & col["quoted"]
        groups = np.unique(col["pair"], return_inverse=True)[1]
        implied = _implied_yields(inputs, q, american, quoted, groups)
        implied = _fill_short(implied, groups, inputs["t"], col["as_of"])
        for g, q_g in implied.items():
            at = groups == g
            q[at] = q_g
            method[at] = dividend_yield.PARITY
    out = _solve_rows(inputs, q, american, usable)
    labels = _LABELS[out["reason"]]
    no_price, adjusted, no_spot = col["no_price"], col["adjusted"], col["no_spot"]
    for i in np.flatnonzero(~usable):
        labels[i] = ("adjusted_contract" if adjusted[i] else "no_underlying_price"
                     if no_spot[i] else "no_price" if no_price[i] else labels[i])
    greeks = to_market_units({g: out[g] for g in GREEKS})
    filled = [pl.Series(name, values, nan_to_null=True)
              for name, values in (("iv", out["iv"]), *greeks.items())]
    frame = frame.with_columns(
        *filled,
        pl.Series("iv_null_reason", labels.tolist(), dtype=pl.String),
        pl.Series("dividend_yield", q, nan_to_null=True),
        pl.Series("dividend_method", method, dtype=pl.String),
        iv_model=pl.when(pl.Series(american)).then(pl.lit("american"))
        .otherwise(pl.lit("european")),
    )
    return conform(frame, OPTIONS_IV)


def _floats(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.Float64).fill_null(float("nan"))


def _solve_rows(inputs: dict[str, np.ndarray], q: np.ndarray, american: np.ndarray,
                usable: np.ndarray) -> dict[str, np.ndarray]:
    n = len(q)
    out = {name: np.full(n, np.nan) for name in ("iv", "eep", *GREEKS)}
    out["reason"] = np.full(n, int(NullReason.MISSING_INPUT), dtype=np.int8)
    at = np.flatnonzero(usable)
    if at.size:
        res = american_iv_greeks(inputs["price"][at], inputs["s"][at], inputs["k"][at],
                                 inputs["t"][at], inputs["r"][at], q[at],
                                 inputs["is_call"][at], american[at])
        for name, values in res.items():
            out[name][at] = values
    return out


def _fill_short(implied: dict[int, float], groups: np.ndarray, t: np.ndarray,
                days: np.ndarray) -> dict[int, float]:
    """Expirations too close for parity (``PARITY_MIN_DAYS``) take the implied yield of the
    nearest expiration of the same session that has one."""
    if not implied:
        return implied
    out = dict(implied)
    first = {int(g): int(np.flatnonzero(groups == g)[0]) for g in np.unique(groups)}
    for g, i in first.items():
        if g in out or t[i] * 365.0 >= dividend_yield.PARITY_MIN_DAYS - 1e-9:
            continue
        peers = [(abs(t[j] - t[i]), h) for h, j in first.items()
                 if h in implied and days[j] == days[i]]
        if peers:
            out[g] = implied[min(peers)[1]]
    return out


def _parity_strikes(inputs: dict[str, np.ndarray], quoted: np.ndarray,
                    groups: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per (as_of, expiration) group: the rows of the call and the put at the (up to
    ``PARITY_STRIKES``) strikes where both quote and their prices are closest."""
    chosen: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for g in np.unique(groups[quoted]):
        at = np.flatnonzero((groups == g) & quoted)
        calls = {inputs["k"][i]: i for i in at if inputs["is_call"][i]}
        puts = {inputs["k"][i]: i for i in at if not inputs["is_call"][i]}
        both = sorted(set(calls) & set(puts),
                      key=lambda k: abs(inputs["price"][calls[k]] - inputs["price"][puts[k]]))
        if both:
            keep = both[:dividend_yield.PARITY_STRIKES]
            chosen[int(g)] = (np.array([calls[k] for k in keep]), np.array([puts[k] for k in keep]))
    return chosen


def _implied_yields(inputs: dict[str, np.ndarray], q0: np.ndarray, american: np.ndarray,
                    quoted: np.ndarray, groups: np.ndarray) -> dict[int, float]:
    """Parity yields per group, iterated on the parity strikes alone: solve their IVs at the
    current q, remove their early-exercise premia, imply q again (``PARITY_TOL``,
    ``PARITY_ROUNDS``); the rest of the chain is solved once, at the final q."""
    chosen = _parity_strikes(inputs, quoted, groups)
    if not chosen:
        return {}
    q = {g: float(q0[calls[0]]) for g, (calls, _) in chosen.items()}
    found: dict[int, float] = {}
    before: dict[int, float] = {}  # the iterate before q[g], for Aitken's acceleration
    todo = list(chosen)
    for _ in range(PARITY_ROUNDS):
        if not todo:
            break
        rows = np.concatenate([np.concatenate(chosen[g]) for g in todo])
        qs = np.concatenate([np.full(2 * len(chosen[g][0]), q[g]) for g in todo])
        res = _solve_rows({k: v[rows] for k, v in inputs.items()}, qs, american[rows],
                          np.ones(rows.size, dtype=bool))
        euro = dict(zip(rows.tolist(), (inputs["price"][rows] - res["eep"]).tolist(),
                        strict=True))
        left = []
        for g in todo:
            calls, puts = chosen[g]
            i = int(calls[0])
            q_g = dividend_yield.parity_yield(
                float(inputs["s"][i]), float(inputs["t"][i]), float(inputs["r"][i]),
                inputs["k"][calls], np.array([euro[int(j)] for j in calls]),
                np.array([euro[int(j)] for j in puts]))
            if q_g is None or not math.isfinite(q_g):
                continue
            x1 = q[g]  # this round's input
            if g in found and abs(q_g - x1) <= PARITY_TOL:
                found[g] = q_g
                continue
            found[g] = q_g
            x0 = before.pop(g, None)
            den = None if x0 is None else q_g - 2.0 * x1 + x0
            if x0 is not None and den is not None and abs(den) > 1e-12:
                q[g] = x0 - (x1 - x0) ** 2 / den  # Aitken: the map is nearly linear
            else:
                before[g], q[g] = x1, q_g
            left.append(g)
        todo = left
    return found
