"""What the provider's plan allows, learned from its answers and remembered in the catalog.

Owner of the ``plan_limits`` table. Two kinds of limit, both facts rather than failures:

- **history** (``history:<market>:<dataset>[:<timeframe>]``): the plan serves a dataset only
  back to a rolling window (Massive Basic: 2 years; "Your plan doesn't include this data
  timeframe"). Plans are sold per market (stocks with ETFs, indices, crypto, fx; reference
  §6), so a window learned for one never bounds another.
  Found by probing the usual plan depths once (``probe_history``); every later fetch starts
  inside it, so history is stored from the window's start instead of failing.
- **publication** (``publication`` = ``next_day``): the plan serves a session only after its
  New York day ends ("Attempted to request today's data before end of day"). Freshness then
  counts that session as *due* until ``NEXT_DAY_LAG`` after its close, and the service asks
  again with a follow-up refresh after midnight New York time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from enrich.errors import HistoryLimitError
from enrich.store.catalog import Catalog, WriteBatch, utcnow

# Plan depths to probe, deepest first (Massive: Basic 2 years, Starter 5, Developer 10,
# Advanced 20+; reference §6). The first that answers is the plan's window.
PROBE_YEARS = (20, 15, 10, 5, 2, 1)
PROBE_DAYS = 14  # a small window at the candidate edge
# A regular session closes at 16:00 New York; "after its day ends" is 8 hours later. A
# quarter of an hour more, for the provider to publish.
NEXT_DAY_LAG = dt.timedelta(hours=8, minutes=15)
FOLLOW_UP_ET = dt.time(0, 30)  # the follow-up refresh, New York time


@dataclass(frozen=True)
class Limits:
    """One provider's known limits: history days per key, and next-day publication."""

    history: dict[str, int]
    next_day: bool = False

    def floor(self, market: str, dataset: str, timeframe: str | None,
              today: dt.date) -> dt.date | None:
        """The first date the plan serves for ``dataset`` of ``market`` on ``today`` (None:
        no limit known)."""
        days = self.history.get(history_key(market, dataset, timeframe))
        return None if days is None else today - dt.timedelta(days=days)


# The plan a symbol's data is sold under, by asset class: an ETF's is the stocks plan.
MARKETS = {"stocks": "stocks", "etfs": "stocks", "indices": "indices", "crypto": "crypto",
           "fx": "fx"}


def history_key(market: str, dataset: str, timeframe: str | None) -> str:
    market = MARKETS.get(market, market)
    return f"history:{market}:{dataset}:{timeframe}" if dataset == "bars" and timeframe else \
        f"history:{market}:{dataset}"


def read(catalog: Catalog, provider: str) -> Limits:
    rows = catalog.query("SELECT limit_key, history_days, value FROM plan_limits "
                         "WHERE provider = ?", [provider])
    history = {k: int(d) for k, d, _ in rows.iter_rows() if d is not None}
    next_day = any(k == "publication" and v == "next_day" for k, _, v in rows.iter_rows())
    return Limits(history, next_day)


def table(catalog: Catalog) -> list[dict]:
    """Every known limit, for the Health page and ``entitlements list``."""
    return catalog.query("SELECT provider, limit_key, history_days, value, detail, found_at "
                         "FROM plan_limits ORDER BY provider, limit_key").to_dicts()


def record_history(b: WriteBatch, provider: str, market: str, dataset: str,
                   timeframe: str | None, days: int, detail: str) -> None:
    b.upsert("plan_limits", {"provider": provider,
                             "limit_key": history_key(market, dataset, timeframe),
                             "history_days": days, "value": None, "detail": detail[:1000],
                             "found_at": utcnow()})


def record_next_day(b: WriteBatch, provider: str, detail: str) -> None:
    b.upsert("plan_limits", {"provider": provider, "limit_key": "publication",
                             "history_days": None, "value": "next_day",
                             "detail": detail[:1000], "found_at": utcnow()})


def forget(catalog: Catalog, provider: str) -> None:
    """Drop what was learned (a plan upgrade): the next fetches find out again."""
    b = WriteBatch()
    b.execute("DELETE FROM plan_limits WHERE provider = ?", [provider])
    catalog.write(b)


# A dataset the plan refused is skipped by later runs, but not for ever: a plan changes.
RECHECK_AFTER = dt.timedelta(days=7)


def not_entitled_since(now: dt.datetime) -> dt.datetime:
    """Refusals recorded before this instant are asked again by the next run."""
    return now - RECHECK_AFTER


def not_entitled_table(catalog: Catalog) -> list[dict]:
    """Datasets the plan refused: symbols, when it last said so, when it is asked again."""
    rows = catalog.query(
        "SELECT dataset, count(*) AS symbols, max(last_error_at) AS last_refused_at, "
        "min(last_error_at) AS first_refused_at, any_value(last_error_message) AS message "
        "FROM symbol_status WHERE not_entitled GROUP BY dataset ORDER BY dataset").to_dicts()
    for r in rows:
        first = r["first_refused_at"]
        r["recheck_at"] = None if first is None else first + RECHECK_AFTER
    return rows


def recheck(catalog: Catalog, provider: str) -> int:
    """Ask the plan again at the next run: clear every "not entitled" mark and what was
    learned of the plan's limits. Returns the symbol × dataset marks cleared."""
    n = catalog.scalar("SELECT count(*) FROM symbol_status WHERE not_entitled")
    b = WriteBatch()
    b.execute("UPDATE symbol_status SET not_entitled = false, consecutive_failures = 0 "
              "WHERE not_entitled")
    b.execute("DELETE FROM plan_limits WHERE provider = ?", [provider])
    catalog.write(b)
    return int(n or 0)


def probe_history(fetch: Callable[[dt.date, dt.date], object], start: dt.date,
                  end: dt.date) -> dt.date | None:
    """The earliest plan depth (from ``PROBE_YEARS``) after ``start`` whose edge the plan
    serves: ``fetch(a, z)`` asks a small window and raises ``HistoryLimitError`` beyond the
    plan. None when even a year back is refused."""
    for years in PROBE_YEARS:
        try:
            edge = end.replace(year=end.year - years) + dt.timedelta(days=1)
        except ValueError:  # 29 February
            edge = end.replace(year=end.year - years, day=28) + dt.timedelta(days=1)
        if edge <= start:
            continue
        try:
            fetch(edge, min(edge + dt.timedelta(days=PROBE_DAYS), end))
        except HistoryLimitError:
            continue
        return edge
    return None
