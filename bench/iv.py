"""Implied volatility + greeks: vectorised solver against a scalar brentq reference, and the
choice of American method (enrich.quant.american) measured.

    python bench/iv.py [--n 1000000] [--sample 2000] [--seed 7] [--american 20000]

Builds n European options on a random grid (moneyness 0.5-2, expiry 1 day-3 years, vol
1%-300%, calls and puts, r 0-6%, q 0 or 0-5%), prices them with ``enrich.quant.bsm``, then times
``compute_iv_greeks`` on all of them (median of 3) and a per-option ``scipy.optimize.brentq``
solve plus greeks on a subsample, and reports options per second for both and the ratio. It
checks that both agree within 1e-8 wherever both return a volatility. Runs on one core.

American exercise, the two candidate methods on American prices (listed-option grid: r 0-5.5 %,
q 0 or 0-3 %, 1 week-1 year, strikes within 2 standard deviations of the forward, vol
12-60 %): the **OTM-only** path (European IV of out-of-the-money options, calls above the
forward, puts below) and the **American pricer** (``american_iv_greeks``). Speed of each
(options per second, medians of 3), and their errors against sigma on a subsample priced by a
4,001-step tree; then the difference between the two on the sample provider's chains.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import brentq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enrich.quant.american import (  # noqa: E402
    american_iv_greeks,
    early_exercise_premium,
    load_kernel,
)
from enrich.quant.bsm import price_and_greeks  # noqa: E402
from enrich.quant.iv import compute_iv_greeks  # noqa: E402

AGREE = 1e-8


def make_grid(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.uniform(5.0, 500.0, n)
    moneyness = np.exp(rng.uniform(math.log(0.5), math.log(2.0), n))  # s / k
    t = np.exp(rng.uniform(math.log(1 / 365), math.log(3.0), n))
    sigma = np.exp(rng.uniform(math.log(0.01), math.log(3.0), n))
    r = rng.uniform(0.0, 0.06, n)
    q = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0.0, 0.05, n))
    is_call = rng.random(n) < 0.5
    k = s / moneyness
    price = price_and_greeks(s, k, t, r, q, sigma, is_call)["price"]
    return {"price": price, "s": s, "k": k, "t": t, "r": r, "q": q, "is_call": is_call,
            "sigma": sigma}


def _bs(price_s, k, t, r, q, sigma, call):
    """Scalar BSM price with math.erfc (the reference does not share the vector code)."""
    vol_t = sigma * math.sqrt(t)
    d1 = (math.log(price_s / k) + (r - q + 0.5 * sigma * sigma) * t) / vol_t
    d2 = d1 - vol_t
    sign = 1.0 if call else -1.0
    n1 = 0.5 * math.erfc(-sign * d1 / math.sqrt(2.0))
    n2 = 0.5 * math.erfc(-sign * d2 / math.sqrt(2.0))
    return sign * (price_s * math.exp(-q * t) * n1 - k * math.exp(-r * t) * n2)


def reference_iv(price, s, k, t, r, q, call, lo=1e-4, hi=10.0):
    """brentq on the price; None where the price is not bracketed by the vol range."""
    def f(sigma):
        return _bs(s, k, t, r, q, sigma, call) - price

    f_lo, f_hi = f(lo), f(hi)
    if not (f_lo < 0.0 < f_hi):
        return None
    return brentq(f, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200)


def reference(grid: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """Scalar solves plus greeks per option; returns ivs (NaN where unsolved) and seconds."""
    n = grid["price"].size
    out = np.full(n, np.nan)
    start = time.perf_counter()
    for i in range(n):
        args = (grid["price"][i], grid["s"][i], grid["k"][i], grid["t"][i], grid["r"][i],
                grid["q"][i], bool(grid["is_call"][i]))
        sigma = reference_iv(*args)
        if sigma is not None:
            out[i] = sigma
            price_and_greeks(*args[1:6], sigma, args[6])
    return out, time.perf_counter() - start


def american_grid(n: int, seed: int) -> dict[str, np.ndarray]:
    """American options as listed: prices from BSM plus the premium of ``enrich.quant.american``
    (the speed grid); ``truth`` adds a 4,001-step tree's premium for an accuracy subsample."""
    rng = np.random.default_rng(seed)
    s = np.full(n, 100.0)
    t = np.exp(rng.uniform(math.log(7 / 365), math.log(1.0), n))
    sigma = rng.uniform(0.12, 0.6, n)
    r = rng.uniform(0.0, 0.055, n)
    q = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0.0, 0.03, n))
    is_call = rng.random(n) < 0.5
    fwd = s * np.exp((r - q) * t)
    k = fwd * np.exp(rng.uniform(-2.0, 2.0, n) * sigma * np.sqrt(t))
    return {"s": s, "k": k, "t": t, "r": r, "q": q, "sigma": sigma, "is_call": is_call,
            "otm": np.where(is_call, k >= fwd, k < fwd)}


def _priced(g: dict[str, np.ndarray], steps: int) -> np.ndarray:
    args = (g["s"], g["k"], g["t"], g["r"], g["q"])
    euro = price_and_greeks(*args, g["sigma"], g["is_call"])["price"]
    eep = early_exercise_premium(*args, g["sigma"], g["is_call"], steps=steps)
    return np.maximum(euro + eep, np.where(g["is_call"], g["s"] - g["k"], g["k"] - g["s"]))


def _median_time(fn) -> tuple[float, float]:
    wall, cpu = [], []
    for _ in range(3):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def _err(iv: np.ndarray, sigma: np.ndarray) -> str:
    e = np.abs(iv - sigma)
    ok = ~np.isnan(e)
    if not ok.any():
        return "none solved"
    return (f"max {e[ok].max():.1e}, p99 {np.percentile(e[ok], 99):.1e}, median "
            f"{np.median(e[ok]):.1e} ({ok.mean():.0%} solved)")


def otm_only_speed(grid: dict[str, np.ndarray]) -> None:
    """The OTM-only path on the European grid's out-of-the-money options."""
    fwd = grid["s"] * np.exp((grid["r"] - grid["q"]) * grid["t"])
    otm = np.where(grid["is_call"], grid["k"] >= fwd, grid["k"] < fwd)
    sub = {k: grid[k][otm] for k in ("price", "s", "k", "t", "r", "q", "is_call")}
    wall, cpu = _median_time(lambda: compute_iv_greeks(**sub))
    m = int(otm.sum())
    print(f"\nAmerican exercise, the two methods. OTM-only path (European IV of the grid's "
          f"{m:,} out-of-the-money options): {m / cpu:,.0f} options/s CPU ({m / wall:,.0f}/s "
          "wall); goal >= 1,000,000/s:", "met" if m / cpu >= 1e6 else "MISSED")


def american(n: int, seed: int, sample: int) -> None:
    load_kernel()
    g = american_grid(n, seed)
    price = _priced(g, 101)
    inp = {"s": g["s"], "k": g["k"], "t": g["t"], "r": g["r"], "q": g["q"],
           "is_call": g["is_call"]}
    otm = g["otm"]
    sub = {k: v[otm] for k, v in inp.items()}
    am_wall, am_cpu = _median_time(lambda: american_iv_greeks(price, **inp))
    am_otm_wall, am_otm_cpu = _median_time(lambda: american_iv_greeks(price[otm], **sub))
    m = int(otm.sum())
    print(f"American pricer (the chosen method) on {n:,} listed-style American options: "
          f"{n / am_cpu:,.0f} options/s CPU ({n / am_wall:,.0f}/s wall); on the {m:,} out of "
          f"the money: {m / am_otm_cpu:,.0f}/s CPU ({m / am_otm_wall:,.0f}/s wall)")
    # Accuracy against a much finer tree (4,001 steps) on a subsample.
    pick = np.random.default_rng(seed + 2).choice(n, size=min(sample, n), replace=False)
    h = {k: v[pick] for k, v in g.items()}
    truth = _priced(h, 4001)
    hin = {k: h[k] for k in ("s", "k", "t", "r", "q", "is_call")}
    euro_iv = compute_iv_greeks(truth, **hin)["iv"]
    am_iv = american_iv_greeks(truth, **hin)["iv"]
    o = h["otm"]
    print(f"  against sigma, prices from a 4,001-step tree ({len(pick):,} options):")
    print(f"    OTM-only (European) on OTM: {_err(euro_iv[o], h['sigma'][o])}")
    print(f"    American pricer on OTM:     {_err(am_iv[o], h['sigma'][o])}")
    print(f"    American pricer on ITM:     {_err(am_iv[~o], h['sigma'][~o])}")
    sample_chains()


def sample_chains() -> None:
    """The difference between the two methods on the sample provider's chains: European and
    American IV of the same OTM quote mids, same rate and dividend yield."""
    import datetime as dt

    import polars as pl

    from enrich.providers.sample.provider import SampleProvider
    from enrich.quant import rates
    from enrich.quant.snapshots import price_chain
    from enrich.quant.vol_summary import otm_expr
    from enrich.schemas import DIVIDENDS, SPLITS
    from enrich.symbols import DEMO_UNIVERSE

    day = dt.date(2025, 6, 18)
    p = SampleProvider(clock=lambda: dt.datetime(2025, 6, 20, 22, tzinfo=dt.UTC))
    curves = p.treasury_yields(day - dt.timedelta(days=10), day)
    chains = []
    for sym in (s.symbol for s in DEMO_UNIVERSE):
        chain = p.option_chain(sym, day)
        if chain.height:
            chains.append(price_chain(chain, curves=curves, dividends=DIVIDENDS.empty(),
                                      splits=SPLITS.empty(), fallback_rate=0.04))
    rows = pl.concat(chains).filter(otm_expr() & pl.col("iv").is_not_null())
    t = ((rows["expiration"] - rows["as_of"]).dt.total_days() / 365).to_numpy()
    euro = compute_iv_greeks(rows["option_price"].to_numpy(), rows["underlying_price"].to_numpy(),
                             rows["strike"].to_numpy(), t, rows["rate"].to_numpy(),
                             rows["dividend_yield"].to_numpy(),
                             (rows["contract_type"] == "call").to_numpy())["iv"]
    diff = np.abs(euro - rows["iv"].to_numpy())
    puts = (rows["contract_type"] == "put").to_numpy()
    ok = ~np.isnan(diff)
    print(f"  sample chains of {day} ({len(chains)} underlyings, {rows.height:,} OTM contracts, "
          f"rates {rates.CURVE} {rows['rate'].min():.2%}-{rows['rate'].max():.2%}): "
          f"|European - American| IV max {diff[ok].max():.1e}, median "
          f"{np.median(diff[ok]):.1e}; puts max {diff[ok & puts].max():.1e}, calls max "
          f"{diff[ok & ~puts].max():.1e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--american", type=int, default=20_000,
                    help="American options for the American-method measurements (0: skip)")
    args = ap.parse_args(argv)

    grid = make_grid(args.n, args.seed)
    inputs = {k: grid[k] for k in ("price", "s", "k", "t", "r", "q", "is_call")}
    times, cpu = [], []
    for _ in range(3):
        start, start_cpu = time.perf_counter(), time.process_time()
        res = compute_iv_greeks(**inputs)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    vec_s, vec_cpu = statistics.median(times), statistics.median(cpu)
    iv = res["iv"]
    solved = ~np.isnan(iv)
    err_true = np.abs(iv[solved] - grid["sigma"][solved])

    pick = np.random.default_rng(args.seed + 1).choice(args.n, size=args.sample, replace=False)
    sub = {k: v[pick] for k, v in grid.items()}
    start_cpu = time.process_time()
    ref_iv, ref_s = reference(sub)
    ref_cpu = time.process_time() - start_cpu
    both = ~np.isnan(ref_iv) & ~np.isnan(iv[pick])
    diff = np.abs(ref_iv[both] - iv[pick][both])

    vec_rate, vec_cpu_rate = args.n / vec_s, args.n / vec_cpu
    ref_rate, ref_cpu_rate = args.sample / ref_s, args.sample / ref_cpu
    print(f"options: {args.n:,} (seed {args.seed}); one thread; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"vectorised iv+greeks: median {vec_s * 1e3:.1f} ms wall of 3 "
          f"({', '.join(f'{x * 1e3:.0f}' for x in times)}) -> {vec_rate:,.0f} options/s; "
          f"CPU {vec_cpu * 1e3:.1f} ms -> {vec_cpu_rate:,.0f} options/s")
    print(f"  solved {solved.mean():.1%}; max |iv - true sigma| {err_true.max():.2e}")
    print(f"scalar brentq reference: {args.sample:,} options in {ref_s:.2f} s wall "
          f"-> {ref_rate:,.0f} options/s; CPU {ref_cpu:.2f} s -> {ref_cpu_rate:,.0f} options/s")
    print(f"  both solved {both.sum():,}/{args.sample:,}; max |vectorised - reference| "
          f"{diff.max():.2e}")
    ref_only = ~np.isnan(ref_iv) & np.isnan(iv[pick])
    if ref_only.any():
        noise = np.abs(ref_iv[ref_only] - sub["sigma"][ref_only])
        print(f"  reference-only solves (vectorised: below resolution): {ref_only.sum():,}; "
              f"|reference - true sigma| median {np.median(noise):.1e}, max {noise.max():.1e}")
    print(f"ratio vectorised / reference: {vec_rate / ref_rate:,.0f}x wall, "
          f"{vec_cpu_rate / ref_cpu_rate:,.0f}x CPU")
    ok = diff.max() <= AGREE
    # CPU time is the one-core figure; wall time also counts whatever else the machine runs.
    print("target >= 1,000,000 options/s on one core:",
          "met" if vec_cpu_rate >= 1e6 else "MISSED", f"(wall: {vec_rate:,.0f}/s)")
    if not ok:
        print(f"FAIL: disagreement above {AGREE:g}")
    if args.american:
        otm_only_speed(grid)
        american(args.american, args.seed, min(args.sample, 400))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
