"""The error log: where an unexpected error's traceback goes, so the CLI and the pages can
show one plain line and say where the details are.

``<data>/logs/errors.log``, appended to, each entry stamped in UTC and redacted
(``enrich.redact``). When the data directory cannot be written, nothing is logged and the
caller says so.
"""

from __future__ import annotations

import datetime as dt
import os
import traceback
from pathlib import Path

from enrich.redact import redact

LOG_NAME = Path("logs") / "errors.log"
MAX_BYTES = 5_000_000  # then the file is started afresh (the previous one kept as .1)


def path_for(data_dir: Path) -> Path:
    return Path(data_dir) / LOG_NAME


def record(exc: BaseException, data_dir: Path | None, where: str) -> Path | None:
    """Append ``exc``'s traceback to the error log of ``data_dir``; its path, or None."""
    if data_dir is None:
        return None
    path = path_for(data_dir)
    text = "".join(traceback.format_exception(exc))
    entry = f"--- {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC · {where}\n{redact(text)}\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > MAX_BYTES:
            os.replace(path, path.with_suffix(".log.1"))
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(entry)
    except OSError:
        return None
    return path.resolve()
