"""Data providers: one interface, one module per provider, a registry line each.

Every method returns a polars frame in the lake schema of its dataset (``enrich.schemas``),
already conformed. Dates are inclusive ranges of session dates in the exchange time zone.
Providers raise only ``enrich.errors.ProviderError`` subclasses.

Besides per-symbol calls, a provider answers **universe-wide** requests (``market_rows``): one
request per session serves the daily bars of every stock and ETF (grouped daily), and one
request per date window (paginated) serves the dividends, splits, income statements or news of
the whole market; the rows are filtered to the requested symbols locally. Either path stores
identical rows: the engine's refresh plan (``enrich.pipeline.refresh``) picks the cheaper per
dataset.

Each provider applies its ``RetryPolicy`` to every single request (a failed page is retried,
never the pages before it) and keeps a per-thread ledger of requests and retries
(``take_requests``). Optional capabilities are declared here with their defaults:
``process_factory`` (None: rows come over the network, use threads), ``with_priority``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from enrich.providers.base import (  # noqa: F401  (the protocol, re-exported)
    OPTION_CONTRACTS,
    MarketRequest,
    MarketRows,
    ProbeResult,
    Provider,
    market_of,
)

if TYPE_CHECKING:
    from enrich.config import Settings

PROVIDERS = ("sample", "massive")


def make_provider(settings: Settings, **kw) -> Provider:
    """Build the configured provider with the configured retry policy. Imports lazily so one
    provider's deps never load the other."""
    from enrich.providers.retry import RetryPolicy

    kw.setdefault("retry", RetryPolicy(max_retries=settings.max_retries))
    if settings.provider == "sample":
        from enrich.providers.sample.provider import SampleProvider

        kw.setdefault("clock", settings.now)
        return SampleProvider(failure_rate=settings.sample_failure_rate, **kw)
    if settings.provider == "massive":
        from enrich.providers.massive.provider import MassiveProvider

        return MassiveProvider.from_settings(settings, **kw)
    raise ValueError(f"unknown provider {settings.provider!r}")
