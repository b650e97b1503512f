"""Row-level validation before anything reaches the lake.

Schema and type problems refuse a whole payload (the provider raises ``ValidationError``);
the checks here refuse individual rows that are well-typed but impossible, and count them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import polars as pl

from enrich.schemas import DATASETS

MAX_CAUSES = 5


@dataclass
class Checked:
    good: pl.DataFrame
    rejected: int = 0
    causes: list[str] = field(default_factory=list)


@functools.cache
def _rules(dataset: str) -> tuple[tuple[str, pl.Expr], ...]:
    """(cause, expression that is True for a BAD row)."""
    key_null = pl.any_horizontal([pl.col(k).is_null() for k in DATASETS[dataset].key])
    rules: list[tuple[str, pl.Expr]] = [("null key column", key_null)]
    if dataset == "bars":
        px = ["open", "high", "low", "close"]
        rules += [
            ("missing price", pl.any_horizontal([pl.col(c).is_null() for c in px])),
            ("non-finite price", pl.any_horizontal([~pl.col(c).is_finite() for c in px])),
            ("price not > 0", pl.any_horizontal([pl.col(c) <= 0 for c in px])),
            ("volume < 0", pl.col("volume").fill_null(0) < 0),
            ("low > open/close", pl.col("low") > pl.min_horizontal("open", "close")),
            ("high < open/close", pl.col("high") < pl.max_horizontal("open", "close")),
        ]
    elif dataset == "dividends":
        cash = pl.col("cash_amount")
        # Listings may leave the amount out (a distribution in shares, or only a ratio): the
        # lake holds cash dividends, so that row alone is refused, and says why.
        rules.append(("no cash amount", cash.is_null()))
        rules.append(("cash_amount not > 0", cash.is_not_null() & ~(cash > 0)))
    elif dataset == "splits":
        ratio = [pl.col("split_from"), pl.col("split_to")]
        rules.append(("no split ratio", pl.any_horizontal([c.is_null() for c in ratio])))
        rules.append(("split ratio not > 0", pl.all_horizontal([c.is_not_null() for c in ratio])
                      & ~((ratio[0] > 0) & (ratio[1] > 0))))
    elif dataset == "options_iv":
        strike, kind = pl.col("strike"), pl.col("contract_type")
        # A chain may hold a contract without its terms (the listing requires none): that
        # row alone is refused, and says which term it lacks.
        rules.append(("no strike", strike.is_null()))
        rules.append(("no contract type", kind.is_null()))
        rules.append(("no expiration", pl.col("expiration").is_null()))
        rules.append(("strike not > 0", strike.is_not_null() & ~(strike > 0)))
        rules.append(("contract_type not call/put",
                      kind.is_not_null() & ~kind.is_in(["call", "put"])))
    elif dataset == "news":
        rules.append(("missing published_utc", pl.col("published_utc").is_null()))
    return tuple(rules)


@functools.cache
def _flags(dataset: str) -> tuple[list[pl.Expr], pl.Expr]:
    """Per rule, True for a BAD row (a rule that cannot tell, null, refuses it), and the
    count of bad rows: built once, as building them costs about as much as the query."""
    flags = [expr.fill_null(True) for _, expr in _rules(dataset)]
    return flags, pl.any_horizontal(flags).sum()


def check(dataset: str, frame: pl.DataFrame) -> Checked:
    """Split ``frame`` into rows that may be stored and a count of refused rows with causes."""
    if frame.is_empty():
        return Checked(frame)
    rules = _rules(dataset)
    flags, count_bad = _flags(dataset)
    n_bad = frame.select(count_bad).item()
    if n_bad == 0:
        return Checked(frame)
    flagged = frame.select([f.alias(f"r{i}") for i, f in enumerate(flags)])
    bad = flagged.select(pl.any_horizontal(pl.all())).to_series()
    bad_flags = flagged.filter(bad)
    causes: list[str] = []
    key = list(DATASETS[dataset].key)
    bad_rows = frame.filter(bad)
    for i in range(min(bad_rows.height, MAX_CAUSES)):
        which = [rules[j][0] for j, v in enumerate(bad_flags.row(i)) if v]
        ident = ", ".join(f"{k}={bad_rows[k][i]}" for k in key if k in bad_rows.columns)
        causes.append(f"{ident}: {'; '.join(which)}")
    return Checked(frame.filter(~bad), n_bad, causes)
