"""Settings: the one place that reads the environment (and ``.env``).

Everything else takes a ``Settings`` (or explicit arguments). ``load_settings`` validates every
variable and raises ``ConfigError`` with a message that says what to fix.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from enrich.errors import ConfigError
from enrich.redact import register

DEFAULT_BASE_URL = "https://api.massive.com"
# ENRICH_NOW must lie where the exchange calendars answer: they start on 2000-01-03
# (enrich.calendars.CAL_START) and end about a year ahead of the real date.
EARLIEST_NOW = dt.datetime(2000, 1, 5, tzinfo=dt.UTC)
LATEST_NOW_AHEAD = dt.timedelta(days=300)
MAX_HISTORY_YEARS = 30
MAX_LOOKBACK_DAYS = 366 * MAX_HISTORY_YEARS  # the longest first fetch a run may ask for
# The longest span a backfill may ask (CLI and API alike): longer than any market's
# history, and far from the date type's limits (a million years overflowed the plan).
MAX_BACKFILL_YEARS = 100
MAX_BACKFILL_DAYS = 366 * MAX_BACKFILL_YEARS
DEFAULT_API_ADDRESS = "127.0.0.1:8765"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    provider: str = "sample"
    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    rate_limit_per_min: float = 5.0
    schedule_utc: dt.time = dt.time(1, 30)
    max_concurrent_symbols: int = 5
    max_retries: int = 3
    refetch_sessions: int = 2
    event_lookback_days: int = 30
    options_symbols: tuple[str, ...] | None = None  # None: every symbol with options
    options_max_days: int = 120  # chain snapshot: expirations up to this many days out
    options_moneyness: float = 0.3  # chain snapshot: strikes within spot × (1 ± this)
    options_max_pages: int = 8  # chain snapshot: more is truncated (with a warning)
    scheduler: bool = True
    history_years: int = 10
    retention_days: int = 90
    sample_failure_rate: float = 0.0
    risk_free_rate: float = 0.04
    catalog_timeout_s: float = 30.0
    # Pretend the current instant is this (UTC): for demos that replay a past day, and tests.
    now_override: dt.datetime | None = None
    # The JSON API of `serve` (enrich.api): host and port, or None when ENRICH_API_ADDRESS=off.
    api_host: str | None = "127.0.0.1"
    api_port: int = 8765
    api_token: str | None = field(default=None, repr=False)
    # Notification URLs for alerts (enrich.alerts, sent through apprise); they may hold
    # credentials, so they are never shown: ``alert_channels`` says only their kinds.
    alert_urls: tuple[str, ...] = field(default=(), repr=False)

    def now(self) -> dt.datetime:
        """The current instant in UTC (or ``ENRICH_NOW`` when set)."""
        return self.now_override or dt.datetime.now(dt.UTC)

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "enrich.duckdb"

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def key_masked(self) -> str:
        return mask_key(self.api_key)

    @property
    def base_host(self) -> str:
        """Host (and port) of the base URL: never the user-info a URL may carry."""
        return host_of(self.base_url)

    @property
    def api_address(self) -> str:
        return "off" if self.api_host is None else f"{self.api_host}:{self.api_port}"

    @property
    def api_token_path(self) -> Path:
        return self.data_dir / "api_token"

    @property
    def alert_channels(self) -> str:
        """The alert channels by kind only (``2: json, mailto``): URLs may hold secrets."""
        if not self.alert_urls:
            return "none"
        kinds = [u.split("://", 1)[0].lower() for u in self.alert_urls]
        return f"{len(kinds)}: {', '.join(kinds)}"

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)

    def public(self) -> dict[str, str]:
        """The effective configuration, safe to show: the key is masked."""
        return {
            "ENRICH_DATA_DIR": str(self.data_dir.resolve()),
            "ENRICH_PROVIDER": self.provider,
            "MASSIVE_API_KEY": self.key_masked,
            "MASSIVE_BASE_URL": self.base_host,
            "ENRICH_RATE_LIMIT_PER_MIN": f"{self.rate_limit_per_min:g}",
            "ENRICH_SCHEDULE_UTC": self.schedule_utc.strftime("%H:%M") + " UTC",
            "ENRICH_MAX_CONCURRENT_SYMBOLS": str(self.max_concurrent_symbols),
            "ENRICH_MAX_RETRIES": str(self.max_retries),
            "ENRICH_REFETCH_SESSIONS": str(self.refetch_sessions),
            "ENRICH_EVENT_LOOKBACK_DAYS": str(self.event_lookback_days),
            "ENRICH_OPTIONS_SYMBOLS": ",".join(self.options_symbols)
            if self.options_symbols is not None else "(every symbol with options)",
            "ENRICH_OPTIONS_MAX_DAYS": str(self.options_max_days),
            "ENRICH_OPTIONS_MONEYNESS": f"{self.options_moneyness:g}",
            "ENRICH_OPTIONS_MAX_PAGES": str(self.options_max_pages),
            "ENRICH_SCHEDULER": "on" if self.scheduler else "off",
            "ENRICH_HISTORY_YEARS": str(self.history_years),
            "ENRICH_RETENTION_DAYS": str(self.retention_days),
            "ENRICH_SAMPLE_FAILURE_RATE": f"{self.sample_failure_rate:g}",
            "ENRICH_NOW": self.now_override.isoformat() if self.now_override else "(real time)",
            "ENRICH_API_ADDRESS": self.api_address,
            "ENRICH_API_TOKEN": "set" if self.api_token else
            f"not set (generated into {self.api_token_path.name} in the data directory)",
            "ENRICH_ALERT_URLS": self.alert_channels,
        }


def host_of(url: str) -> str:
    """``host[:port]`` of ``url``, without ``user:password@``."""
    netloc = urlsplit(url).netloc
    return netloc.rpartition("@")[2]


def mask_key(key: str | None) -> str:
    if not key:
        return "not set"
    if len(key) <= 8:
        return "set (" + "•" * 4 + ")"
    return f"{key[:2]}{'•' * 6}{key[-2:]}"


_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
_SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$")


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number; set it to e.g. {default}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range; use {lo}..{hi}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to e.g. {default:g}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value:g} is out of range; use {lo:g}..{hi:g}")
    return value


def parse_schedule(raw: str) -> dt.time:
    m = _TIME_RE.match(raw.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ConfigError(
            f"ENRICH_SCHEDULE_UTC={raw!r} is not a time of day; use HH:MM in UTC, e.g. 01:30"
        )
    return dt.time(int(m.group(1)), int(m.group(2)))


def parse_api_address(raw: str) -> tuple[str | None, int]:
    """``HOST:PORT`` (``[::1]:8765`` for IPv6), or ``off``; port 0 picks a free one."""
    raw = raw.strip()
    if raw.lower() in ("off", "none", "false", "0"):
        return None, 0
    host, sep, port = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"ENRICH_API_ADDRESS={raw!r} is not HOST:PORT; use e.g. "
                          f"{DEFAULT_API_ADDRESS}, or off to serve no API")
    return host, int(port)


def parse_alert_urls(raw: str) -> tuple[str, ...]:
    """Notification URLs separated by commas, spaces or newlines (apprise's own format)."""
    urls = tuple(u for u in re.split(r"[,\s]+", raw.strip()) if u)
    for i, url in enumerate(urls, 1):
        if not _SCHEME_RE.match(url):
            # Only the position: the text may be a secret pasted in the wrong place.
            raise ConfigError(f"ENRICH_ALERT_URLS: entry {i} is not a notification URL; use "
                              "e.g. json://host/path, mailto://user:pass@host, ntfy://topic")
    return urls


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``) over the ``.env`` file.

    Real environment variables win over ``.env``. Pass ``dotenv_path=None`` to ignore ``.env``.
    """
    env: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    env.update(os.environ if environ is None else environ)

    key = env.get("MASSIVE_API_KEY") or env.get("POLYGON_API_KEY") or None
    if key is not None:
        key = key.strip() or None
    if key is not None and any(ch.isspace() for ch in key):
        raise ConfigError("MASSIVE_API_KEY contains whitespace; paste the key without spaces")
    register(key)  # errors and logs of this process never show it (enrich.redact)

    provider = (env.get("ENRICH_PROVIDER") or "").strip().lower()
    provider = provider or ("massive" if key else "sample")
    if provider not in ("sample", "massive"):
        raise ConfigError(f"ENRICH_PROVIDER={provider!r} is unknown; use 'sample' or 'massive'")
    if provider == "massive" and not key:
        raise ConfigError(
            "ENRICH_PROVIDER=massive needs MASSIVE_API_KEY (or POLYGON_API_KEY); "
            "set it in the environment or .env, or use ENRICH_PROVIDER=sample"
        )

    base_url = (env.get("MASSIVE_BASE_URL") or DEFAULT_BASE_URL).strip().rstrip("/")
    try:
        parts = urlsplit(base_url)
        usable = (parts.scheme in ("http", "https") and bool(parts.hostname)
                  and not parts.query and (parts.port or 0) >= 0)
    except ValueError:  # an unclosed [IPv6 bracket, a port out of range
        usable = False
    if not usable:
        # Shown without the user-info, which may hold a password.
        shown = base_url if "@" not in base_url else "<a URL with user-info>"
        raise ConfigError(
            f"MASSIVE_BASE_URL={shown!r} is not an http(s) base URL; "
            f"use e.g. {DEFAULT_BASE_URL}"
        )

    sched_raw = env.get("ENRICH_SCHEDULE_UTC")
    schedule = parse_schedule(sched_raw) if sched_raw and sched_raw.strip() else dt.time(1, 30)

    sched_flag = (env.get("ENRICH_SCHEDULER") or "on").strip().lower()
    if sched_flag not in ("on", "off", "true", "false", "1", "0"):
        raise ConfigError(f"ENRICH_SCHEDULER={sched_flag!r}: use 'on' or 'off'")

    data_dir = Path((env.get("ENRICH_DATA_DIR") or "data").strip()).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"ENRICH_DATA_DIR={str(data_dir)!r} exists and is not a directory")

    now_override = None
    if (env.get("ENRICH_NOW") or "").strip():
        raw_now = env["ENRICH_NOW"].strip()
        try:
            now_override = dt.datetime.fromisoformat(raw_now.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"ENRICH_NOW={raw_now!r} is not an ISO instant; use e.g. 2026-11-25T22:00:00Z"
            ) from None
        if now_override.tzinfo is None:
            now_override = now_override.replace(tzinfo=dt.UTC)
        now_override = now_override.astimezone(dt.UTC)
        latest = dt.datetime.now(dt.UTC) + LATEST_NOW_AHEAD
        if not EARLIEST_NOW <= now_override <= latest:
            raise ConfigError(
                f"ENRICH_NOW={raw_now!r} is outside the exchange calendar; use an instant "
                f"between {EARLIEST_NOW:%Y-%m-%d} and {latest:%Y-%m-%d}, or unset it")

    options_symbols = None
    raw_opts = (env.get("ENRICH_OPTIONS_SYMBOLS") or "").strip()
    if raw_opts:
        from enrich.symbols import validate_symbol

        try:
            options_symbols = tuple(validate_symbol(s) for s in raw_opts.split(",") if s.strip())
        except ValueError as exc:
            raise ConfigError(f"ENRICH_OPTIONS_SYMBOLS: {exc}") from None

    api_host, api_port = parse_api_address(env.get("ENRICH_API_ADDRESS") or DEFAULT_API_ADDRESS)
    api_token = (env.get("ENRICH_API_TOKEN") or "").strip() or None
    if api_token is not None and (len(api_token) < 16 or any(c.isspace() for c in api_token)):
        raise ConfigError("ENRICH_API_TOKEN must be at least 16 characters without spaces; "
                          "or unset it to have one generated")

    return Settings(
        now_override=now_override,
        options_symbols=options_symbols,
        options_max_days=_int(env, "ENRICH_OPTIONS_MAX_DAYS", 120, 1, 1100),
        options_moneyness=_float(env, "ENRICH_OPTIONS_MONEYNESS", 0.3, 0.01, 10.0),
        options_max_pages=_int(env, "ENRICH_OPTIONS_MAX_PAGES", 8, 1, 1000),
        api_host=api_host,
        api_port=api_port,
        api_token=api_token,
        alert_urls=parse_alert_urls(env.get("ENRICH_ALERT_URLS") or ""),
        data_dir=data_dir,
        provider=provider,
        api_key=key,
        base_url=base_url,
        rate_limit_per_min=_float(env, "ENRICH_RATE_LIMIT_PER_MIN", 5.0, 0.1, 100_000),
        schedule_utc=schedule,
        max_concurrent_symbols=_int(env, "ENRICH_MAX_CONCURRENT_SYMBOLS", 5, 1, 64),
        max_retries=_int(env, "ENRICH_MAX_RETRIES", 3, 0, 20),
        refetch_sessions=_int(env, "ENRICH_REFETCH_SESSIONS", 2, 0, 30),
        event_lookback_days=_int(env, "ENRICH_EVENT_LOOKBACK_DAYS", 30, 0, 365),
        scheduler=sched_flag in ("on", "true", "1"),
        history_years=_int(env, "ENRICH_HISTORY_YEARS", 10, 1, MAX_HISTORY_YEARS),
        retention_days=_int(env, "ENRICH_RETENTION_DAYS", 90, 1, 3650),
        sample_failure_rate=_float(env, "ENRICH_SAMPLE_FAILURE_RATE", 0.0, 0.0, 0.9),
        risk_free_rate=_float(env, "ENRICH_RISK_FREE_RATE", 0.04, -0.05, 0.5),
        catalog_timeout_s=_float(env, "ENRICH_CATALOG_TIMEOUT_S", 30.0, 0.1, 3600),
    )
