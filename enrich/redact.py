"""Redaction: the one function that takes secrets out of text before it is stored or shown.

A secret (the provider's API key) is registered once, when the settings are read or a provider
is built; ``redact`` then replaces every occurrence of it in a string with ``***`` — and every
piece of it of ``MIN_PIECE`` characters or more, so a key cut by a truncation, or echoed in
part by a server, never shows either. Error messages, request ids, headers and URLs that leave
the provider layer pass through it (``enrich.errors`` applies it to every error it builds).

Scrub first, then truncate: cutting first could split the key so that neither half matches it
whole (the pieces rule catches that too, but only down to ``MIN_PIECE`` characters).
"""

from __future__ import annotations

import logging
import string
import threading
from collections.abc import Iterable

MASK = "***"
MIN_PIECE = 8  # shorter pieces of a key are too likely to be ordinary text

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register(secret: str | None) -> None:
    """Remember ``secret`` for ``redact`` in this process (idempotent).

    Only secrets of at least ``MIN_PIECE`` characters: a shorter one ("key", a test's dummy)
    would mask ordinary words everywhere. Real keys are 32 characters; the provider still
    scrubs a short key from what it builds itself (``MassiveProvider._scrub``).
    """
    global _secrets
    if not secret or len(secret) < MIN_PIECE:
        return
    with _lock:
        if secret not in _secrets:
            _secrets = (*_secrets, secret)


def registered() -> tuple[str, ...]:
    return _secrets


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every registered secret (or those given), and every piece of one of at
    least ``MIN_PIECE`` characters, replaced by ``***``."""
    if not text:
        return text
    for secret in (_secrets if secrets is None else tuple(secrets)):
        if secret:
            text = _without(text, secret)
    return text


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _without(text: str, secret: str) -> str:
    # Case-blind (ASCII only, so positions stay put): a host name or a header can come back
    # lower-cased, and a key in lower case still gives most of it away.
    folded, secret = text.translate(_ASCII_LOWER), secret.translate(_ASCII_LOWER)
    # Mark every character covered by some MIN_PIECE-long window of the secret: any piece of
    # at least that length is a union of such windows, so it is covered entirely. A secret
    # no longer than that is its only window.
    n = min(MIN_PIECE, len(secret))
    covered: list[tuple[int, int]] = []
    for window in {secret[i:i + n] for i in range(len(secret) - n + 1)}:
        at = folded.find(window)
        while at != -1:
            covered.append((at, at + n))
            at = folded.find(window, at + 1)
    if not covered:
        return text
    covered.sort()
    out, pos = [], 0
    start, end = covered[0]
    for lo, hi in covered[1:]:
        if lo <= end:
            end = max(end, hi)
            continue
        out += [text[pos:start], MASK]
        pos, (start, end) = end, (lo, hi)
    out += [text[pos:start], MASK, text[end:]]
    return "".join(out)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message (and its exception text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and not record.exc_text:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            elif record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True


def protect_handlers(logger: logging.Logger | None = None) -> None:
    """Add a ``RedactingFilter`` to every handler of ``logger`` (the root by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
