"""Health: what an operator checks first, readable from any process.

``health`` reads only the catalog, the lake directory and the provider's probe, so the
dashboard, ``python -m enrich health`` and the scheduler itself all see the same answer. The
scheduler's state comes from its heartbeat row (``enrich.pipeline.scheduler``): a heartbeat older
than ``DEAD_AFTER_BEATS`` intervals without a clean stop means the owning process died.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
from filelock import FileLock, Timeout

from enrich.config import Settings
from enrich.errors import EnrichError
from enrich.pipeline.scheduler import fire_label, in_exchange_time, next_fire_after, state_from
from enrich.providers import Provider
from enrich.redact import redact
from enrich.schemas import SYMBOL_DATASETS
from enrich.store import journal, runs
from enrich.store.catalog import frame, utcnow
from enrich.store.lake import write_json_atomic
from enrich.store.store import Store

log = logging.getLogger(__name__)

FAILURE_WINDOW = dt.timedelta(hours=24)
# Lake datasets held per symbol of the universe (the rates curve is not one).
_FOLLOWED = (*SYMBOL_DATASETS, "features", "vol_summary")
PROBE_TTL_S = 60.0  # seconds a provider probe's answer is reused (a Massive probe is a request)
PROBE_LOCK_WAIT_S = 45.0  # waited for another process's probe (longer than a probe's timeout)


class ProbeCache:
    """The provider probe's last answer, reused for ``ttl`` seconds.

    Probing Massive costs one request of the plan's quota (5 a minute on the free plan), so a
    monitor polling ``/health?probe=true`` every 10 s would spend more than the plan allows.
    Within ``ttl`` of a probe, callers get its answer and its age (``probe_age_s``); callers
    arriving while a probe is in flight wait for it rather than make their own. Every
    outcome is kept, a failure too (a key refused a second ago is refused still); another
    provider object (new settings, a new key) is probed afresh. ``clock`` is monotonic and
    injectable for tests.

    ``shared``: every process of the desk shares the answer instead (``shared_probes``): it
    is kept in a file of the data directory under a file lock, so ``enrich health`` run from
    cron every minute, the API and the dashboard together spend one request a ``ttl``. The
    file names the provider by ``identity`` (its name, host and a digest of the key, never
    the key); ``clock`` is then wall time (seconds), as every process reads it alike.
    """

    def __init__(self, ttl: float = PROBE_TTL_S,
                 clock: Callable[[], float] | None = None,
                 shared: tuple[Path, str] | None = None):
        self.ttl = ttl
        self._shared = shared
        self._clock = clock or (time.time if shared else time.monotonic)
        self._lock = threading.Lock()
        self._last: tuple[object, float, dict[str, Any]] | None = None  # provider, at, part

    def get(self, provider: object, probe: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``probe()``'s answer, fresh or at most ``ttl`` seconds old, with its age."""
        with self._lock:
            if self._shared is not None:
                return self._get_shared(*self._shared, probe)
            last = self._last
            if last is None or last[0] is not provider or self._clock() - last[1] >= self.ttl:
                part = probe()
                last = self._last = (provider, self._clock(), part)
            age = max(0.0, self._clock() - last[1])
            return {**last[2], "probe_age_s": round(age, 1)}

    def _get_shared(self, path: Path, identity: str,
                    probe: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock", timeout=PROBE_LOCK_WAIT_S)
        try:
            lock.acquire()  # a process probing: the others wait for its answer
        except Timeout:  # its probe hangs (or it is stopped): never wait on it for ever
            return {**probe(), "probe_age_s": 0.0}
        try:
            saved = _read_probe(path)
            now = self._clock()
            if (saved is not None and saved.get("identity") == identity
                    and 0 <= now - saved["at"] < self.ttl):
                return {**saved["part"], "probe_age_s": round(now - saved["at"], 1)}
            part = probe()
            with contextlib.suppress(OSError, TypeError, ValueError):  # then the next asks
                write_json_atomic({"identity": identity, "at": now,
                                   "part": {k: v.isoformat() if isinstance(v, dt.datetime)
                                            else v for k, v in part.items()}}, path)
            return {**part, "probe_age_s": 0.0}
        finally:
            lock.release()


def shared_probes(settings: Settings) -> ProbeCache:
    """The probe cache every process of ``settings``' desk shares (``locks/probe.json``)."""
    digest = hashlib.sha256((settings.api_key or "").encode()).hexdigest()[:16]
    identity = f"{settings.provider} {settings.base_host} {digest}"
    return ProbeCache(shared=(settings.data_dir / "locks" / "probe.json", identity))


def _read_probe(path: Path) -> dict[str, Any] | None:
    """The shared probe file's answer; None if there is none or it cannot be read."""
    try:
        saved = json.loads(path.read_text())
        part = dict(saved["part"])
        if part.get("probed_at") is not None:
            part["probed_at"] = dt.datetime.fromisoformat(part["probed_at"])
        return {"identity": str(saved["identity"]), "at": float(saved["at"]), "part": part}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def health(settings: Settings, store: Store, provider: Provider | None = None,
           clock: Callable[[], dt.datetime] | None = None, *, probe: bool = True,
           probes: ProbeCache | None = None) -> dict[str, Any]:
    """One dict describing the desk's health (instants are UTC-aware datetimes).

    Keys: ``checked_at``, ``scheduler`` (state running | paused | stopped | dead, pause and
    heartbeat details), ``schedule`` (configured time, next fire in UTC and in New York time,
    ``missed_fires``: the daily fires of the last 30 days that did not run),
    ``last_run`` and ``last_scheduled_run``, ``catalog`` (ok, open-and-query ms), ``lake``
    (bytes on disk), ``provider`` (probe result and latency, ``probed_at`` and
    ``probe_age_s``; ``probe=False`` skips the call, which for Massive costs one request; with
    ``probes`` an answer younger than its ``ttl`` is reused), ``failures_24h`` (fetch failures
    by error class),
    ``api_key`` (masked), ``lake`` also lists lake files found unreadable (each quarantined
    on the spot, see ``enrich.store.quarantine``) and those awaiting a re-fetch, ``journal``
    the restatement journal's files not recorded yet and those set aside
    (``enrich.store.journal``: a set-aside file's rows are not in the catalog), and ``ok``
    (catalog reachable, provider fine, scheduler not dead, no lake file unreadable or
    awaiting its re-fetch).
    """
    now = (clock or utcnow)()
    out: dict[str, Any] = {"checked_at": now, "data_dir": str(settings.data_dir.resolve()),
                           "api_key": settings.key_masked}
    lake_files = _lake_files_part(store)  # first: it may quarantine, which the catalog records
    out.update(_catalog_part(settings, store, now))
    if out["catalog"]["ok"]:
        try:  # health reports; it never raises (a catalog busy since the read above)
            out["schedule"]["missed_fires"] = _missed_fires(settings, store, now)
        except Exception as exc:  # noqa: BLE001
            log.warning("health: the missed daily fires could not be read: %s", exc)
            out["schedule"]["missed_fires"] = None
    try:
        size = store.lake.size_bytes()
    except OSError:
        size = None
    out["lake"] = {"path": str(store.lake.root.resolve()), "bytes": size, **lake_files}
    out["journal"] = {"path": _rel(store.catalog.journal_dir, store.data_dir),
                      **journal.listing(store.catalog.journal_dir)}
    out["provider"] = _provider_part(settings, provider, probe, probes, now)
    sched_state = out.get("scheduler", {}).get("state")
    out["ok"] = bool(out["catalog"]["ok"] and out["provider"]["ok"] is not False
                     and sched_state != "dead" and not lake_files["unreadable"]
                     and not lake_files["awaiting_refetch"])
    return out


def _lake_files_part(store: Store) -> dict[str, Any]:
    """Lake files whose footer cannot be read (each is quarantined on the spot), and files
    quarantined earlier whose data the next run has not fetched again yet (of an active
    symbol of the universe, or of a dataset not held per symbol).

    ``unreadable``: ``{path, reason, moved_to}`` (``moved_to`` None if it could not be moved
    now); ``awaiting_refetch``: ``{original, moved_to, reason, quarantined_at}``. Paths are
    relative to the data directory.
    """
    unreadable = []
    try:
        found = store.lake.check_files()
    except OSError as exc:
        found = [(store.lake.root, f"cannot list the lake: {exc.strerror or exc}")]
    for path, reason in found:
        moved = None
        with contextlib.suppress(EnrichError, OSError):
            item = store.lake.quarantine_file(path, reason)
            moved = item.moved_to if item else None
        unreadable.append({"path": _rel(path, store.data_dir), "reason": reason,
                           "moved_to": moved})
    waiting: list[dict[str, Any]] = []
    with contextlib.suppress(EnrichError, duckdb.Error):
        store.catalog.sync_quarantine()
        marks = ",".join("?" * len(_FOLLOWED))
        # A file of a symbol no longer followed (removed, deactivated) awaits nothing: no run
        # fetches it again, and no status of the desk counts it (its copy stays quarantined).
        rows = store.catalog.query(
            "SELECT q.original, q.moved_to, q.dataset, q.symbol, q.reason, q.quarantined_at, "
            "coalesce(s.last_success_at > q.quarantined_at, false) AS fetched_since "
            "FROM quarantine q LEFT JOIN symbol_status s "
            "ON s.symbol = q.symbol AND s.dataset = q.dataset "
            "LEFT JOIN symbols u ON u.symbol = q.symbol "
            f"WHERE q.kind = 'lake_file' AND (q.dataset NOT IN ({marks}) "
            "OR coalesce(u.active, false)) ORDER BY q.quarantined_at DESC", list(_FOLLOWED))
        # Fetched again: a fetch of the symbol × dataset succeeded since, or the file is back
        # where it was (features: only their recomputation writes it).
        waiting = [{k: v for k, v in r.items() if k != "fetched_since"}
                   for r in rows.to_dicts()
                   if not r["fetched_since"] and not (store.data_dir / r["original"]).exists()]
    return {"unreadable": [u for u in unreadable if u["moved_to"] is None],
            "quarantined_now": [u for u in unreadable if u["moved_to"] is not None],
            "awaiting_refetch": waiting}


def _rel(path: Path, base: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).resolve().relative_to(Path(base).resolve()))
    return str(path)


def _catalog_part(settings: Settings, store: Store, now: dt.datetime) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        with store.catalog.connect() as con:
            runs.count_in(con)
            query_ms = (time.perf_counter() - t0) * 1000
            state = state_from(con)
            last = runs.last_run(con)
            last_sched = runs.last_run(con, scheduled=True)
            failures = frame(
                con, "SELECT error_class, count(*) AS n FROM fetch_log "
                     "WHERE status = 'failed' AND started_at >= ? GROUP BY 1 ORDER BY 2 DESC",
                [now - FAILURE_WINDOW])
            retries = con.execute(
                "SELECT count(*) FROM fetch_log WHERE status = 'retried' AND started_at >= ?",
                [now - FAILURE_WINDOW]).fetchall()[0][0]
    except Exception as exc:  # health reports; it never raises
        return {"catalog": {"ok": False, "path": str(settings.catalog_path.resolve()),
                            "query_ms": None, "error": str(exc)}}
    liveness = state.liveness(now)
    next_fire = state.next_fire_at if liveness == "running" else None
    age = (now - state.heartbeat_at).total_seconds() if state.heartbeat_at else None
    return {
        "catalog": {"ok": True, "path": str(settings.catalog_path.resolve()),
                    "query_ms": round(query_ms, 2), "error": None},
        "scheduler": {
            "state": liveness, "paused": state.paused, "paused_by": state.paused_by,
            "paused_at": state.paused_at, "pause_reason": state.pause_reason,
            "resumed_by": state.resumed_by, "resumed_at": state.resumed_at,
            "pid": state.pid, "host": state.host, "started_at": state.started_at,
            "stopped_at": state.stopped_at, "heartbeat_at": state.heartbeat_at,
            "heartbeat_age_s": round(age, 2) if age is not None else None,
            "heartbeat_interval_s": state.heartbeat_interval_s,
        },
        "schedule": _schedule_part(settings, next_fire, now),
        "last_run": last.row(0, named=True) if last.height else None,
        "last_scheduled_run": last_sched.row(0, named=True) if last_sched.height else None,
        "failures_24h": dict(failures.iter_rows()),
        "retries_24h": int(retries),
    }



def _missed_fires(settings: Settings, store: Store, now: dt.datetime) -> list[dt.datetime]:
    """The daily fires of the last ``MISSED_SHOWN`` days that did not run — no run since the
    last scheduled one (paused, or no scheduler running), or recorded ``missed`` — as the
    Overview's "Daily runs missed" counts them (``diagnosis.schedule_facts``); oldest first."""
    from enrich.diagnosis import schedule_facts

    facts = schedule_facts(store.catalog, settings.schedule_utc, now, settings.scheduler)
    return sorted(facts["unrun_fires"] + facts["missed_runs"])


def _schedule_part(settings: Settings, next_fire: dt.datetime | None,
                   now: dt.datetime) -> dict[str, Any]:
    at = settings.schedule_utc
    # The configured time in exchange time today; it moves by an hour across DST changes.
    upcoming = next_fire_after(at, now)
    local = in_exchange_time(upcoming)
    return {
        "time_utc": at.strftime("%H:%M"),
        "time_exchange": f"{local:%H:%M} {local.tzname()}",
        "exchange_tz": "America/New_York",
        "next_fire_utc": next_fire,
        # A string with its offset: the API writes every instant in UTC, which would make
        # this the same value as next_fire_utc.
        "next_fire_exchange": in_exchange_time(next_fire).isoformat() if next_fire else None,
        "next_fire_label": fire_label(next_fire),
    }


def _provider_part(settings: Settings, provider: Provider | None, probe: bool,
                   probes: ProbeCache | None, now: dt.datetime) -> dict[str, Any]:
    part: dict[str, Any] = {"name": settings.provider,
                            "is_demo": bool(getattr(provider, "is_demo", False))}
    if provider is None or not probe:
        part.update(ok=None, status="not probed", latency_ms=None, message=None,
                    probed_at=None, probe_age_s=None)
        return part
    prov = provider

    def run() -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            res = prov.probe()
        except Exception as exc:  # a probe that raises is a failed probe, never a crash
            return {"ok": False, "status": "error", "message": redact(str(exc)),
                    "latency_ms": round((time.perf_counter() - t0) * 1000, 1),
                    "probed_at": now}
        measured = (time.perf_counter() - t0) * 1000
        return {"ok": res.ok, "status": res.status,
                "message": redact(res.message or "") or None,
                "latency_ms": round(res.latency_ms or measured, 1), "probed_at": now}

    part.update(probes.get(provider, run) if probes is not None
                else {**run(), "probe_age_s": 0.0})
    return part
