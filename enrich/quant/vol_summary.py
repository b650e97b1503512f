"""A volatility summary per symbol and session, from its ``options_iv`` rows.

Smile points are the out-of-the-money options only (calls with a strike at or above the
forward ``F = S e^{(r - q) t}``, puts below), whose early-exercise premium is small, with an
IV, and not adjusted. Per expiration:

- ATM IV: the IV at ``ln(K / F) = 0``, linear in log-moneyness between the nearest points on
  each side (none when the strikes do not straddle the forward);
- 25-delta call and put IVs: linear in forward delta (``N(d1)`` for calls, ``N(d1) - 1`` for
  puts, at each point's own IV) between the points around 0.25 and -0.25.

Each of the three is then read at 30 calendar days by linear interpolation in total variance
``sigma^2 t`` between the expirations around 30 days (expirations under ``MIN_DAYS`` are left
out: their total variance is mostly noise); when none lies beyond (or before) 30 days, the
nearest expiration within ``FLAT_DAYS`` of it is taken flat in volatility, else null.

    atm_iv_30d  ATM IV at 30 days
    rr25_30d    IV(25-delta call) - IV(25-delta put), at 30 days
    bf25_30d    (IV(25-delta call) + IV(25-delta put)) / 2 - ATM IV, at 30 days

Volume and open interest are summed over every standard contract of the session, calls and
puts apart; the ratios are put / call (null when the call side is zero or unknown).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.special import ndtr

from enrich import columns
from enrich.schemas import VOL_SUMMARY

TARGET_DAYS = 30
MIN_DAYS = 7
FLAT_DAYS = 7


def summarize(options: pl.DataFrame) -> pl.DataFrame:
    """VOL_SUMMARY rows, one per (symbol, as_of) of ``options`` (OPTIONS_IV rows)."""
    if options.is_empty():
        return VOL_SUMMARY.empty()
    # numpy over the columns, read without a polars query (``enrich.columns``: on a
    # single chain each query would cost more than its arithmetic), sorted by symbol, as_of,
    # expiration and strike (nulls first, as polars sorts); then contiguous groups.
    keep = np.flatnonzero(~columns.flags(options["adjusted"]))
    if keep.size == 0:  # only adjusted contracts (non-standard deliverables): nothing to read
        return VOL_SUMMARY.empty()
    symbols = options["symbol"].to_list()
    names = {name: code for code, name in enumerate(sorted(set(symbols) - {None}))}
    symbol_code = np.array([names.get(x, -1) if x is not None else -1 for x in symbols],
                           dtype=np.int64)
    as_of, as_of_null = columns.values(options["as_of"])
    expiration, expiration_null = columns.values(options["expiration"])
    k, k_null = columns.values(options["strike"])
    keys = (np.where(k_null, 0.0, k), ~k_null, np.where(expiration_null, 0.0, expiration),
            ~expiration_null, np.where(as_of_null, 0.0, as_of), ~as_of_null, symbol_code)
    order = keep[np.lexsort(tuple(key[keep] for key in keys))]
    kinds = options["contract_type"].to_list()
    call = np.array([kind == "call" for kind in kinds], dtype=bool)
    put = np.array([kind == "put" for kind in kinds], dtype=bool)
    volume, no_volume = columns.values(options["volume"])
    oi, no_oi = columns.values(options["open_interest"])
    iv, no_iv = columns.values(options["iv"])
    spot, no_spot = columns.values(options["underlying_price"])
    t = (expiration - as_of) * (1 / 365.0)  # as polars divides by a constant (bit for bit)
    n = {"expiration": np.where(expiration_null, -1, expiration).astype(np.int64),
         "call": call, "put": put, "volume": np.where(no_volume, 0.0, volume),
         "has_volume": ~no_volume, "oi": np.where(no_oi, 0, oi).astype(np.int64),
         "has_oi": ~no_oi, "has_iv": ~no_iv, "partial": columns.flags(options["partial"]),
         "point": ~no_iv & ~no_spot & ~as_of_null & ~expiration_null & (expiration > as_of),
         "iv": iv, "t": t, "fwd": _forward(options, spot, t), "k": k}
    n = {name: values[order] for name, values in n.items()}
    with np.errstate(all="ignore"):
        n["x"] = np.log(n["k"] / n["fwd"])
        vt = n["iv"] * np.sqrt(n["t"])
        d1 = (-n["x"] + 0.5 * vt * vt) / vt
        nd1 = ndtr(d1)
        n["delta"] = np.where(n["call"], nd1, nd1 - 1.0)
    n["otm"] = np.where(n["call"], n["x"] >= 0, n["x"] < 0)
    # Sessions: runs of equal (symbol, as_of) in the sorted rows.
    session = (symbol_code * 2 + as_of_null)[order], np.where(as_of_null, 0.0, as_of)[order]
    starts = np.flatnonzero(np.r_[True, (session[0][1:] != session[0][:-1])
                                  | (session[1][1:] != session[1][:-1])]).tolist()
    sources = options["source"].to_list()
    sources = [sources[i] for i in order.tolist()]
    as_of_of = options["as_of"]  # read at each session's first row only
    out = [_session(n, sources, a, b, symbols[order[a]], as_of_of[int(order[a])])
           for a, b in zip(starts, starts[1:] + [order.size], strict=True)]
    return pl.DataFrame(out, schema=VOL_SUMMARY.schema, orient="row")


def _forward(options: pl.DataFrame, spot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``F = S e^{(r - q) t}`` per row (:func:`_forward_expr` in numpy; NaN where null)."""
    rate, no_rate = columns.values(options["rate"])
    q, no_q = columns.values(options["dividend_yield"])
    carry = np.where(no_rate, 0.0, rate) - np.where(no_q, 0.0, q)
    with np.errstate(all="ignore"):
        return spot * np.exp(carry * t)


def _session(n: dict[str, np.ndarray], sources: list, a: int, b: int, symbol: str,
             as_of) -> tuple:
    """One VOL_SUMMARY row from rows ``a:b`` of the columns ``n`` (one session, sorted by
    expiration and strike). A side's volume or open interest is null when no contract of
    the session reports any."""
    at = slice(a, b)
    call, put = n["call"][at], n["put"][at]
    volume, oi = n["volume"][at], n["oi"][at]
    any_volume, any_oi = bool(n["has_volume"][at].any()), bool(n["has_oi"][at].any())
    call_volume = float(volume[call].sum()) if any_volume else None
    put_volume = float(volume[put].sum()) if any_volume else None
    call_oi = int(oi[call].sum()) if any_oi else None
    put_oi = int(oi[put].sum()) if any_oi else None
    # The smile points: per expiration, its out-of-the-money contracts with an IV.
    pts = a + np.flatnonzero(n["point"][at])
    per_expiry = []
    if pts.size:
        exp = n["expiration"][pts]
        cuts = np.flatnonzero(exp[1:] != exp[:-1]) + 1
        for group in np.split(pts, cuts):
            sel = group[n["otm"][group]]
            per_expiry.append((n["t"][group[0]], *_expiry_points(
                n["x"][sel], n["iv"][sel], n["delta"][sel], n["call"][sel])))
    ts = np.array([p[0] for p in per_expiry])
    atm, c25, p25 = (np.array([p[i] for p in per_expiry]) for i in (1, 2, 3))
    v_atm, v_c, v_p = (_at_30_days(ts, v) for v in (atm, c25, p25))
    return (
        symbol, as_of, v_atm,
        None if v_c is None or v_p is None else v_c - v_p,
        None if v_c is None or v_p is None or v_atm is None else 0.5 * (v_c + v_p) - v_atm,
        call_volume, put_volume,
        put_volume / call_volume if call_volume and put_volume is not None else None,
        call_oi, put_oi, float(put_oi) / call_oi if call_oi and put_oi is not None else None,
        int(np.isfinite(atm).sum()), int(n["has_iv"][at].sum()),
        next((x for x in sources[a:b] if x is not None), None),
        bool(n["partial"][at].any()),
    )


def term_structure(chain: pl.DataFrame) -> pl.DataFrame:
    """ATM IV per (as_of, expiration) of ``chain`` (OPTIONS_IV rows), read at the forward
    from the out-of-the-money points as for the summary: ``as_of, expiration, days,
    forward, atm_iv`` (expirations whose strikes do not straddle the forward are left out)."""
    schema = {"as_of": pl.Date, "expiration": pl.Date, "days": pl.Int64, "forward": pl.Float64,
              "atm_iv": pl.Float64}
    pts = _points(chain)
    if pts is None:
        return pl.DataFrame(schema=schema)
    rows = []
    for key, at in pts["groups"].items():
        sel = at[pts["otm"][at]]
        atm = _expiry_points(pts["x"][sel], pts["iv"][sel], pts["delta"][sel],
                             pts["call"][sel])[0]
        if np.isfinite(atm):
            i = int(at[0])
            rows.append({"as_of": key[0], "expiration": key[1],
                         "days": int(round(pts["t"][i] * 365)),
                         "forward": float(pts["fwd"][i]), "atm_iv": atm})
    return pl.DataFrame(rows, schema=schema).sort("as_of", "expiration")


def _forward_expr() -> pl.Expr:
    t = (pl.col("expiration") - pl.col("as_of")).dt.total_days().cast(pl.Float64) / 365.0
    carry = pl.col("rate").fill_null(0.0) - pl.col("dividend_yield").fill_null(0.0)
    return pl.col("underlying_price") * (carry * t).exp()


def otm_expr() -> pl.Expr:
    """True for out-of-the-money OPTIONS_IV rows: calls at or above the forward
    ``S e^{(r - q) t}``, puts below it."""
    fwd = _forward_expr()
    return (pl.when(pl.col("contract_type") == "call").then(pl.col("strike") >= fwd)
            .otherwise(pl.col("strike") < fwd))


def _points(chain: pl.DataFrame) -> dict | None:
    cols = chain.lazy().filter(
        pl.col("iv").is_not_null() & pl.col("underlying_price").is_not_null()
        & ~pl.col("adjusted").fill_null(False) & (pl.col("expiration") > pl.col("as_of"))
    ).sort("as_of", "expiration", "strike").select(
        "as_of", "expiration", "iv",
        t=(pl.col("expiration") - pl.col("as_of")).dt.total_days().cast(pl.Float64) / 365.0,
        fwd=_forward_expr(), k=pl.col("strike").cast(pl.Float64),
        call=pl.col("contract_type") == "call",
    ).collect()
    if cols.is_empty():
        return None
    t, fwd, k, iv = (cols[c].to_numpy() for c in ("t", "fwd", "k", "iv"))
    call = cols["call"].to_numpy()
    x = np.log(k / fwd)
    vt = iv * np.sqrt(t)
    d1 = (-x + 0.5 * vt * vt) / vt
    groups: dict[tuple, np.ndarray] = {}
    keys = list(zip(cols["as_of"].to_list(), cols["expiration"].to_list(), strict=True))
    bounds = [0] + [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]] + [len(keys)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        groups[keys[a]] = np.arange(a, b)
    return {"t": t, "fwd": fwd, "x": x, "iv": iv, "call": call,
            "otm": np.where(call, x >= 0, x < 0),
            "delta": np.where(call, ndtr(d1), ndtr(d1) - 1.0), "groups": groups}


def _expiry_points(x, iv, delta, call) -> tuple[float, float, float]:
    """(ATM IV, 25-delta call IV, 25-delta put IV) of one expiration's OTM points (NaN when
    the points do not reach)."""
    atm = np.nan
    if x.size and x.min() < 0 <= x.max():
        order = np.argsort(x)
        atm = float(np.interp(0.0, x[order], iv[order]))
    return atm, _at_delta(delta[call], iv[call], 0.25), _at_delta(delta[~call], iv[~call], -0.25)


def _at_delta(delta: np.ndarray, iv: np.ndarray, target: float) -> float:
    """The IV at forward delta ``target``, linear between the points around it (NaN when
    they do not reach)."""
    if delta.size and delta.min() <= target <= delta.max():
        order = np.argsort(delta)
        return float(np.interp(target, delta[order], iv[order]))
    return np.nan


def _at_30_days(t: np.ndarray, vol: np.ndarray) -> float | None:
    """``vol`` read at 30 days, linear in total variance (see the module docstring)."""
    ok = np.isfinite(vol) & (t * 365.0 >= MIN_DAYS - 1e-9)
    t, vol = t[ok], vol[ok]
    if t.size == 0:
        return None
    target = TARGET_DAYS / 365.0
    below, above = t <= target, t >= target
    if below.any() and above.any():
        i, j = np.flatnonzero(below)[np.argmax(t[below])], np.flatnonzero(above)[
            np.argmin(t[above])]
        if t[i] == t[j]:
            return float(vol[i])
        w = vol[i] ** 2 * t[i] + (vol[j] ** 2 * t[j] - vol[i] ** 2 * t[i]) \
            * (target - t[i]) / (t[j] - t[i])
        return float(np.sqrt(w / target)) if w > 0 else None
    nearest = int(np.argmin(np.abs(t - target)))
    if abs(t[nearest] - target) * 365.0 <= FLAT_DAYS + 1e-9:
        return float(vol[nearest])
    return None
