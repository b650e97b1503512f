"""Write ``iv_before_kernel.parquet``: what the vectorised numpy solver (the code before the
compiled kernel, commit f62721f) returned, for ``tests/test_iv_kernel.py`` to compare against.

    PYTHONPATH=. .venv/bin/python tests/golden/make_iv_golden.py

Three parts (``part`` column): ``chain`` — ``snapshots.price_chain`` on sample-provider chains
of four sessions in different rate regimes (IV, parity yield, delta per contract); ``european``
— ``compute_iv_greeks`` on a wide random grid; ``american`` — ``american_iv_greeks`` on a
listed-style American grid. The grids are rebuilt from their seeds by the test
(``tests/test_iv_kernel.py``: ``european_grid``, ``american_grid``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from enrich.quant.american import american_iv_greeks  # noqa: E402
from enrich.quant.iv import compute_iv_greeks  # noqa: E402
from tests.test_iv_kernel import (  # noqa: E402
    american_grid,
    european_grid,
    priced_chains,
)


def main() -> None:
    chains = priced_chains().select(
        pl.lit("chain").alias("part"), "symbol", "as_of", "contract", "iv", "dividend_yield",
        "delta", "iv_null_reason")
    eu = european_grid()
    res = compute_iv_greeks(**{k: eu[k] for k in ("price", "s", "k", "t", "r", "q", "is_call")})
    european = pl.DataFrame({"part": "european", "iv": res["iv"], "delta": res["delta"],
                             "reason": res["reason"].astype("int8")})
    am = american_grid()
    res = american_iv_greeks(**{k: am[k] for k in ("price", "s", "k", "t", "r", "q",
                                                   "is_call")})
    american = pl.DataFrame({"part": "american", "iv": res["iv"], "delta": res["delta"],
                             "eep": res["eep"], "reason": res["reason"].astype("int8")})
    out = pl.concat([chains, european, american], how="diagonal_relaxed")
    out.write_parquet(Path(__file__).with_name("iv_before_kernel.parquet"),
                      compression="zstd", compression_level=19)
    print(out.group_by("part").len())


if __name__ == "__main__":
    main()
