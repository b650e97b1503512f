"""Implied volatility of European options under Black–Scholes–Merton, vectorised over arrays.

Conventions follow :mod:`enrich.bsm`: ``t`` in years, ``r`` and ``q`` continuously compounded,
volatility annualised; greeks per unit of the underlying (vega per 1.00 of volatility, theta per
year, rho per 1.00 of rate). :func:`chain_iv` measures time as ACT/365:
``t = (expiration - as_of).days / 365``, so a contract on its expiry day has ``t = 0``.

Nulls. The solver never guesses: where a volatility cannot be stated it returns NaN (null in
polars) and one reason code per element (:class:`NullReason`), checked in this order:

- ``missing_input``: a NaN or infinite input.
- ``non_positive_input``: price, underlying or strike <= 0.
- ``expired``: ``t <= 0``.
- ``at_or_above_upper_bound``: price >= ``s e^{-qt}`` (call) or ``k e^{-rt}`` (put).
- ``below_intrinsic``: price below ``max(0, s e^{-qt} - k e^{-rt})`` (call; the mirror for
  puts) by more than the rounding of that bound.
- ``time_value_below_resolution``: the price carries no usable information about volatility.
  A BSM price in float64 is only known to about ``eps * (price + s |delta|)`` (the size of the
  terms that the formula and put-call parity subtract), and rounding of ``d1, d2`` adds about
  ``eps (|d1| + |d2|) vega / sqrt(t)``. Dividing by vega, :func:`vol_resolution` is
  ``RESOLUTION_ULPS * eps * ((price + s |delta|) / vega + (|d1| + |d2|) / sqrt(t))``; where it
  exceeds ``tol`` (default 1e-8), or the time value is within rounding of zero, the result is
  null rather than a number whose digits are noise. This removes in-the-money contracts many
  standard deviations from the forward (their time value drowns in the intrinsic value: short
  expiries, low vols) and out-of-the-money ones so far out that the price underflows; it keeps
  cheap out-of-the-money contracts, whose tiny prices are exact relative to themselves.
- ``no_convergence``: a safeguard that should not occur; kept so a failure shows as a null.
- ``unknown_contract_type``: set by :func:`chain_iv` for a contract type other than call/put.
- ``early_exercise``: set by :mod:`enrich.american` for an American price at the value of
  exercising now (or whose early-exercise premium alone exceeds its time value).

Method: P. Jäckel, "Let's be rational" (Wilmott, 2015). The price is reduced to the normalised
out-of-the-money call ``b(x, s)`` with ``x = ln(F/K) <= 0`` and total volatility
``s = sigma sqrt(t)`` (in-the-money options via put-call parity); a rational-cubic initial guess
on four branches is refined by Householder steps of order four on an objective chosen per
branch (``1/ln b`` in the lowest, ``ln(b_max - b)`` in the highest, ``b`` between), inside a
bracket that falls back to bisection. Two steps reach float64 precision almost everywhere; the
few elements that need more are iterated on their own. Everything is numpy, element-wise,
over blocks of 64k elements.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import NamedTuple

import numpy as np
import polars as pl
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri

from enrich.bsm import price_and_greeks, to_market_units

__all__ = [
    "GREEKS",
    "RESOLUTION_ULPS",
    "IvResult",
    "NullReason",
    "chain_iv",
    "compute_iv_greeks",
    "implied_vol",
    "reason_labels",
    "vol_resolution",
]


class NullReason(IntEnum):
    NONE = 0
    MISSING_INPUT = 1
    NON_POSITIVE_INPUT = 2
    EXPIRED = 3
    BELOW_INTRINSIC = 4
    AT_OR_ABOVE_UPPER_BOUND = 5
    TIME_VALUE_BELOW_RESOLUTION = 6
    NO_CONVERGENCE = 7
    UNKNOWN_CONTRACT_TYPE = 8
    EARLY_EXERCISE = 9

    @property
    def label(self) -> str | None:
        return None if self is NullReason.NONE else self.name.lower()


class IvResult(NamedTuple):
    iv: np.ndarray  # float64, NaN where null
    reason: np.ndarray  # int8 NullReason codes, 0 where iv is set


GREEKS = ("delta", "gamma", "vega", "theta", "rho")

# Rounding budget of the error model in ``vol_resolution``, in ulps: what the price may carry
# from the formula that produced it plus what the solver adds (parity, normalisation, its own
# evaluation). The worst error measured over the test grid is 2.6 ulps of the model; 16 leaves
# room for other pricers. Coverage hardly depends on it: resolution decays like exp(-d^2/2).
RESOLUTION_ULPS = 16.0
# Rounding of the intrinsic bound s e^{-qt} - k e^{-rt}, in units of eps * (s e^{-qt} + k e^{-rt}).
_BOUND_ULPS = 8.0

_EPS = float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).tiny)
_SQRT_DBL_MAX = math.sqrt(float(np.finfo(np.float64).max))
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT3 = math.sqrt(3.0)
_PI_OVER_6 = math.pi / 6.0
_TWO_PI = 2.0 * math.pi
_TWO_PI_OVER_SQRT27 = 2.0 * math.pi / math.sqrt(27.0)
_SQRT_PI_OVER_2 = math.sqrt(math.pi / 2.0)
_R_MIN = -(1.0 - math.sqrt(_EPS))  # rational cubic control parameter range (Delbourgo–Gregory)
_R_MAX = 2.0 / (_EPS * _EPS)

_BLOCK = 1 << 16  # elements per block in _solve

# Steps every element takes, then the most any one element may take.
_FIRST_STEPS = 2
_MAX_STEPS = 64
# A Householder(3) step this small (relative) leaves an error far below float64 precision.
_CONVERGED_STEP = 1e-6

_PLAIN, _LOWEST, _UPPER = 0, 1, 2  # objective kinds (see _householder_step)


def reason_labels(codes: ArrayLike) -> list[str | None]:
    """Reason codes as the strings stored in ``iv_null_reason`` (None where iv is set)."""
    return [NullReason(int(c)).label for c in np.ravel(codes)]


def vol_resolution(
    price: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike, r: ArrayLike, q: ArrayLike,
    sigma: ArrayLike, is_call: ArrayLike,
) -> np.ndarray:
    """How finely float64 pins down ``sigma`` at this price (same units as ``sigma``).

    :func:`implied_vol` reports a volatility only where this is <= ``tol``; see the module
    docstring for the error model.
    """
    s, k, t, r, q, sigma = (np.asarray(a, dtype=np.float64) for a in (s, k, t, r, q, sigma))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        g = price_and_greeks(s, k, t, r, q, sigma, is_call)
        x = np.log(s / k) + (r - q) * t
        sqrt_t = np.sqrt(t)
        return _resolution(np.asarray(price, dtype=np.float64), s, x, sqrt_t, sigma, g["delta"],
                           g["vega"])


def _resolution(price, s, x, sqrt_t, sigma, delta, vega):
    # Price rounding ~ eps * (price + s|delta|) over vega, plus the rounding of d1 and d2
    # (~ eps |d|, and |d1| + |d2| = max(2|x|/v, v) with v = sigma sqrt(t)), which moves the
    # price by vega / sqrt(t) per unit of d. The 16 tiny / eps floor keeps prices that have
    # gone subnormal (no relative precision left) from ever counting as resolved.
    v = sigma * sqrt_t
    d_sum = np.maximum(2.0 * np.abs(x) / v, v)
    noise = (price + s * np.abs(delta) + 16.0 * _TINY / _EPS) / vega + d_sum / sqrt_t
    return RESOLUTION_ULPS * _EPS * noise


def implied_vol(
    price: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike, r: ArrayLike, q: ArrayLike,
    is_call: ArrayLike, *, tol: float = 1e-8,
) -> IvResult:
    """Implied volatility per element (inputs broadcast); NaN and a reason code where null."""
    iv, reason, _ = _solve(price, s, k, t, r, q, is_call, tol)
    return IvResult(iv, reason)


def compute_iv_greeks(
    price: ArrayLike, s: ArrayLike, k: ArrayLike, t: ArrayLike, r: ArrayLike, q: ArrayLike,
    is_call: ArrayLike, *, tol: float = 1e-8,
) -> dict[str, np.ndarray]:
    """``iv``, ``reason`` and the greeks of :func:`enrich.bsm.price_and_greeks` at the solved
    volatility; every greek is NaN where ``iv`` is."""
    iv, reason, greeks = _solve(price, s, k, t, r, q, is_call, tol)
    return {"iv": iv, "reason": reason, **greeks}


# --------------------------------------------------------------------------- the solver


def _solve(price, s, k, t, r, q, is_call, tol):
    arrays = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (price, s, k, t, r, q)),
        np.asarray(is_call, dtype=bool),
    )
    shape = arrays[0].shape
    if len(shape) != 1:
        arrays = [a.ravel() for a in arrays]
    n = arrays[0].size
    iv = np.full(n, np.nan)
    reason = np.empty(n, dtype=np.int8)
    greeks = {g: np.full(n, np.nan) for g in GREEKS}
    # Work block by block: temporaries of a few hundred kB stay in cache and in malloc's heap,
    # where whole-array ones of many MB are mapped and page-faulted afresh by every ufunc
    # (measured: ~40% of the time at a million options).
    for start in range(0, n, _BLOCK):
        block = slice(start, start + _BLOCK)
        _solve_block(*(a[block] for a in arrays), tol, iv[block], reason[block],
                     {name: values[block] for name, values in greeks.items()})
    greeks = {name: values.reshape(shape) for name, values in greeks.items()}
    return iv.reshape(shape), reason.reshape(shape), greeks


def _solve_block(p, s, k, t, r, q, call, tol, iv, reason, greeks):
    """Solve one block, writing into the views ``iv``, ``reason`` and ``greeks``."""
    with np.errstate(all="ignore"):
        # Bounds are computed everywhere (garbage where an input is bad; np.select below lets
        # the first matching reason win, so that garbage never decides anything).
        sp = s * np.exp(-q * t)  # discounted underlying
        kp = k * np.exp(-r * t)  # discounted strike
        forward_gap = np.where(call, sp - kp, kp - sp)
        time_value = p - np.maximum(forward_gap, 0.0)  # the OTM twin's price, by parity
        noise = (_BOUND_ULPS * _EPS) * (sp + kp) * (forward_gap > 0.0)
        x = -np.abs(np.log(s / k) + (r - q) * t)  # ln(F/K) of the out-of-the-money twin
        bmax = np.exp(0.5 * x)
        beta = time_value / np.sqrt(sp * kp)
        finite = (np.isfinite(p) & np.isfinite(s) & np.isfinite(k) & np.isfinite(t)
                  & np.isfinite(r) & np.isfinite(q))
        reason[:] = np.select(
            [
                ~finite,
                (p <= 0) | (s <= 0) | (k <= 0),
                t <= 0,
                p >= np.where(call, sp, kp),
                time_value < -noise,
                # Within rounding of a bound, or subnormal (no relative precision left).
                (time_value <= noise) | ~(beta >= _TINY) | ~(beta < bmax),
            ],
            [
                np.int8(NullReason.MISSING_INPUT),
                np.int8(NullReason.NON_POSITIVE_INPUT),
                np.int8(NullReason.EXPIRED),
                np.int8(NullReason.AT_OR_ABOVE_UPPER_BOUND),
                np.int8(NullReason.BELOW_INTRINSIC),
                np.int8(NullReason.TIME_VALUE_BELOW_RESOLUTION),
            ],
            np.int8(0),
        )

        go = np.flatnonzero(reason == 0)
        t_go = t[go]
        sqrt_t = np.sqrt(t_go)
        # Solver accuracy in total volatility: a small fraction of the tolerance asked for.
        s_tol = 0.25 * tol * sqrt_t
        x_go = x[go]
        total_vol, converged = _normalised_vol(beta[go], x_go, bmax[go], s_tol)
        sigma = total_vol / sqrt_t
        s_go = s[go]
        g = price_and_greeks(s_go, k[go], t_go, r[go], q[go], sigma, call[go])
        res = _resolution(p[go], s_go, x_go, sqrt_t, sigma, g["delta"], g["vega"])
        fail = np.where(
            ~(res <= tol), NullReason.TIME_VALUE_BELOW_RESOLUTION,
            np.where(converged & np.isfinite(sigma), 0, NullReason.NO_CONVERGENCE),
        ).astype(np.int8)
        reason[go] = fail
        ok = fail == 0
        at = go[ok]
        iv[at] = sigma[ok]
        for name in GREEKS:
            greeks[name][at] = g[name][ok]


def _nblack(x, s, ehp=None, ehm=None):
    """Normalised out-of-the-money call ``e^{x/2} N(x/s + s/2) - e^{-x/2} N(x/s - s/2)``."""
    ehp = np.exp(0.5 * x) if ehp is None else ehp
    ehm = 1.0 / ehp if ehm is None else ehm
    h = x / s
    half = 0.5 * s
    return ehp * ndtr(h + half) - ehm * ndtr(h - half)


def _nvega(x, s):
    """d b / d s."""
    h = x / s
    return _INV_SQRT_2PI * np.exp(-0.5 * (h * h + 0.25 * s * s))


def _normalised_vol(beta, x, bmax, s_tol):
    """Solve ``b(x, s) = beta`` for ``s`` (x <= 0, 0 < beta < e^{x/2}); also a converged flag.

    ``s_tol`` is the absolute accuracy in ``s`` that is enough: a bracket that narrow counts as
    converged even where rounding noise in ``b`` keeps the steps from shrinking. Elements are
    split once into Jäckel's four branches; each branch is guessed and iterated on its own, so
    no step carries masks.
    """
    n = beta.size
    s = np.empty(n)
    converged = np.empty(n, dtype=bool)
    ehm = 1.0 / bmax
    s_c = np.sqrt(-2.0 * x)  # the inflection point of b in s, where d1 = 0
    b_c = 0.5 * bmax - ehm * ndtr(-s_c)
    v_c = _INV_SQRT_2PI * bmax
    lower = beta < b_c
    halves = ((np.flatnonzero(lower), _lower_half), (np.flatnonzero(~lower), _upper_half))
    for part, solve in halves:
        if part.size:
            args = (a[part] for a in (beta, x, bmax, ehm, s_c, b_c, v_c, s_tol))
            s[part], converged[part] = solve(*args)
    return s, converged


def _lower_half(beta, x, bmax, ehm, s_c, b_c, v_c, s_tol):
    s = np.empty(beta.size)
    converged = np.empty(beta.size, dtype=bool)
    s_l = s_c - b_c / v_c
    b_l = _nblack(x, s_l, bmax, ehm)
    lowest = beta < b_l

    j = np.flatnonzero(lowest)  # below b_l: rational guess in Jäckel's f_lower map
    if j.size:
        bj, xj, slj, blj = beta[j], x[j], s_l[j], b_l[j]
        f_l, fp_l, fpp_l = _lower_map(xj, slj)
        zero, one = np.zeros(j.size), np.ones(j.size)
        r_ll = _convex_r_right(zero, blj, zero, f_l, one, fp_l, fpp_l, prefer_shape=True)
        f = _rational_cubic(bj, zero, blj, zero, f_l, one, fp_l, r_ll)
        tt = bj / blj
        f = np.where(f > 0.0, f, (f_l * tt + blj * (1.0 - tt)) * tt)
        guess = _inverse_lower_map(xj, f)
        s[j], converged[j] = _iterate(
            _LOWEST, bj, xj, bmax[j], ehm[j], guess, np.zeros(j.size), slj, s_tol[j]
        )
    j = np.flatnonzero(~lowest)  # between b_l and b_c: rational guess in s directly
    if j.size:
        bj, xj, slj, blj, scj = beta[j], x[j], s_l[j], b_l[j], s_c[j]
        bcj = b_c[j]
        inv_vl, inv_vc = 1.0 / _nvega(xj, slj), 1.0 / v_c[j]
        r_lm = _convex_r_right(blj, bcj, slj, scj, inv_vl, inv_vc, 0.0, prefer_shape=False)
        guess = _rational_cubic(bj, blj, bcj, slj, scj, inv_vl, inv_vc, r_lm)
        s[j], converged[j] = _iterate(_PLAIN, bj, xj, bmax[j], ehm[j], guess, slj, scj, s_tol[j])
    return s, converged


def _upper_half(beta, x, bmax, ehm, s_c, b_c, v_c, s_tol):
    s = np.empty(beta.size)
    converged = np.empty(beta.size, dtype=bool)
    s_h = np.where(v_c > _TINY, s_c + (bmax - b_c) / v_c, s_c)
    b_h = _nblack(x, s_h, bmax, ehm)
    middle = beta <= b_h

    j = np.flatnonzero(middle)  # between b_c and b_h: rational guess in s directly
    if j.size:
        bj, xj, shj, bhj, scj, bcj = beta[j], x[j], s_h[j], b_h[j], s_c[j], b_c[j]
        inv_vc, inv_vh = 1.0 / v_c[j], 1.0 / _nvega(xj, shj)
        r_hm = _convex_r_left(bcj, bhj, scj, shj, inv_vc, inv_vh, 0.0, prefer_shape=False)
        guess = _rational_cubic(bj, bcj, bhj, scj, shj, inv_vc, inv_vh, r_hm)
        s[j], converged[j] = _iterate(_PLAIN, bj, xj, bmax[j], ehm[j], guess, scj, shj, s_tol[j])
    j = np.flatnonzero(~middle)  # above b_h: rational guess in Jäckel's f_upper map
    if j.size:
        bj, xj, shj, bhj, bmj = beta[j], x[j], s_h[j], b_h[j], bmax[j]
        f_h, fp_h, fpp_h = _upper_map(xj, shj)
        zero, slope = np.zeros(j.size), np.full(j.size, -0.5)
        r_hh = _convex_r_left(bhj, bmj, f_h, zero, fp_h, slope, fpp_h, prefer_shape=True)
        f = _rational_cubic(bj, bhj, bmj, f_h, zero, fp_h, slope, r_hh)
        f = np.where(np.abs(fpp_h) < _SQRT_DBL_MAX, f, -1.0)
        width = bmj - bhj
        tt = (bj - bhj) / width
        f = np.where(f > 0.0, f, (f_h * (1.0 - tt) + 0.5 * width * tt) * (1.0 - tt))
        guess = -2.0 * ndtri(f)
        # ln(b_max - b) pays off only near the maximum; below half of it, b itself is better.
        near = bj > 0.5 * bmj
        for kind, sel in ((_UPPER, np.flatnonzero(near)), (_PLAIN, np.flatnonzero(~near))):
            if sel.size:
                at = j[sel]
                s[at], converged[at] = _iterate(
                    kind, bj[sel], xj[sel], bmj[sel], ehm[at], guess[sel], shj[sel],
                    np.full(sel.size, np.inf), s_tol[at],
                )
    return s, converged


def _iterate(kind, beta, x, bmax, ehm, s, lo, hi, s_tol):
    """Householder steps for one objective kind: all elements twice, then the stragglers."""
    aux = np.log(beta) if kind == _LOWEST else np.log(bmax - beta) if kind == _UPPER else None
    s = np.clip(s, lo, hi)
    for _ in range(_FIRST_STEPS):
        s, lo, hi, converged = _householder_step(kind, beta, x, bmax, ehm, aux, s, lo, hi, s_tol)
    todo = np.flatnonzero(~converged)
    for _ in range(_MAX_STEPS - _FIRST_STEPS):
        if todo.size == 0:
            break
        sub = [a[todo] for a in (beta, x, bmax, ehm)]
        sub.append(None if aux is None else aux[todo])
        s_t, lo_t, hi_t, done = _householder_step(
            kind, *sub, s[todo], lo[todo], hi[todo], s_tol[todo]
        )
        s[todo], lo[todo], hi[todo] = s_t, lo_t, hi_t
        converged[todo[done]] = True
        todo = todo[~done]
    return s, converged


def _householder_step(kind, beta, x, bmax, ehm, aux, s, lo, hi, s_tol):
    """One safeguarded Householder(3) step; returns s, the bracket, and a converged flag.

    Objectives (Jäckel): b - beta (plain); 1/ln(b) - 1/ln(beta) (lowest, ``aux = ln beta``);
    ln(b_max - beta) - ln(b_max - b) (upper, ``aux = ln(b_max - beta)``).
    """
    h = x / s
    half = 0.5 * s
    b = bmax * ndtr(h + half) - ehm * ndtr(h - half)
    hh = h * h
    bp = _INV_SQRT_2PI * np.exp(-0.5 * (hh + half * half))
    hi = np.minimum(hi, np.where(b > beta, s, np.inf))
    lo = np.maximum(lo, np.where(b < beta, s, 0.0))
    hs = hh / s
    b_halley = hs - 0.5 * half  # b'' / b'
    b_hh3 = b_halley * b_halley - 3.0 * (hs / s) - 0.25  # b''' / b'
    if kind == _PLAIN:
        newton = (beta - b) / bp
        halley, hh3 = b_halley, b_hh3
        bad = ~(bp > 0.0)
    elif kind == _LOWEST:
        ln_b = np.log(b)
        bpob = bp / b
        newton = (aux - ln_b) * ln_b / aux / bpob
        two = 1.0 + 2.0 / ln_b
        halley = b_halley - bpob * two
        hh3 = (b_hh3 + 2.0 * bpob * bpob * (1.0 + 3.0 / ln_b * (1.0 + 1.0 / ln_b))
               - 3.0 * b_halley * bpob * two)
        bad = ~(b > 0.0) | ~(bp > 0.0)
    else:
        gap = bmax - b
        gp = bp / gap
        newton = (np.log(gap) - aux) / gp
        halley = b_halley + gp
        hh3 = b_hh3 + gp * (2.0 * gp + 3.0 * b_halley)
        bad = ~(gap > 0.0) | ~(bp > _TINY)

    ds = newton * (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + hh3 * newton / 6.0))
    ds = np.maximum(ds, -0.5 * s)
    new = s + ds
    # Outside the bracket (or no usable step): bisect, doubling while no upper end is known.
    bisect = bad | ~((new >= lo) & (new <= hi) & (new < np.inf))
    if bisect.any():
        mid = np.where(np.isfinite(hi), 0.5 * (lo + hi), 2.0 * np.maximum(s, lo))
        new = np.where(bisect, mid, new)
    # Order-four convergence: after a step this small the error is far below rounding.
    converged = (~bisect & (np.abs(ds) <= _CONVERGED_STEP * s)) | (hi - lo <= s_tol)
    return new, lo, hi, converged


def _lower_map(x, s):
    """Jäckel's f_lower(beta) at b(x, s) and its first two derivatives in beta."""
    ax = np.abs(x)
    z = ax / (_SQRT3 * s)
    y = z * z
    s2 = s * s
    big_phi = ndtr(-z)
    phi = _INV_SQRT_2PI * np.exp(-0.5 * y)
    fpp = (_PI_OVER_6 * y / (s2 * s) * big_phi
           * (8.0 * _SQRT3 * s * ax + (3.0 * s2 * (s2 - 8.0) - 8.0 * x * x) * big_phi / phi)
           * np.exp(2.0 * y + 0.25 * s2))
    phi2 = big_phi * big_phi
    fp = _TWO_PI * y * phi2 * np.exp(y + 0.125 * s2)
    f = _TWO_PI_OVER_SQRT27 * ax * (phi2 * big_phi)
    return f, fp, fpp


def _inverse_lower_map(x, f):
    ax = np.abs(x)
    return np.abs(x / (_SQRT3 * ndtri(np.cbrt(f / (_TWO_PI_OVER_SQRT27 * ax)))))


def _upper_map(x, s):
    """Jäckel's f_upper(beta) = N(-s/2) at b(x, s) and its first two derivatives in beta."""
    f = ndtr(-0.5 * s)
    w = (x / s) ** 2
    fp = -0.5 * np.exp(0.5 * w)
    fpp = _SQRT_PI_OVER_2 * np.exp(w + 0.125 * s * s) * w / s
    return f, fp, fpp


def _rational_cubic(x, x_l, x_r, y_l, y_r, d_l, d_r, r):
    """Delbourgo–Gregory rational cubic through (x_l, y_l), (x_r, y_r) with end slopes."""
    h = x_r - x_l
    t = (x - x_l) / h
    omt = 1.0 - t
    t2, omt2 = t * t, omt * omt
    cubic = ((y_r * t2 * t + (r * y_r - h * d_r) * t2 * omt + (r * y_l + h * d_l) * t * omt2
              + y_l * omt2 * omt) / (1.0 + (r - 3.0) * t * omt))
    out = np.where(r >= _R_MAX, y_r * t + y_l * omt, cubic)
    return np.where(h == 0.0, 0.5 * (y_l + y_r), out)


def _r_from(numerator, denominator):
    r = numerator / denominator
    r = np.where(np.abs(denominator) < _TINY, np.where(numerator > 0, _R_MAX, _R_MIN), r)
    return np.where(np.abs(numerator) < _TINY, 0.0, r)


def _convex_r_left(x_l, x_r, y_l, y_r, d_l, d_r, second_l, *, prefer_shape):
    h = x_r - x_l
    slope = (y_r - y_l) / h
    r = _r_from(0.5 * h * second_l + (d_r - d_l), slope - d_l)
    return np.maximum(r, _r_min(d_l, d_r, slope, prefer_shape))


def _convex_r_right(x_l, x_r, y_l, y_r, d_l, d_r, second_r, *, prefer_shape):
    h = x_r - x_l
    slope = (y_r - y_l) / h
    r = _r_from(0.5 * h * second_r + (d_r - d_l), d_r - slope)
    return np.maximum(r, _r_min(d_l, d_r, slope, prefer_shape))


def _r_min(d_l, d_r, s, prefer_shape):
    """Smallest control parameter that keeps the interpolant monotone/convex as the data is."""
    monotonic = (d_l * s >= 0) & (d_r * s >= 0)
    convex = (d_l <= s) & (s <= d_r)
    concave = (d_l >= s) & (s >= d_r)
    s_zero = np.abs(s) < _TINY
    r1 = np.where(monotonic & ~s_zero, (d_r + d_l) / s, -np.inf)
    d_r_m_d_l, d_r_m_s, s_m_d_l = d_r - d_l, d_r - s, s - d_l
    edge = (np.abs(s_m_d_l) < _TINY) | (np.abs(d_r_m_s) < _TINY)
    curved = convex | concave
    r2 = np.where(
        curved & ~edge,
        np.maximum(np.abs(d_r_m_d_l / d_r_m_s), np.abs(d_r_m_d_l / s_m_d_l)),
        -np.inf,
    )
    if prefer_shape:
        r1 = np.where(monotonic & s_zero, _R_MAX, r1)
        r2 = np.where((curved & edge) | (~curved & monotonic), _R_MAX, r2)
    r = np.maximum(_R_MIN, np.maximum(r1, r2))
    return np.where(monotonic | curved, r, _R_MIN)


# --------------------------------------------------------------------------- polars helpers


def chain_iv(frame: pl.DataFrame, r: float | pl.Expr, q: float | pl.Expr = 0.0, *,
             tol: float = 1e-8) -> pl.DataFrame:
    """Fill ``iv, delta, gamma, vega, theta, rho, iv_null_reason`` and ``source='computed'``.

    Reads ``option_price, underlying_price, strike, expiration (Date), as_of (Date),
    contract_type ('call'|'put')``; other columns pass through, the filled ones are replaced.
    ``t = (expiration - as_of).days / 365`` (ACT/365). ``r`` and ``q`` are continuous rates,
    a number or an expression over the frame (e.g. ``pl.col("dividend_yield")``). Greeks are
    in the lake's market units (``enrich.bsm.MARKET_UNITS``: vega per vol point, theta per
    calendar day, rho per rate point), like the provider's snapshot greeks, and are null
    wherever ``iv`` is; ``iv_null_reason`` is a :class:`NullReason` label there.
    """
    days = (pl.col("expiration") - pl.col("as_of")).dt.total_days()
    cols = frame.select(
        price=pl.col("option_price").cast(pl.Float64),
        s=pl.col("underlying_price").cast(pl.Float64),
        k=pl.col("strike").cast(pl.Float64),
        t=days.cast(pl.Float64) / 365.0,
        r=_as_float_expr(r),
        q=_as_float_expr(q),
        kind=pl.col("contract_type").cast(pl.String),
    )
    kind = cols["kind"]
    unknown = (kind.is_not_null() & ~kind.is_in(["call", "put"])).to_numpy()
    price = _numpy(cols["price"])
    price[kind.is_null().to_numpy()] = np.nan
    out = compute_iv_greeks(
        price, _numpy(cols["s"]), _numpy(cols["k"]), _numpy(cols["t"]), _numpy(cols["r"]),
        _numpy(cols["q"]), (kind == "call").fill_null(False).to_numpy(), tol=tol,
    )
    reason = out["reason"]
    reason[unknown] = NullReason.UNKNOWN_CONTRACT_TYPE
    out = to_market_units(out)
    filled = {name: pl.Series(name, np.where(unknown, np.nan, out[name])).fill_nan(None)
              for name in ("iv", *GREEKS)}
    labels = {int(c): c.label for c in NullReason}
    return frame.with_columns(
        *filled.values(),
        pl.Series("iv_null_reason", reason).replace_strict(labels, return_dtype=pl.String),
        source=pl.lit("computed"),
    )


def _as_float_expr(value: float | pl.Expr) -> pl.Expr:
    expr = value if isinstance(value, pl.Expr) else pl.lit(float(value))
    return expr.cast(pl.Float64)


def _numpy(series: pl.Series) -> np.ndarray:
    # A writable float copy with nulls as NaN.
    return series.cast(pl.Float64).fill_null(np.nan).to_numpy().astype(np.float64, copy=True)
