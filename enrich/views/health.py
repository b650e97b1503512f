"""The scheduler's state and the provider plan's limits, as the Health page shows them."""

from __future__ import annotations

from typing import Any

from enrich.store.catalog import Catalog
from enrich.views.common import _one


def scheduler_state(catalog: Catalog) -> dict[str, Any]:
    """The persisted scheduler row: paused flag (who, when, why), heartbeat, next fire."""
    with catalog.connect() as con:
        return _one(con, "SELECT * FROM scheduler_state WHERE id = 1")


def not_entitled_summary(catalog: Catalog) -> list[dict[str, Any]]:
    """Datasets the plan refused (``enrich.store.plan_limits.not_entitled_table``)."""
    from enrich.store import plan_limits

    return plan_limits.not_entitled_table(catalog)


def plan_limit_rows(catalog: Catalog) -> list[dict[str, Any]]:
    """The plan limits found so far (``enrich.store.plan_limits.table``)."""
    from enrich.store import plan_limits

    return plan_limits.table(catalog)
