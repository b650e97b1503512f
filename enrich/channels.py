"""Alert channels: the notification URLs of ``ENRICH_ALERT_URLS``, sent through apprise.

Each channel is one apprise URL (a JSON webhook, e-mail, Slack, Teams, ntfy …); ``send``
tries each channel up to ``SEND_ATTEMPTS`` times with exponential backoff and returns what
happened per channel, never raising. URLs hold credentials, so a channel is named by
apprise's privacy URL, and every token of its URL that the privacy URL does not show
(passwords, API tokens, webhook keys) is registered with ``SCRUB``, which removes them from
apprise's and urllib3's log records and from any text passed through ``scrub``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

log = logging.getLogger(__name__)

SEND_ATTEMPTS = 3
BACKOFF_S = 2.0  # first wait between attempts; doubles each time

_TOKEN_SPLIT = re.compile(r"[/:@?&=#,;+\s]+")


class _Scrub(logging.Filter):
    """Removes registered secrets from log records (apprise's and urllib3's)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def text(self, s: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            s = s.replace(secret, "••••")
        return s

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.text(record.getMessage())
            record.args = None
        return True


SCRUB = _Scrub()
for _name in ("apprise", "urllib3.connectionpool"):
    logging.getLogger(_name).addFilter(SCRUB)


@dataclass
class ChannelResult:
    channel: str  # the label: apprise's privacy URL, credentials scrubbed
    ok: bool
    attempts: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "ok": self.ok, "attempts": self.attempts,
                "error": self.error}


class Channels:
    """The notification URLs, sent through apprise, each retried with backoff.

    ``halt``, when set, ends the waits between attempts and the attempts (a stopping
    service); the channel's failure is recorded as usual.
    """

    def __init__(self, urls: Sequence[str], attempts: int = SEND_ATTEMPTS,
                 backoff_s: float = BACKOFF_S, halt: threading.Event | None = None):
        self.urls = tuple(urls)
        self.attempts = max(1, int(attempts))
        self.backoff_s = float(backoff_s)
        self.halt = halt or threading.Event()
        self._labels: list[str] | None = None
        self._plugins: list[Any] | None = None

    def __bool__(self) -> bool:
        return bool(self.urls)

    def _load(self) -> None:
        if self._plugins is not None:
            return
        import apprise

        plugins: list[Any] = []  # apprise plugins; None for a URL apprise does not know
        labels: list[str] = []
        for i, url in enumerate(self.urls, 1):
            plugin = apprise.Apprise.instantiate(url)
            raw_tokens = {t for t in _TOKEN_SPLIT.split(url) if len(t) >= 3}
            if plugin is None:
                # Unknown to apprise: nothing of it is shown, it may be a secret.
                SCRUB.secrets.update(raw_tokens | {url})
                plugins.append(None)
                labels.append(f"channel {i} (not a URL apprise supports)")
                continue
            # What apprise shows in privacy mode is not secret; every other token of the
            # URL (passwords, API tokens, webhook keys) is scrubbed wherever it appears.
            private = plugin.url(privacy=True)
            kept = set(_TOKEN_SPLIT.split(unquote(private)))
            SCRUB.secrets.update(t for t in raw_tokens if t not in kept)
            plugins.append(plugin)
            labels.append(SCRUB.text(private.split("?", 1)[0]))
        self._plugins, self._labels = plugins, labels

    @property
    def labels(self) -> list[str]:
        """The channels as shown anywhere: no credential, no token."""
        self._load()
        return list(self._labels or [])

    def scrub(self, text: str) -> str:
        self._load()
        return SCRUB.text(text)

    def send(self, title: str, body: str, kind: str = "info") -> list[ChannelResult]:
        """Send to every channel; ``kind`` is info | success | warning | failure."""
        import apprise

        self._load()
        results = []
        for plugin, label in zip(self._plugins or [], self._labels or [], strict=True):
            if plugin is None:
                results.append(ChannelResult(label, False, 0, "not a notification URL apprise "
                                                              "supports; check ENRICH_ALERT_URLS"))
                continue
            error, attempt = None, 0
            for attempt in range(1, self.attempts + 1):
                ap = apprise.Apprise()
                ap.add(plugin)
                try:
                    res = ap.notify(body=body, title=title, notify_type=kind)
                    if res:
                        error = None
                        break
                    logs = [e.message for e in res.logs() if e.level in ("WARNING", "ERROR")]
                    error = "; ".join(logs)[-300:] or "the channel refused the notification"
                except Exception as exc:  # a plugin that raises is a failed attempt
                    error = f"{type(exc).__name__}: {exc}"
                if attempt < self.attempts and \
                        self.halt.wait(self.backoff_s * 2 ** (attempt - 1)):
                    error += " (the service stopped before the next attempt)"
                    break
            if error is not None:
                log.warning("alert channel %s failed after %d attempt(s): %s", label, attempt,
                            SCRUB.text(error))
            results.append(ChannelResult(label, error is None, attempt,
                                         None if error is None else SCRUB.text(error)))
        return results
