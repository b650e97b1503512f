"""The API's bearer token: ``ENRICH_API_TOKEN``, else one generated into the data directory.

The generated token lives in ``<data>/api_token`` with mode 0600, created atomically (a
complete temp file linked into place), so two processes starting at once agree on one token.
``python -m enrich api token`` shows it. A running API checks the file again when it changes
(``TokenFile``): a token rotated by deleting the file takes effect at once, in every process.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from enrich.config import Settings
from enrich.errors import ConfigError

MODE = 0o600


def _read(path: Path) -> str | None:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    if stat.S_IMODE(path.stat().st_mode) != MODE:
        os.chmod(path, MODE)  # someone loosened it: the token is a secret
    return token or None


def ensure_token(settings: Settings) -> tuple[str, str]:
    """The token mutations need, and where it comes from (the variable, or the file)."""
    if settings.api_token:
        return settings.api_token, "ENRICH_API_TOKEN"
    path = settings.api_token_path
    token = _read(path)
    if token:
        return token, str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, MODE)
    try:
        os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process was first: then its token wins
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    token = _read(path)
    if not token:
        raise ConfigError(f"could not read the API token from {path}; delete it and retry")
    return token, str(path)


def matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a presented token."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


class TokenFile:
    """The token in force, for a process that checks many requests: the variable's, or the
    file's as it is now — read on every check (a few µs; a change detected by the file's
    identity could miss a rewrite within the clock's resolution): deleting the file (a new
    one is generated on the next check, as ``enrich api token`` does) or replacing it revokes
    the old token in a running ``serve`` too."""

    def __init__(self, settings: Settings, on_new: Callable[[str], None] = lambda _: None):
        self._settings = settings
        self._on_new = on_new
        self._token = ""

    def current(self) -> str:
        token = ensure_token(self._settings)[0]
        if token != self._token:
            self._token = token
            self._on_new(token)  # a secret from now on (scrubbed from what is shown)
        return token
