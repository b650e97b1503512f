"""The sample provider's randomness: a counter-based hash (splitmix64 of the symbol's key,
a purpose, a day, a slot) turned into uniform and normal draws, computed only for the days
asked for, and the purposes the draws are tagged with. (The daily returns' PCG64 stream is
in ``prices``.)
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
from scipy.special import ndtri

# Purposes of the random draws. Each has its own numbers, so changing one never shifts another.
_RET, _DAY, _GAP, _HIGH, _LOW, _VWAP, _VOL = 1, 2, 3, 4, 5, 6, 7
_I_STEP, _I_WICK, _I_VOL, _I_VWAP = 11, 12, 13, 14
_N_COUNT, _N_DAY, _N_TIME, _N_ID, _N_SENT, _N_TITLE, _N_PUB = 21, 22, 23, 24, 25, 26, 27
_DIV, _EARN, _OI, _OPT, _FAIL, _PROFILE, _CURVE, _QUOTE = 31, 32, 33, 34, 35, 36, 37, 38
# The draws _daily makes per day and _news_frame per item, as columns: hashed against a row of
# day (item) hashes they give one contiguous row of draws per purpose, in one call.
_DAY_PURPOSES = np.array([_GAP, _HIGH, _LOW, _VWAP, _VOL])[:, None]
_NEWS_PURPOSES = np.array([_N_SENT, _N_TITLE, _N_PUB])[:, None]


# ----------------------------------------------------------------------------- hashing


def _stable_key(text: str) -> int:
    """A 64-bit key that is the same in every process and on every machine."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1
# The same constants as 0-d uint64 arrays, which numpy combines with arrays faster than scalars.
_GOLDEN_U, _MIX1_U, _MIX2_U, _SH11, _SH27, _SH30, _SH31 = (
    np.array(v, dtype=np.uint64) for v in (_GOLDEN, _MIX1, _MIX2, 11, 27, 30, 31))


def _mix(*parts) -> np.ndarray:
    """splitmix64 folded over the parts (ints or int arrays, broadcast); at least 1-d.

    Python-int parts fold in Python until the first array part: the symbol key and purpose
    lead most calls, and numpy costs about a microsecond per operation even on one value.
    uint64 array arithmetic wraps silently, as the hash wants."""
    return _mix_on(0, *parts)


def _mix_on(h: int | np.ndarray, *parts) -> np.ndarray:
    """The fold of ``_mix`` carried on from ``h``, the hash of some leading parts:
    ``_mix_on(_mix(a, b), c) == _mix(a, b, c)``, so draws that share a prefix hash it once."""
    for part in parts:
        x: int | np.ndarray
        if isinstance(part, int) and isinstance(h, int):
            x = h ^ ((part + _GOLDEN) & _MASK64)
            x = ((x ^ (x >> 30)) * _MIX1) & _MASK64
            x = ((x ^ (x >> 27)) * _MIX2) & _MASK64
            h = x ^ (x >> 31)
        else:
            x = h ^ (np.asarray(part).astype(np.uint64) + _GOLDEN_U)
            x = (x ^ (x >> _SH30)) * _MIX1_U
            x = (x ^ (x >> _SH27)) * _MIX2_U
            h = x ^ (x >> _SH31)
    return np.array([h], dtype=np.uint64) if isinstance(h, int) else np.atleast_1d(h)


def _unit(h: np.ndarray) -> np.ndarray:
    """Hashes -> uniforms in (0, 1)."""
    return ((h >> _SH11).astype(np.float64) + 0.5) * (1.0 / 2**53)


def _uniform(*parts) -> np.ndarray:
    return _unit(_mix(*parts))


def _normal(*parts) -> np.ndarray:
    return ndtri(_uniform(*parts))


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLE_SHIFTS = np.arange(60, -4, -4, dtype=np.uint64)


def _hex_ids(h: np.ndarray, prefix: str = "") -> pl.Series:
    """uint64 hashes -> ``prefix`` + 16 lower-case hex digits: a few (a refresh's window) by
    Python formatting, many (a history) written into a byte matrix (no Python loop, no
    polars expression), which costs more to set up."""
    if len(h) <= 64:
        return pl.Series([f"{prefix}{x:016x}" for x in h.tolist()], dtype=pl.String)
    digits = _HEX_DIGITS[((h[:, None] >> _NIBBLE_SHIFTS) & np.uint64(15)).astype(np.intp)]
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    out = np.concatenate((np.broadcast_to(head, (len(h), len(head))), digits), axis=1)
    return pl.Series(out.view(f"S{out.shape[1]}").ravel()).cast(pl.String)
