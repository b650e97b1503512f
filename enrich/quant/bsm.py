"""Black–Scholes–Merton pricing and greeks, vectorised over numpy arrays.

Conventions: ``t`` in years (ACT/365), ``r`` the continuously compounded risk-free rate,
``q`` the continuous dividend yield, ``sigma`` annualised volatility. ``is_call`` is a boolean
array (True for calls). Greeks per one unit of the underlying:
vega per 1.00 of volatility, theta per year, rho per 1.00 of rate.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _ncdf(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(x)


def _npdf(x: np.ndarray) -> np.ndarray:
    return _INV_SQRT_2PI * np.exp(-0.5 * x * x)


def price_and_greeks(
    s: ArrayLike, k: ArrayLike, t: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    is_call: ArrayLike,
) -> dict[str, np.ndarray]:
    """Return ``price, delta, gamma, vega, theta, rho`` arrays (broadcast over inputs)."""
    s, k, t, r, q, sigma = (np.asarray(a, dtype=np.float64) for a in (s, k, t, r, q, sigma))
    call = np.asarray(is_call, dtype=bool)
    sqrt_t = np.sqrt(t)
    vol_t = sigma * sqrt_t
    d1 = (np.log(s / k) + (r - q + 0.5 * sigma * sigma) * t) / vol_t
    d2 = d1 - vol_t
    df_r = np.exp(-r * t)
    df_q = np.exp(-q * t)
    pdf_d1 = _npdf(d1)
    sign = np.where(call, 1.0, -1.0)
    nd1 = _ncdf(sign * d1)
    nd2 = _ncdf(sign * d2)
    price = sign * (s * df_q * nd1 - k * df_r * nd2)
    delta = sign * df_q * nd1
    gamma = df_q * pdf_d1 / (s * vol_t)
    vega = s * df_q * pdf_d1 * sqrt_t
    theta = (
        -s * df_q * pdf_d1 * sigma / (2.0 * sqrt_t)
        + sign * (q * s * df_q * nd1 - r * k * df_r * nd2)
    )
    rho = sign * k * t * df_r * nd2
    return {"price": price, "delta": delta, "gamma": gamma, "vega": vega, "theta": theta,
            "rho": rho}


# The lake's options_iv convention is the market's (and Massive's): vega per one volatility
# point (0.01), theta per calendar day, rho per one rate point (0.01).
MARKET_UNITS = {"delta": 1.0, "gamma": 1.0, "vega": 0.01, "theta": 1.0 / 365.0, "rho": 0.01}


def to_market_units(greeks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rescale ``price_and_greeks`` output (per unit vol / per year) to the lake's units."""
    return {k: (v * MARKET_UNITS[k] if k in MARKET_UNITS else v) for k, v in greeks.items()}
