"""The project's error tree.

Library code raises these; only the edges (a job, the CLI, a page) decide how to report them.
Every error carries context (provider, endpoint, status, request id) and never a secret.

    EnrichError
    ├── ConfigError              bad settings or usage (CLI exit code 2)
    │   └── CatalogMissingError  the catalog deleted under an open store (HTTP 503)
    ├── InputError               a file or value given by the user that cannot be used (exit 2)
    ├── StateError               an action the state of what it acts on refuses: an ended run,
    │                            a complete backfill, a resolved incident (exit 2; HTTP 409)
    ├── InvalidSymbolError       a symbol refused at the boundary
    ├── CatalogBusyError         another program holds the catalog beyond the wait
    ├── CatalogUnreadableError   the catalog file is not a readable DuckDB database
    ├── CorruptFileError         an unreadable lake file (moved to lake/_quarantine/)
    ├── ValidationError          a payload that does not fit the lake schema
    ├── Cancelled                a run stopped between symbols
    └── ProviderError            anything a data provider raised
        ├── AuthError            missing or invalid key            (no retry)
        ├── NotEntitledError     the plan does not include this    (no retry, remembered)
        │   └── HistoryLimitError  …this far back: the plan's history window (probed,
        │                          remembered, the fetch shrinks to it)
        ├── NotYetAvailableError today's session before the plan serves it (due, not failed;
        │                        asked again after midnight New York time)
        ├── NotFoundError        unknown symbol or path            (no retry)
        │   └── UnknownTickerError  the provider's ticker reference does not know the
        │                           symbol: nothing is fetched for it (asked again weekly)
        ├── MalformedPayloadError truncated JSON, HTML, wrong shape (no retry)
        ├── RateLimitedError     HTTP 429                          (retry after Retry-After)
        └── TransientError       5xx, timeouts, connection resets  (retry with backoff)
            └── ProviderUnreachableError  no connection at all (DNS, refused, connect
                                 timeout): retried; a run stops after a few in a row

``error_class`` is the short, stable name stored in logs and shown in the UI. Every message,
request id and cause is passed through ``enrich.redact`` when the error is built, so an error
never carries a registered secret, wherever it was raised.
"""

from __future__ import annotations

from enrich.redact import redact


def _clean(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


class EnrichError(Exception):
    error_class = "error"
    retryable = False

    def __init__(self, *args: object):
        super().__init__(*map(_clean, args))

    def __str__(self) -> str:
        return redact(super().__str__())


class ConfigError(EnrichError):
    error_class = "config"


class CatalogMissingError(ConfigError):
    """The catalog file was deleted or moved under a process that had opened it (HTTP 503:
    the service cannot answer until it is restarted; CLI exit 2 as any ConfigError)."""

    error_class = "catalog_missing"


class InputError(EnrichError, ValueError):
    error_class = "bad_input"


class StateError(EnrichError):
    """An action refused by the state of what it acts on; the message names that state, and
    nothing was recorded. Subclasses may name a more precise ``error_class`` (the API's code)."""

    error_class = "conflict"


class InvalidSymbolError(EnrichError, ValueError):
    error_class = "invalid_symbol"


class CatalogBusyError(EnrichError):
    error_class = "catalog_busy"


class CatalogUnreadableError(EnrichError):
    error_class = "catalog_unreadable"


class CorruptFileError(EnrichError):
    """A lake file that cannot be read; ``path`` is where it is now (quarantined or not)."""

    error_class = "corrupt"

    def __init__(self, message: str, *, path: str | None = None, dataset: str | None = None,
                 symbol: str | None = None):
        super().__init__(message)
        self.path = path
        self.dataset = dataset
        self.symbol = symbol


class ValidationError(EnrichError):
    """A payload refused as a whole: ``causes`` lists the first few reasons."""

    error_class = "validation"

    def __init__(self, message: str, *, rejected: int = 0, causes: list[str] | None = None):
        super().__init__(message)
        self.rejected = rejected
        self.causes = [redact(c) for c in causes or []]


class Cancelled(EnrichError):
    error_class = "cancelled"


class ProviderError(EnrichError):
    error_class = "provider"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        endpoint: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
    ):
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.endpoint = endpoint and redact(endpoint)
        self.status = status
        self.request_id = request_id and redact(request_id)

    def __str__(self) -> str:
        parts = [self.message]
        ctx = []
        if self.provider:
            ctx.append(self.provider)
        if self.endpoint:
            ctx.append(self.endpoint)
        if self.status is not None:
            ctx.append(f"HTTP {self.status}")
        if self.request_id:
            ctx.append(f"request {self.request_id}")
        if ctx:
            parts.append(f"({', '.join(ctx)})")
        return redact(" ".join(parts))


class AuthError(ProviderError):
    error_class = "auth"


class NotEntitledError(ProviderError):
    error_class = "not_entitled"


class HistoryLimitError(NotEntitledError):
    """The plan serves this dataset only back to some date (Massive: "Your plan doesn't
    include this data timeframe")."""

    error_class = "history_limit"


class NotYetAvailableError(ProviderError):
    """The plan serves a session only after its day ends (Massive: "Attempted to request
    today's data before end of day")."""

    error_class = "not_yet_available"


class NotFoundError(ProviderError):
    error_class = "not_found"


class UnknownTickerError(NotFoundError):
    error_class = "unknown_ticker"


class MalformedPayloadError(ProviderError):
    error_class = "malformed"


class RateLimitedError(ProviderError):
    error_class = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class TransientError(ProviderError):
    error_class = "transient"
    retryable = True


class ProviderUnreachableError(TransientError):
    """No connection to the provider at all (the name did not resolve, the connection was
    refused or timed out, a proxy refused it): no request reached it."""

    error_class = "unreachable"


def error_class_of(exc: BaseException) -> str:
    """The stored class name of any exception (unknown ones are ``internal``)."""
    if isinstance(exc, EnrichError):
        return exc.error_class
    return "internal"
