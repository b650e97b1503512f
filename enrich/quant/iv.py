"""Implied volatility of European options under Black–Scholes–Merton, vectorised over arrays.

Conventions follow :mod:`enrich.quant.bsm`: ``t`` in years, ``r`` and ``q`` continuously compounded,
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
- ``early_exercise``: set by :mod:`enrich.quant.american` for an American price at the value of
  exercising now (or whose early-exercise premium alone exceeds its time value).

Method: P. Jäckel, "Let's be rational" (Wilmott, 2015). The price is reduced to the normalised
out-of-the-money call ``b(x, s)`` with ``x = ln(F/K) <= 0`` and total volatility
``s = sigma sqrt(t)`` (in-the-money options via put-call parity); a rational-cubic initial guess
on four branches is refined by Householder steps of order four on an objective chosen per
branch (``1/ln b`` in the lowest, ``ln(b_max - b)`` in the highest, ``b`` between), inside a
bracket that falls back to bisection. Two steps reach float64 precision almost everywhere; the
few elements that need more take up to 64. Each option is solved by compiled scalar code (numba,
cached on disk), so a chain of a few hundred contracts costs one call; ``nogil``, so threads
overlap.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any, NamedTuple

import llvmlite.binding as llvm
import numba
import numpy as np
import polars as pl
from numba import types
from numba.extending import get_cython_function_address
from numpy.typing import ArrayLike
from scipy.special import cython_special

from enrich.quant.bsm import to_market_units

__all__ = [
    "GREEKS",
    "RESOLUTION_ULPS",
    "IvResult",
    "NullReason",
    "chain_iv",
    "compute_iv_greeks",
    "implied_vol",
    "reason_labels",
    "solve_one",
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

# Steps every element takes, then the most any one element may take.
_FIRST_STEPS = 2
_MAX_STEPS = 64
# A Householder(3) step this small (relative) leaves an error far below float64 precision.
_CONVERGED_STEP = 1e-6

_PLAIN, _LOWEST, _UPPER = 0, 1, 2  # objective kinds (see _householder_step)
# Reason codes as plain ints, which the compiled code takes as constants.
_MISSING_INPUT = int(NullReason.MISSING_INPUT)
_NON_POSITIVE_INPUT = int(NullReason.NON_POSITIVE_INPUT)
_EXPIRED = int(NullReason.EXPIRED)
_BELOW_INTRINSIC = int(NullReason.BELOW_INTRINSIC)
_AT_OR_ABOVE_UPPER_BOUND = int(NullReason.AT_OR_ABOVE_UPPER_BOUND)
_TIME_VALUE_BELOW_RESOLUTION = int(NullReason.TIME_VALUE_BELOW_RESOLUTION)
_NO_CONVERGENCE = int(NullReason.NO_CONVERGENCE)


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
    arrays = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (price, s, k, t, r, q, sigma)),
        np.asarray(is_call, dtype=bool))
    out = np.empty(arrays[0].shape)
    _resolutions(*(np.ascontiguousarray(a).ravel() for a in arrays),  # type: ignore[call-arg]
                 out.ravel())  # (a numba dispatcher: it takes the kernel's own arguments)
    return out


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
    """``iv``, ``reason`` and the greeks of :func:`enrich.quant.bsm.price_and_greeks` at the solved
    volatility; every greek is NaN where ``iv`` is."""
    iv, reason, greeks = _solve(price, s, k, t, r, q, is_call, tol)
    return {"iv": iv, "reason": reason, **greeks}


# --------------------------------------------------------------------------- the solver
#
# One compiled scalar solve per element (numba, cached next to this module, ``nogil``): a
# chain of a few hundred contracts is one call, with no per-array overhead. The arithmetic is
# the same, operation for operation, as the former vectorised numpy solver, with scipy's own
# normal CDF and quantile; ``tests/test_iv_kernel.py`` holds it to that solver's results.

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


def _scipy_special(name: str) -> types.ExternalFunction:
    """scipy.special's own C function ``name`` (double -> double), callable from compiled code
    by symbol name (so numba's disk cache holds; the symbol is bound at each import): the
    kernel's normal CDF is then bit for bit the one the vectorised solver used."""
    capi: dict[str, Any] = dict(cython_special.__pyx_capi__)
    for key in (name, f"__pyx_fuse_1{name}", f"__pyx_fuse_0{name}"):
        if key in capi and '"double (double, int' in repr(capi[key]):
            symbol = f"enrich_scipy_{name}"
            llvm.add_symbol(symbol, get_cython_function_address(
                "scipy.special.cython_special", key))
            return types.ExternalFunction(symbol, types.float64(types.float64, types.intc))
    raise ImportError(f"scipy.special.cython_special has no double {name}")


_c_ndtr = _scipy_special("ndtr")
_c_ndtri = _scipy_special("ndtri")


@_jit
def _ndtr(x):
    return _c_ndtr(x, 0)


@_jit
def _ndtri(p):
    return _c_ndtri(p, 0)


@_jit
def _nmax(a, b):
    """``np.maximum`` of two scalars (NaN wins)."""
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


@_jit
def _nmin(a, b):
    """``np.minimum`` of two scalars (NaN wins)."""
    if a != a or b != b:
        return math.nan
    return a if a <= b else b


@_jit
def _greeks(s, k, t, r, q, sigma, call):
    """BSM ``(price, delta, gamma, vega, theta, rho)`` of one option (``enrich.quant.bsm``)."""
    sqrt_t = math.sqrt(t)
    vol_t = sigma * sqrt_t
    d1 = (math.log(s / k) + (r - q + 0.5 * sigma * sigma) * t) / vol_t
    d2 = d1 - vol_t
    df_r = math.exp(-r * t)
    df_q = math.exp(-q * t)
    pdf_d1 = _INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
    sign = 1.0 if call else -1.0
    nd1 = _ndtr(sign * d1)
    nd2 = _ndtr(sign * d2)
    price = sign * (s * df_q * nd1 - k * df_r * nd2)
    delta = sign * df_q * nd1
    gamma = df_q * pdf_d1 / (s * vol_t)
    vega = s * df_q * pdf_d1 * sqrt_t
    theta = (-s * df_q * pdf_d1 * sigma / (2.0 * sqrt_t)
             + sign * (q * s * df_q * nd1 - r * k * df_r * nd2))
    rho = sign * k * t * df_r * nd2
    return price, delta, gamma, vega, theta, rho


@_jit
def _resolution(price, s, x, sqrt_t, sigma, delta, vega):
    # Price rounding ~ eps * (price + s|delta|) over vega, plus the rounding of d1 and d2
    # (~ eps |d|, and |d1| + |d2| = max(2|x|/v, v) with v = sigma sqrt(t)), which moves the
    # price by vega / sqrt(t) per unit of d. The 16 tiny / eps floor keeps prices that have
    # gone subnormal (no relative precision left) from ever counting as resolved.
    v = sigma * sqrt_t
    d_sum = _nmax(2.0 * abs(x) / v, v)
    noise = (price + s * abs(delta) + 16.0 * _TINY / _EPS) / vega + d_sum / sqrt_t
    return RESOLUTION_ULPS * _EPS * noise


@_jit
def _resolutions(price, s, k, t, r, q, sigma, call, out):
    for i in range(price.size):
        g = _greeks(s[i], k[i], t[i], r[i], q[i], sigma[i], call[i])
        x = math.log(s[i] / k[i]) + (r[i] - q[i]) * t[i]
        out[i] = _resolution(price[i], s[i], x, math.sqrt(t[i]), sigma[i], g[1], g[3])


@_jit
def _solve_all(p, s, k, t, r, q, call, tol, iv, reason, delta, gamma, vega, theta, rho):
    for i in range(p.size):
        res = solve_one(p[i], s[i], k[i], t[i], r[i], q[i], call[i], tol)
        iv[i], reason[i] = res[0], res[1]
        delta[i], gamma[i], vega[i], theta[i], rho[i] = res[2], res[3], res[4], res[5], res[6]


@_jit
def solve_one(p, s, k, t, r, q, call, tol):
    """``(iv, reason, delta, gamma, vega, theta, rho)`` of one European price (NaN and a
    reason code where null; see the module docstring). Compiled: for other compiled code
    (``enrich.quant.american``); from Python, call :func:`compute_iv_greeks`."""
    nan = math.nan
    sp = s * math.exp(-q * t)  # discounted underlying
    kp = k * math.exp(-r * t)  # discounted strike
    forward_gap = sp - kp if call else kp - sp
    time_value = p - _nmax(forward_gap, 0.0)  # the OTM twin's price, by parity
    noise = (_BOUND_ULPS * _EPS) * (sp + kp) * (1.0 if forward_gap > 0.0 else 0.0)
    x = -abs(math.log(s / k) + (r - q) * t)  # ln(F/K) of the out-of-the-money twin
    bmax = math.exp(0.5 * x)
    beta = time_value / math.sqrt(sp * kp)
    code = 0
    if not (math.isfinite(p) and math.isfinite(s) and math.isfinite(k) and math.isfinite(t)
            and math.isfinite(r) and math.isfinite(q)):
        code = _MISSING_INPUT
    elif p <= 0 or s <= 0 or k <= 0:
        code = _NON_POSITIVE_INPUT
    elif t <= 0:
        code = _EXPIRED
    elif p >= (sp if call else kp):
        code = _AT_OR_ABOVE_UPPER_BOUND
    elif time_value < -noise:
        code = _BELOW_INTRINSIC
    elif time_value <= noise or not beta >= _TINY or not beta < bmax:
        # Within rounding of a bound, or subnormal (no relative precision left).
        code = _TIME_VALUE_BELOW_RESOLUTION
    if code != 0:
        return nan, code, nan, nan, nan, nan, nan
    sqrt_t = math.sqrt(t)
    # Solver accuracy in total volatility: a small fraction of the tolerance asked for.
    total_vol, converged = _normalised_vol(beta, x, bmax, 0.25 * tol * sqrt_t)
    sigma = total_vol / sqrt_t
    _, delta, gamma, vega, theta, rho = _greeks(s, k, t, r, q, sigma, call)
    if not _resolution(p, s, x, sqrt_t, sigma, delta, vega) <= tol:
        return nan, _TIME_VALUE_BELOW_RESOLUTION, nan, nan, nan, nan, nan
    if not (converged and math.isfinite(sigma)):
        return nan, _NO_CONVERGENCE, nan, nan, nan, nan, nan
    return sigma, 0, delta, gamma, vega, theta, rho


@_jit
def _nblack(x, s, ehp, ehm):
    """Normalised out-of-the-money call ``e^{x/2} N(x/s + s/2) - e^{-x/2} N(x/s - s/2)``."""
    h = x / s
    half = 0.5 * s
    return ehp * _ndtr(h + half) - ehm * _ndtr(h - half)


@_jit
def _nvega(x, s):
    """d b / d s."""
    h = x / s
    return _INV_SQRT_2PI * math.exp(-0.5 * (h * h + 0.25 * s * s))


@_jit
def _normalised_vol(beta, x, bmax, s_tol):
    """Solve ``b(x, s) = beta`` for ``s`` (x <= 0, 0 < beta < e^{x/2}); also a converged flag.

    ``s_tol`` is the absolute accuracy in ``s`` that is enough: a bracket that narrow counts as
    converged even where rounding noise in ``b`` keeps the steps from shrinking. Jäckel's four
    branches each have their own guess and objective.
    """
    ehm = 1.0 / bmax
    s_c = math.sqrt(-2.0 * x)  # the inflection point of b in s, where d1 = 0
    b_c = 0.5 * bmax - ehm * _ndtr(-s_c)
    v_c = _INV_SQRT_2PI * bmax
    if beta < b_c:
        return _lower_half(beta, x, bmax, ehm, s_c, b_c, v_c, s_tol)
    return _upper_half(beta, x, bmax, ehm, s_c, b_c, v_c, s_tol)


@_jit
def _lower_half(beta, x, bmax, ehm, s_c, b_c, v_c, s_tol):
    s_l = s_c - b_c / v_c
    b_l = _nblack(x, s_l, bmax, ehm)
    if beta < b_l:  # below b_l: rational guess in Jäckel's f_lower map
        f_l, fp_l, fpp_l = _lower_map(x, s_l)
        r_ll = _convex_r_right(0.0, b_l, 0.0, f_l, 1.0, fp_l, fpp_l, True)
        f = _rational_cubic(beta, 0.0, b_l, 0.0, f_l, 1.0, fp_l, r_ll)
        tt = beta / b_l
        if not f > 0.0:
            f = (f_l * tt + b_l * (1.0 - tt)) * tt
        guess = _inverse_lower_map(x, f)
        return _iterate(_LOWEST, beta, x, bmax, ehm, guess, 0.0, s_l, s_tol)
    # between b_l and b_c: rational guess in s directly
    inv_vl, inv_vc = 1.0 / _nvega(x, s_l), 1.0 / v_c
    r_lm = _convex_r_right(b_l, b_c, s_l, s_c, inv_vl, inv_vc, 0.0, False)
    guess = _rational_cubic(beta, b_l, b_c, s_l, s_c, inv_vl, inv_vc, r_lm)
    return _iterate(_PLAIN, beta, x, bmax, ehm, guess, s_l, s_c, s_tol)


@_jit
def _upper_half(beta, x, bmax, ehm, s_c, b_c, v_c, s_tol):
    s_h = s_c + (bmax - b_c) / v_c if v_c > _TINY else s_c
    b_h = _nblack(x, s_h, bmax, ehm)
    if beta <= b_h:  # between b_c and b_h: rational guess in s directly
        inv_vc, inv_vh = 1.0 / v_c, 1.0 / _nvega(x, s_h)
        r_hm = _convex_r_left(b_c, b_h, s_c, s_h, inv_vc, inv_vh, 0.0, False)
        guess = _rational_cubic(beta, b_c, b_h, s_c, s_h, inv_vc, inv_vh, r_hm)
        return _iterate(_PLAIN, beta, x, bmax, ehm, guess, s_c, s_h, s_tol)
    # above b_h: rational guess in Jäckel's f_upper map
    f_h, fp_h, fpp_h = _upper_map(x, s_h)
    r_hh = _convex_r_left(b_h, bmax, f_h, 0.0, fp_h, -0.5, fpp_h, True)
    f = _rational_cubic(beta, b_h, bmax, f_h, 0.0, fp_h, -0.5, r_hh)
    if not abs(fpp_h) < _SQRT_DBL_MAX:
        f = -1.0
    width = bmax - b_h
    tt = (beta - b_h) / width
    if not f > 0.0:
        f = (f_h * (1.0 - tt) + 0.5 * width * tt) * (1.0 - tt)
    guess = -2.0 * _ndtri(f)
    # ln(b_max - b) pays off only near the maximum; below half of it, b itself is better.
    kind = _UPPER if beta > 0.5 * bmax else _PLAIN
    return _iterate(kind, beta, x, bmax, ehm, guess, s_h, math.inf, s_tol)


@_jit
def _iterate(kind, beta, x, bmax, ehm, s, lo, hi, s_tol):
    """Householder steps for one objective kind: two always, then until converged."""
    aux = math.log(beta) if kind == _LOWEST else math.log(bmax - beta) if kind == _UPPER \
        else 0.0
    if s == s:  # np.clip: NaN stays NaN
        s = min(max(s, lo), hi)
    converged = False
    for step in range(_MAX_STEPS):
        if step >= _FIRST_STEPS and converged:
            break
        s, lo, hi, converged = _householder_step(kind, beta, x, bmax, ehm, aux, s, lo, hi,
                                                 s_tol)
    return s, converged


@_jit
def _householder_step(kind, beta, x, bmax, ehm, aux, s, lo, hi, s_tol):
    """One safeguarded Householder(3) step; returns s, the bracket, and a converged flag.

    Objectives (Jäckel): b - beta (plain); 1/ln(b) - 1/ln(beta) (lowest, ``aux = ln beta``);
    ln(b_max - beta) - ln(b_max - b) (upper, ``aux = ln(b_max - beta)``).
    """
    h = x / s
    half = 0.5 * s
    b = bmax * _ndtr(h + half) - ehm * _ndtr(h - half)
    hh = h * h
    bp = _INV_SQRT_2PI * math.exp(-0.5 * (hh + half * half))
    if b > beta:
        hi = _nmin(hi, s)
    if b < beta:
        lo = _nmax(lo, s)
    hs = hh / s
    b_halley = hs - 0.5 * half  # b'' / b'
    b_hh3 = b_halley * b_halley - 3.0 * (hs / s) - 0.25  # b''' / b'
    if kind == _PLAIN:
        newton = (beta - b) / bp
        halley, hh3 = b_halley, b_hh3
        bad = not bp > 0.0
    elif kind == _LOWEST:
        ln_b = math.log(b)
        bpob = bp / b
        newton = (aux - ln_b) * ln_b / aux / bpob
        two = 1.0 + 2.0 / ln_b
        halley = b_halley - bpob * two
        hh3 = (b_hh3 + 2.0 * bpob * bpob * (1.0 + 3.0 / ln_b * (1.0 + 1.0 / ln_b))
               - 3.0 * b_halley * bpob * two)
        bad = not b > 0.0 or not bp > 0.0
    else:
        gap = bmax - b
        gp = bp / gap
        newton = (math.log(gap) - aux) / gp
        halley = b_halley + gp
        hh3 = b_hh3 + gp * (2.0 * gp + 3.0 * b_halley)
        bad = not gap > 0.0 or not bp > _TINY

    ds = newton * (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + hh3 * newton / 6.0))
    ds = _nmax(ds, -0.5 * s)
    new = s + ds
    # Outside the bracket (or no usable step): bisect, doubling while no upper end is known.
    bisect = bad or not (new >= lo and new <= hi and new < math.inf)
    if bisect:
        new = 0.5 * (lo + hi) if math.isfinite(hi) else 2.0 * _nmax(s, lo)
    # Order-four convergence: after a step this small the error is far below rounding.
    converged = (not bisect and abs(ds) <= _CONVERGED_STEP * s) or hi - lo <= s_tol
    return new, lo, hi, converged


@_jit
def _lower_map(x, s):
    """Jäckel's f_lower(beta) at b(x, s) and its first two derivatives in beta."""
    ax = abs(x)
    z = ax / (_SQRT3 * s)
    y = z * z
    s2 = s * s
    big_phi = _ndtr(-z)
    phi = _INV_SQRT_2PI * math.exp(-0.5 * y)
    fpp = (_PI_OVER_6 * y / (s2 * s) * big_phi
           * (8.0 * _SQRT3 * s * ax + (3.0 * s2 * (s2 - 8.0) - 8.0 * x * x) * big_phi / phi)
           * math.exp(2.0 * y + 0.25 * s2))
    phi2 = big_phi * big_phi
    fp = _TWO_PI * y * phi2 * math.exp(y + 0.125 * s2)
    f = _TWO_PI_OVER_SQRT27 * ax * (phi2 * big_phi)
    return f, fp, fpp


@_jit
def _inverse_lower_map(x, f):
    ax = abs(x)
    return abs(x / (_SQRT3 * _ndtri(np.cbrt(f / (_TWO_PI_OVER_SQRT27 * ax)))))


@_jit
def _upper_map(x, s):
    """Jäckel's f_upper(beta) = N(-s/2) at b(x, s) and its first two derivatives in beta."""
    f = _ndtr(-0.5 * s)
    w = x / s
    w = w * w  # as numpy's ** 2 (numba's pow may differ in the last bit)
    fp = -0.5 * math.exp(0.5 * w)
    fpp = _SQRT_PI_OVER_2 * math.exp(w + 0.125 * s * s) * w / s
    return f, fp, fpp


@_jit
def _rational_cubic(x, x_l, x_r, y_l, y_r, d_l, d_r, r):
    """Delbourgo–Gregory rational cubic through (x_l, y_l), (x_r, y_r) with end slopes."""
    h = x_r - x_l
    if h == 0.0:
        return 0.5 * (y_l + y_r)
    t = (x - x_l) / h
    omt = 1.0 - t
    if r >= _R_MAX:
        return y_r * t + y_l * omt
    t2, omt2 = t * t, omt * omt
    return ((y_r * t2 * t + (r * y_r - h * d_r) * t2 * omt + (r * y_l + h * d_l) * t * omt2
             + y_l * omt2 * omt) / (1.0 + (r - 3.0) * t * omt))


@_jit
def _r_from(numerator, denominator):
    if abs(numerator) < _TINY:
        return 0.0
    if abs(denominator) < _TINY:
        return _R_MAX if numerator > 0 else _R_MIN
    return numerator / denominator


@_jit
def _convex_r_left(x_l, x_r, y_l, y_r, d_l, d_r, second_l, prefer_shape):
    h = x_r - x_l
    slope = (y_r - y_l) / h
    r = _r_from(0.5 * h * second_l + (d_r - d_l), slope - d_l)
    return _nmax(r, _r_min(d_l, d_r, slope, prefer_shape))


@_jit
def _convex_r_right(x_l, x_r, y_l, y_r, d_l, d_r, second_r, prefer_shape):
    h = x_r - x_l
    slope = (y_r - y_l) / h
    r = _r_from(0.5 * h * second_r + (d_r - d_l), d_r - slope)
    return _nmax(r, _r_min(d_l, d_r, slope, prefer_shape))


@_jit
def _r_min(d_l, d_r, s, prefer_shape):
    """Smallest control parameter that keeps the interpolant monotone/convex as the data is."""
    monotonic = d_l * s >= 0 and d_r * s >= 0
    convex = d_l <= s and s <= d_r
    concave = d_l >= s and s >= d_r
    s_zero = abs(s) < _TINY
    curved = convex or concave
    if not (monotonic or curved):
        return _R_MIN
    r1 = (d_r + d_l) / s if monotonic and not s_zero else -math.inf
    d_r_m_d_l, d_r_m_s, s_m_d_l = d_r - d_l, d_r - s, s - d_l
    edge = abs(s_m_d_l) < _TINY or abs(d_r_m_s) < _TINY
    r2 = -math.inf
    if curved and not edge:
        r2 = _nmax(abs(d_r_m_d_l / d_r_m_s), abs(d_r_m_d_l / s_m_d_l))
    if prefer_shape:
        if monotonic and s_zero:
            r1 = _R_MAX
        if (curved and edge) or (not curved and monotonic):
            r2 = _R_MAX
    return _nmax(_R_MIN, _nmax(r1, r2))


def _solve(price, s, k, t, r, q, is_call, tol):
    arrays = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (price, s, k, t, r, q)),
        np.asarray(is_call, dtype=bool),
    )
    shape = arrays[0].shape
    p_, s_, k_, t_, r_, q_, call = (np.ascontiguousarray(a).ravel() for a in arrays)
    n = p_.size
    iv = np.empty(n)
    reason = np.empty(n, dtype=np.int8)
    greeks = {g: np.empty(n) for g in GREEKS}
    _solve_all(p_, s_, k_, t_, r_, q_, call, float(tol), iv, reason, *greeks.values())
    greeks = {name: values.reshape(shape) for name, values in greeks.items()}
    return iv.reshape(shape), reason.reshape(shape), greeks


# --------------------------------------------------------------------------- polars helpers


def chain_iv(frame: pl.DataFrame, r: float | pl.Expr, q: float | pl.Expr = 0.0, *,
             tol: float = 1e-8) -> pl.DataFrame:
    """Fill ``iv, delta, gamma, vega, theta, rho, iv_null_reason`` and ``source='computed'``.

    Reads ``option_price, underlying_price, strike, expiration (Date), as_of (Date),
    contract_type ('call'|'put')``; other columns pass through, the filled ones are replaced.
    ``t = (expiration - as_of).days / 365`` (ACT/365). ``r`` and ``q`` are continuous rates,
    a number or an expression over the frame (e.g. ``pl.col("dividend_yield")``). Greeks are
    in the lake's market units (``enrich.quant.bsm.MARKET_UNITS``: vega per vol point, theta per
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
