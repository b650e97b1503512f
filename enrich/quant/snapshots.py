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
import math

import numpy as np
import polars as pl

from enrich import columns
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
    snap, snap_null = columns.values(chain["snapshot_at"])
    return columns.put(chain, *_prices(chain, snap, snap_null, session_open))


def _prices(chain: pl.DataFrame, snap: np.ndarray, snap_null: np.ndarray,
            session_open: dt.datetime | None) -> list[pl.Series]:
    """:func:`choose_prices`' columns; ``snap``: ``snapshot_at`` as :func:`columns.values`
    reads it. Null quotes, prices and stamps are as polars takes them (a comparison with a null
    is not true); a NaN (not null) bid, ask or trade price, which no provider sends, is never
    usable."""
    bid, _ = columns.values(chain["bid"])
    ask, _ = columns.values(chain["ask"])
    trade, _ = columns.values(chain["trade_price"])
    quote_at, quote_null = columns.values(chain["quote_at"])
    trade_at, trade_null = columns.values(chain["trade_at"])
    mid = (bid + ask) / 2.0
    fresh_quote = fresh_trade = np.ones(bid.size, dtype=bool)
    if session_open is not None:  # unstamped quotes and trades are taken as this session's
        opened = columns.micros(session_open)
        fresh_quote = quote_null | (quote_at >= opened)
        fresh_trade = trade_null | (trade_at >= opened)
    sane = ((bid > 0) & (ask >= bid)
            & ((ask - bid) <= np.maximum(MAX_SPREAD_REL * mid, MAX_SPREAD_ABS)) & fresh_quote)
    traded = (trade > 0) & fresh_trade & ~sane
    price = np.where(sane, mid, np.where(traded, trade, np.nan))
    source = np.full(bid.size, None, dtype=object)
    source[sane], source[traded] = MID, LAST_TRADE
    at, at_null = np.where(sane, quote_at, trade_at), np.where(sane, quote_null, trade_null)
    # Times the reciprocal, as polars divides by a constant: the same float to the last bit.
    age = np.where(~(sane | traded) | at_null | snap_null, np.nan, (snap - at) * (1 / 1e6))
    return [columns.floats("option_price", price), columns.strings("price_source", source),
            columns.floats("price_age_s", age)]


def _adjusted(chain: pl.DataFrame) -> np.ndarray:
    contracts, symbols = chain["contract"].to_list(), chain["symbol"].to_list()
    # The root: the ticker less "O:" and the 15 characters of expiry, type and strike (one
    # shorter than 17 keeps all after "O:": the polars expression this replaced did so).
    own = {u: occ_root(u) for u in set(symbols) if u is not None}
    odd = np.array([c is not None and u is not None
                    and (c[2:len(c) - 15] if len(c) >= 17 else c[2:]) != own[u]
                    for c, u in zip(contracts, symbols, strict=True)], dtype=bool)
    if "shares_per_contract" in chain.columns:
        shares, missing = columns.values(chain["shares_per_contract"])
        odd |= ~missing & (shares != STANDARD_SHARES)
    if "deliverables" in chain.columns:
        odd |= columns.present(chain["deliverables"])
    return odd


def flag_adjusted(chain: pl.DataFrame) -> pl.DataFrame:
    """``adjusted``: a deliverable other than 100 shares of the underlying itself."""
    return columns.put(chain, pl.Series("adjusted", _adjusted(chain)))


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
    # numpy over columns, no polars query (``enrich.columns``: each would cost more
    # than its arithmetic on a chain).
    frame = conform(chain, OPTIONS_IV)
    n = frame.height
    filled = [columns.constant("source", SNAPSHOT, pl.String, n)]
    snap, snap_null = columns.values(frame["snapshot_at"])
    if snapshot_at is not None and snap_null.any():
        snap = np.where(snap_null, columns.micros(snapshot_at), snap)
        snap_null = np.zeros(n, dtype=bool)
        filled.append(columns.instants("snapshot_at", snap, snap_null))
    if close is not None and close > 0:  # the snapshot's own price, which its quotes face
        spot, spot_null = columns.values(frame["underlying_price"])
        if spot_null.any():  # (no null left: a NaN price stays NaN, as fill_null keeps it)
            filled.append(pl.Series("underlying_price", np.where(spot_null, float(close), spot)))
    partial = np.zeros(n, dtype=bool)
    if session_close is not None:
        partial = ~snap_null & (snap < columns.micros(session_close))
    frame = columns.put(frame, *filled, pl.Series("partial", partial),
                        pl.Series("adjusted", _adjusted(frame)),
                        *_prices(frame, snap, snap_null, session_open))
    # Already OPTIONS_IV's schema, which _solve keeps: no second conform (~0.1 ms).
    return _solve(frame, curves=curves, dividends=dividends, splits=splits,
                  fallback_rate=fallback_rate, parity=True)


def solve(frame: pl.DataFrame, *, curves: pl.DataFrame, dividends: pl.DataFrame,
          splits: pl.DataFrame, fallback_rate: float, parity: bool) -> pl.DataFrame:
    """Fill ``rate, rate_source, dividend_yield, dividend_method, iv, greeks, iv_model`` and
    ``iv_null_reason`` of priced rows (``option_price``, ``adjusted``, ``exercise_style``,
    ``price_source``); ``parity``: imply ``q`` from both sides' quotes where they exist."""
    if frame.is_empty():
        return conform(frame, OPTIONS_IV)
    return conform(_solve(frame, curves=curves, dividends=dividends, splits=splits,
                          fallback_rate=fallback_rate, parity=parity), OPTIONS_IV)


def _solve(frame: pl.DataFrame, *, curves: pl.DataFrame, dividends: pl.DataFrame,
           splits: pl.DataFrame, fallback_rate: float, parity: bool) -> pl.DataFrame:
    """:func:`solve` of a non-empty frame, its columns filled (new ones last), not conformed."""
    # Every column read once into numpy (``enrich.columns``), no polars query.
    as_of, as_of_null = columns.values(frame["as_of"])
    expiration, expiration_null = columns.values(frame["expiration"])
    t = (expiration - as_of) * (1 / 365.0)  # as polars divides by a constant (bit for bit)
    r, r_source = rates.rate_to(curves, frame["as_of"], t, fallback_rate)
    price, no_price = columns.values(frame["option_price"])
    s, no_spot = columns.values(frame["underlying_price"])
    q, method = dividend_yield.trailing(dividends, splits, frame["as_of"].to_list(), s,
                                        ~no_spot)
    kinds = frame["contract_type"].to_list()
    is_call = np.array([kind == "call" for kind in kinds], dtype=bool)
    is_put = np.array([kind == "put" for kind in kinds], dtype=bool)
    adjusted = columns.flags(frame["adjusted"])
    usable = ~no_price & ~adjusted & (is_call | is_put) & ~no_spot
    american = np.array([style != "european" for style in frame["exercise_style"].to_list()],
                        dtype=bool)
    inputs = {"price": price, "s": s, "k": columns.values(frame["strike"])[0], "t": t, "r": r,
              "is_call": is_call}
    q[np.isnan(q)] = 0.0
    if parity:
        quoted = usable & np.array([src == MID for src in frame["price_source"].to_list()],
                                   dtype=bool)
        day = np.where(as_of_null, -1, as_of).astype(np.int64)
        pair = np.where(as_of_null | expiration_null, -1,
                        day * 100_000 + np.where(expiration_null, 0, expiration)).astype(np.int64)
        groups = np.unique(pair, return_inverse=True)[1].reshape(-1)
        implied = _implied_yields(inputs, q, american, quoted, groups)
        implied = _fill_short(implied, groups, inputs["t"], day)
        if implied:
            by_group = np.full(int(groups.max()) + 1, np.nan)
            by_group[list(implied)] = list(implied.values())
            at = ~np.isnan(by_group)[groups]
            q[at] = by_group[groups[at]]
            method[at] = dividend_yield.PARITY
    out = _solve_rows(inputs, q, american, usable)
    labels = _LABELS[out["reason"]]
    for i in np.flatnonzero(~usable):
        labels[i] = ("adjusted_contract" if adjusted[i] else "no_underlying_price"
                     if no_spot[i] else "no_price" if no_price[i] else labels[i])
    greeks = to_market_units({g: out[g] for g in GREEKS})
    return columns.put(
        frame,
        pl.Series("rate", r), columns.strings("rate_source", r_source),
        *(columns.floats(name, values) for name, values in (("iv", out["iv"]),
                                                           *greeks.items())),
        columns.strings("iv_null_reason", labels),
        columns.floats("dividend_yield", q), columns.strings("dividend_method", method),
        columns.strings("iv_model", np.where(american, "american", "european").astype(object)),
    )


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
    unique, rows = np.unique(groups, return_index=True)
    first = dict(zip(unique.tolist(), rows.tolist(), strict=True))  # each group's first row
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
    rows = np.flatnonzero(quoted)
    by_group = rows[np.argsort(groups[rows], kind="stable")]  # each group's rows in order
    cuts = np.flatnonzero(np.diff(groups[by_group])) + 1
    strikes, prices = inputs["k"].tolist(), inputs["price"].tolist()
    is_call = inputs["is_call"]
    for at in np.split(by_group, cuts) if by_group.size else []:
        call_rows, put_rows = at[is_call[at]].tolist(), at[~is_call[at]].tolist()
        calls = {strikes[i]: i for i in call_rows}
        puts = {strikes[i]: i for i in put_rows}
        both = sorted(set(calls) & set(puts),
                      key=lambda k: abs(prices[calls[k]] - prices[puts[k]]))
        if both:
            keep = both[:dividend_yield.PARITY_STRIKES]
            chosen[int(groups[at[0]])] = (np.array([calls[k] for k in keep]),
                                          np.array([puts[k] for k in keep]))
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
    rows_of = {g: np.concatenate(chosen[g]) for g in todo}  # its calls, then its puts
    for _ in range(PARITY_ROUNDS):
        if not todo:
            break
        rows = np.concatenate([rows_of[g] for g in todo])
        at = {name: values[rows] for name, values in inputs.items()}
        res = american_iv_greeks(at["price"], at["s"], at["k"], at["t"], at["r"],
                                 np.repeat([q[g] for g in todo], [rows_of[g].size for g in todo]),
                                 at["is_call"], american[rows])
        euro = at["price"] - res["eep"]
        left = []
        start = 0
        for g in todo:
            n = len(chosen[g][0])
            q_g = dividend_yield.parity_yield(
                float(at["s"][start]), float(at["t"][start]), float(at["r"][start]),
                at["k"][start:start + n], euro[start:start + n], euro[start + n:start + 2 * n])
            start += 2 * n
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
