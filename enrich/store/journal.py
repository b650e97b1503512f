"""Catalog rows written ahead of the lake write they describe: a write-ahead journal.

A restatement is the difference between what the lake held and what a fetch brought; once the
lake holds the new rows, no later run can see that difference again. So the rows recording it
are first written to a small file in ``<data dir>/journal/`` (``<pid>-<start>-<id>.json``,
fsynced, renamed into place) before the lake changes; they then go to the catalog with the
step's other rows, and the file is deleted once the catalog has committed them
(``Catalog.write``). A
process that dies in between (killed, out of memory, power cut) leaves its file behind: the
next catalog write of any process on the desk applies the files whose writer is gone, in its
own transaction, and deletes them.

Applying a file twice (a writer killed after the commit, before the delete) or rows whose lake
write never happened (a writer killed before it: the next run finds the same change and
records it again) records a restatement once: ``Catalog`` does not insert a restatement equal
to the latest one recorded for its cell (symbol, dataset, session, column), which is exactly
the repeat (a value that changed back in between is recorded in between, so a real change
back and forth is kept).

A file that cannot be read is set aside as ``<name>.unreadable`` with a warning: it never
stops a write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enrich.store.lake import write_bytes_atomic

log = logging.getLogger(__name__)

DIRECTORY = "journal"  # under the data directory, next to the catalog
SUFFIX = ".json"


def write(directory: Path, inserts: dict[str, list[dict[str, Any]]]) -> Path:
    """Write ``inserts`` (table → rows) to a new journal file in ``directory``, durably
    (the data and the directory entry are fsynced), and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    name = f"{pid}-{_started(pid)}-{uuid.uuid4().hex}"
    path, tmp = directory / f"{name}{SUFFIX}", directory / f".tmp-{name}.part"
    write_bytes_atomic(json.dumps({"inserts": inserts}, default=_encode).encode(), path, tmp)
    _fsync_dir(directory)
    return path


def orphans(directory: Path, alive: Callable[[int], bool]) -> list[Path]:
    """The journal files in ``directory`` whose writing process is gone, oldest name first;
    a writer's leftover temp file is deleted. A writer is gone when ``alive(pid)`` is false,
    or when its pid now names a process started at another time (a container restarted
    gives its new process the pid its old one had)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        pid_part, _, rest = name.removeprefix(".tmp-").partition("-")
        started = rest.partition("-")[0]
        if not pid_part.isdigit():
            continue
        pid = int(pid_part)
        if alive(pid) and (not started or _started(pid) in ("", started)):
            continue
        if name.startswith(".tmp-"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / name)
        elif name.endswith(SUFFIX):
            found.append(directory / name)
    return found


def listing(directory: Path) -> dict[str, list[str]]:
    """The journal's files by state: ``pending`` (rows not recorded yet: a process is
    writing them, or one that stopped left them for the next catalog write) and
    ``set_aside`` (files that could not be applied: their rows are not recorded)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    return {"pending": [n for n in names if n.endswith(SUFFIX) and not n.startswith(".")],
            "set_aside": [n for n in names if n.endswith(SUFFIX + ".unreadable")]}


def read(path: Path) -> dict[str, list[dict[str, Any]]] | None:
    """The rows of a journal file; None if it is gone. A file that cannot be read is set
    aside (``.unreadable``) with a warning, and None returned."""
    try:
        data = json.loads(path.read_bytes(), object_hook=_decode)
        inserts = data["inserts"]
        if not isinstance(inserts, dict) or not all(
                isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
                for rows in inserts.values()):
            raise ValueError("not a table → rows mapping")
        return inserts
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        set_aside(path, f"it could not be read: {exc}")
        return None


def set_aside(path: Path, why: str) -> None:
    """Rename a journal file that cannot be applied to ``<name>.unreadable`` (kept for a
    person to look at, never applied again), with a warning."""
    aside = path.with_name(path.name + ".unreadable")
    with contextlib.suppress(OSError):
        os.replace(path, aside)
    log.warning("journal file %s was set aside as %s because %s; the catalog rows it held "
                "(restatements found before a crash) are not recorded", path, aside.name, why)


def remove(paths) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _started(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (Linux ``/proc``); "" where
    that cannot be known (then the pid alone names the writer)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat[stat.rindex(b")") + 2:].split()[19].decode()  # field 22, starttime
    except (OSError, ValueError, IndexError):
        return ""


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):  # before date: a datetime is a date
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    raise TypeError(f"a journal row holds a {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$datetime" in obj:
            return dt.datetime.fromisoformat(obj["$datetime"])
        if "$date" in obj:
            return dt.date.fromisoformat(obj["$date"])
    return obj


def _fsync_dir(directory: Path) -> None:
    """Make the new name durable before the lake write it precedes (POSIX; a no-op where a
    directory cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
