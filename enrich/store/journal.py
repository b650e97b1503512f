"""Catalog rows written ahead of the lake write they describe: a write-ahead journal.

A restatement is the difference between what the lake held and what a fetch brought; once the
lake holds the new rows, no later run can see that difference again. So the rows recording it
are first written to a small file in ``<data dir>/journal/`` (fsynced, renamed into place),
with the lake file the write will replace and that file's identity before it (inode, mtime,
size). The rows go to the catalog with the step's other rows once the write is done, and the
file is deleted once the catalog has committed them (``Catalog.write``); a write that fails
deletes it (nothing changed, nothing to record).

A process that dies in between (killed, out of memory, power cut) leaves its file behind: the
next catalog write of any process on the desk takes the files whose writer is gone. If the
lake file is no longer the one it was before, the write happened and the rows are recorded;
if it is the same, the write never happened, the rows are dropped, and the next run finds the
change again. Recording is idempotent: a row identical to one recorded (same run, instant,
cell and values) is not inserted twice, so a file applied again (a writer killed after the
commit, before the delete) changes nothing.

A writer is named in the file's name by its host, pid and start time: a file of another host
is never taken (its writer's state cannot be known here), and a pid a restarted container
reuses does not keep a dead writer's file pending. A file that cannot be read, or whose rows
the catalog refuses, is set aside as ``<name>.unreadable`` with a warning (Health names it):
it never stops a write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enrich.store.lake import file_id, write_bytes_atomic

log = logging.getLogger(__name__)

DIRECTORY = "journal"  # under the data directory, next to the catalog
SUFFIX = ".json"
Inserts = dict[str, list[dict[str, Any]]]
FileState = list[int] | None  # a lake file's (inode, mtime_ns, size); None: no file


@dataclass(frozen=True)
class Entry:
    """A journal file's content: catalog rows (table → rows) about a write of ``lake_file``
    (relative to the lake's root; None: rows about no one file), which was ``before``."""

    inserts: Inserts
    lake_file: str | None = None
    before: FileState = None


def write(directory: Path, entry: Entry) -> Path:
    """Write ``entry`` to a new journal file in ``directory``, durably (the data and the
    directory entry are fsynced), and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    name = f"{pid}-{_started(pid)}-{HOST}-{uuid.uuid4().hex}"
    data = json.dumps({"inserts": entry.inserts, "lake_file": entry.lake_file,
                       "before": entry.before}, default=_encode).encode()
    path = directory / f"{name}{SUFFIX}"
    write_bytes_atomic(data, path, directory / f".tmp-{name}.part")
    _fsync_dir(directory)
    return path


def orphans(directory: Path, alive: Callable[[int], bool]) -> list[Path]:
    """The journal files in ``directory`` whose writer is gone (by name); a gone writer's
    leftover temp file is deleted. A writer of this host is gone when ``alive(pid)`` is false,
    or when its pid now names a process started at another time."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        parts = name.removeprefix(".tmp-").split("-", 3)
        if len(parts) < 4 or not parts[0].isdigit() or parts[2] != HOST:
            continue
        pid, started = int(parts[0]), parts[1]
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


def read(path: Path) -> Entry | None:
    """The entry of a journal file; None if it is gone. A file that cannot be read is set
    aside (``.unreadable``) with a warning, and None returned."""
    try:
        data = json.loads(path.read_bytes(), object_hook=_decode)
        inserts = data["inserts"]
        if not isinstance(inserts, dict) or not all(
                isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
                for rows in inserts.values()):
            raise ValueError("not a table → rows mapping")
        before = data.get("before")
        return Entry(inserts, data.get("lake_file"),
                     None if before is None else [int(v) for v in before])
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


def file_state(path: Path) -> FileState:
    """A lake file's identity (``lake.file_id``) as ``Entry.before`` holds it."""
    fid = file_id(path)
    return None if fid is None else list(fid)


def remove(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _host_tag() -> str:
    """This host, as a file name part (no "-"): a digest of its name."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


HOST = _host_tag()


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
