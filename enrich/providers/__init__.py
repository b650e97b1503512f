"""Data providers: one interface, one module per provider, a registry line each.

Every method returns a polars frame in the lake schema of its dataset (``enrich.schemas``),
already conformed. Dates are inclusive ranges of session dates in the exchange time zone.
Providers raise only ``enrich.errors.ProviderError`` subclasses. A provider that computes its
rows on the CPU (no network, no rate limit) may offer ``process_factory()``, a picklable
callable that builds it again in a worker process, so large runs use processes
(``enrich.workers``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import polars as pl

if TYPE_CHECKING:
    from enrich.config import Settings


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_ms: float
    status: str  # "valid" | "invalid key" | "not entitled" | "unreachable" | "demo"
    message: str


@runtime_checkable
class Provider(Protocol):
    name: str
    is_demo: bool  # labelled as demo data wherever shown
    rate_limited: bool  # whether calls must pass the process rate limiter

    def bars(
        self, symbol: str, timeframe: str, start: dt.date, end: dt.date
    ) -> pl.DataFrame: ...

    def dividends(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame: ...

    def splits(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame: ...

    def earnings(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame: ...

    def news(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame: ...

    def option_chain(self, symbol: str, as_of: dt.date) -> pl.DataFrame:
        """Snapshot of the chain (OPTIONS_IV schema) for the session ``as_of``."""
        ...

    def option_contracts(self, underlying: str, as_of: dt.date) -> pl.DataFrame:
        """Contracts listed on ``as_of`` (expired ones included): contract, expiration,
        strike, contract_type."""
        ...

    def option_bars(self, contract: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Daily bars of one option contract (BARS schema, symbol = the OCC ticker)."""
        ...

    def probe(self) -> ProbeResult: ...


PROVIDERS = ("sample", "massive")


def make_provider(settings: Settings, **kw) -> Provider:
    """Build the configured provider. Imports lazily so one provider's deps never load the other."""
    if settings.provider == "sample":
        from enrich.providers.sample import SampleProvider

        kw.setdefault("clock", settings.now)
        return SampleProvider(failure_rate=settings.sample_failure_rate, **kw)
    if settings.provider == "massive":
        from enrich.providers.massive import MassiveProvider

        return MassiveProvider.from_settings(settings, **kw)
    raise ValueError(f"unknown provider {settings.provider!r}")
