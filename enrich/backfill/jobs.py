"""Backfills: resumable, quota-aware history for every dataset.

A backfill fills one dataset (bars, dividends, splits, earnings, news or options) for some
symbols over a window of session dates. It is a run in ``runs`` (kind ``backfill``), so the
history and health pages show it, and its work lives in the catalog:

    backfills           one row per backfill: the request, its window, paused/cancelled
    backfill_progress   one row per chunk: pending | running | done | failed, attempts,
                        requests expected and made, records, last error
    backfill_contracts  for options: the contracts followed on each session

``enrich.backfill.plan`` cuts a request into chunks of one provider request each (the
request-count model the dry run and the executor share); ``enrich.backfill.runner`` runs
them, resumably and below the runs' priority. This module is the face the CLI and the
dashboard use: the read models (``backfill_progress_summary`` and the drilldowns) and the
actions (start in the background, pause, cancel, resume).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from enrich.backfill.plan import (
    DATASETS,
    BackfillRequest,
    Chunk,
    Plan,
    plan_backfill,
    requests_for,
)
from enrich.backfill.runner import (
    BACKFILL_PRIORITY,
    BackfillBusyError,
    Backfiller,
    BackfillSummary,
    Progress,
)
from enrich.config import Settings
from enrich.errors import EnrichError, StateError
from enrich.providers import Provider
from enrich.store import runs
from enrich.store.catalog import Catalog, transaction, utcnow
from enrich.store.store import Store


class UnknownBackfillError(EnrichError):
    error_class = "unknown_backfill"



# -- read models ------------------------------------------------------------------------------
def backfill_progress_summary(catalog: Catalog, backfill_id: str | None = None,
                              now: dt.datetime | None = None, limit: int = 50
                              ) -> list[dict[str, Any]]:
    """Backfills (newest first), each with its progress and throughput.

    Per backfill: ``status`` (running | complete | paused | cancelled | failed | interrupted
    | incomplete), chunks total / done / failed / pending, requests expected / made /
    remaining, records, the last run (state, start, requests) and, for a running backfill,
    ``requests_per_min`` measured over its current run and ``eta_s`` = remaining requests at
    that rate (remaining chunks at the measured chunk rate when there were no requests).
    """
    now = now or utcnow()
    where, params = ("WHERE b.backfill_id = ?", [backfill_id]) if backfill_id else ("", [])
    sql = f"""
        WITH p AS (
            SELECT backfill_id, count(*) AS chunks_total,
                   count(*) FILTER (state = 'done') AS chunks_done,
                   count(*) FILTER (state = 'failed') AS chunks_failed,
                   count(*) FILTER (state = 'running') AS chunks_running,
                   count(*) FILTER (state = 'pending') AS chunks_pending,
                   CAST(coalesce(sum(requests_expected), 0) AS BIGINT) AS requests_expected,
                   CAST(coalesce(sum(requests_expected) FILTER (state <> 'done'), 0)
                       AS BIGINT) AS requests_remaining,
                   CAST(coalesce(sum(requests_made), 0) AS BIGINT) AS requests_made,
                   CAST(coalesce(sum(records), 0) AS BIGINT) AS records,
                   max(updated_at) AS last_chunk_at,
                   arg_max(last_error, updated_at) FILTER (state = 'failed') AS last_error,
                   count(*) FILTER (dataset = 'option_contracts') AS listings,
                   count(*) FILTER (dataset = 'option_contracts' AND state = 'done')
                       AS listings_done,
                   count(*) FILTER (dataset = 'option_bars') AS contract_chunks
            FROM backfill_progress GROUP BY backfill_id),
        rc AS (
            SELECT p.backfill_id, count(*) AS run_chunks_done
            FROM backfill_progress p JOIN backfills b USING (backfill_id)
            WHERE p.run_id = b.last_run_id AND p.state IN ('done', 'failed')
            GROUP BY p.backfill_id)
        SELECT b.backfill_id, b.dataset, b.symbols, b.window_start, b.window_end, b.spec,
               b.provider, b.status AS intent, b.created_at, b.updated_at, b.last_run_id,
               b.paused_by, b.paused_at,
               r.state AS run_state, r.started_at AS run_started_at,
               r.finished_at AS run_finished_at, r.requests AS run_requests,
               r.message AS run_message, coalesce(rc.run_chunks_done, 0) AS run_chunks_done,
               coalesce(p.chunks_total, 0) AS chunks_total,
               coalesce(p.chunks_done, 0) AS chunks_done,
               coalesce(p.chunks_failed, 0) AS chunks_failed,
               coalesce(p.chunks_running, 0) AS chunks_running,
               coalesce(p.chunks_pending, 0) AS chunks_pending,
               coalesce(p.requests_expected, 0) AS requests_expected,
               coalesce(p.requests_remaining, 0) AS requests_remaining,
               coalesce(p.requests_made, 0) AS requests_made,
               coalesce(p.records, 0) AS records, p.last_chunk_at, p.last_error,
               coalesce(p.listings, 0) AS listings, coalesce(p.listings_done, 0) AS listings_done,
               coalesce(p.contract_chunks, 0) AS contract_chunks
        FROM backfills b LEFT JOIN p USING (backfill_id) LEFT JOIN rc USING (backfill_id)
        LEFT JOIN runs r ON r.run_id = b.last_run_id
        {where} ORDER BY b.updated_at DESC NULLS LAST, b.created_at DESC LIMIT ?"""
    rows = catalog.query(sql, [*params, limit]).to_dicts()
    for r in rows:
        for k in ("symbols", "spec"):
            if isinstance(r.get(k), str):
                r[k] = json.loads(r[k])
        r.update(_throughput(r, now))
        r["status"] = _status(r)
        r["fraction"] = (r["chunks_done"] / r["chunks_total"]) if r["chunks_total"] else 0.0
        r["awaiting_listings"] = (r["dataset"] == "options"
                                  and r["listings_done"] < r["listings"])
    return rows


def _throughput(r: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    running = r["run_state"] in ("queued", "running")
    elapsed = None
    if r["run_started_at"] is not None:
        elapsed = ((r["run_finished_at"] or now) - r["run_started_at"]).total_seconds()
    rpm = eta = None
    if elapsed and elapsed > 0:
        if r["run_requests"]:
            rpm = r["run_requests"] / elapsed * 60.0
        if running:
            left = r["chunks_pending"] + r["chunks_running"]
            if rpm and r["requests_remaining"]:
                eta = r["requests_remaining"] / rpm * 60.0
            elif r["run_chunks_done"]:
                eta = left * elapsed / r["run_chunks_done"]
    return {"elapsed_s": elapsed, "requests_per_min": rpm, "eta_s": eta}


def _status(r: dict[str, Any]) -> str:
    if r["run_state"] in ("queued", "running"):
        return "running"
    if r["chunks_total"] and r["chunks_done"] == r["chunks_total"] \
            and r["listings_done"] == r["listings"]:
        return "complete"
    if r["intent"] in ("paused", "cancelled"):
        return r["intent"]
    if r["chunks_failed"] and not (r["chunks_pending"] or r["chunks_running"]):
        return "failed"
    if r["run_state"] == "interrupted":
        return "interrupted"
    return "incomplete"


def backfill_steps(catalog: Catalog, backfill_id: str) -> pl.DataFrame:
    """Per symbol (the underlying for options) and step: chunks, states, requests, records,
    the window covered and the newest error."""
    return catalog.query("""
        WITH u AS (SELECT DISTINCT contract, symbol FROM backfill_contracts
                   WHERE backfill_id = ?)
        SELECT coalesce(u.symbol, p.symbol) AS symbol, p.dataset AS step,
               count(*) AS chunks,
               count(*) FILTER (p.state = 'done') AS done,
               count(*) FILTER (p.state = 'failed') AS failed,
               count(*) FILTER (p.state IN ('pending', 'running')) AS pending,
               CAST(sum(p.requests_expected) AS BIGINT) AS requests_expected,
               CAST(sum(p.requests_made) AS BIGINT) AS requests_made,
               CAST(sum(p.records) AS BIGINT) AS records,
               min(p.window_start) AS window_start, max(p.window_end) AS window_end,
               arg_max(p.last_error, p.updated_at) FILTER (p.state = 'failed') AS last_error
        FROM backfill_progress p LEFT JOIN u ON p.dataset = 'option_bars'
             AND u.contract = p.symbol
        WHERE p.backfill_id = ?
        GROUP BY ALL ORDER BY 1, min(CASE p.dataset
            WHEN 'reference' THEN -1 WHEN 'splits' THEN 0 WHEN 'dividends' THEN 1
            WHEN 'earnings' THEN 2
            WHEN 'news' THEN 3 WHEN 'bars' THEN 4 WHEN 'features' THEN 5 WHEN 'rates' THEN 5
            WHEN 'option_contracts' THEN 6 ELSE 7 END)""", [backfill_id, backfill_id])


def backfill_chunks(catalog: Catalog, backfill_id: str, state: str | None = None,
                    limit: int = 500) -> pl.DataFrame:
    """The chunks of a backfill (optionally in one state), in window order."""
    where, params = "backfill_id = ?", [backfill_id]
    if state:
        where += " AND state = ?"
        params.append(state)
    return catalog.query(
        f"SELECT dataset AS step, symbol, window_start, window_end, state, attempts, "
        f"requests_expected, requests_made, records, last_error, updated_at, run_id "
        f"FROM backfill_progress WHERE {where} "
        f"ORDER BY symbol, window_start, dataset LIMIT ?", [*params, limit])


def backfill_rebases(catalog: Catalog, backfill_id: str) -> pl.DataFrame:
    """When the backfill's runs re-based bars on splits (``compute_log`` status 'rebased')."""
    return catalog.query("""
        SELECT c.symbol, c.timeframe, c.started_at, c.records, c.run_id
        FROM compute_log c JOIN runs r USING (run_id)
        WHERE r.kind = 'backfill' AND json_extract_string(r.params, '$.backfill_id') = ?
          AND c.status = 'rebased' ORDER BY c.started_at""", [backfill_id])


def backfill_request(catalog: Catalog, backfill_id: str) -> BackfillRequest:
    """The request of a stored backfill, pinned to its window (to resume it)."""
    rows = catalog.query("SELECT spec, window_start, window_end FROM backfills "
                         "WHERE backfill_id = ?", [backfill_id])
    if rows.is_empty():
        raise UnknownBackfillError(f"no backfill {backfill_id}; list them with "
                                   "`python -m enrich backfill list`")
    spec, ws, we = rows.row(0)
    return BackfillRequest.from_spec(spec, (ws, we))


def find_resumable(catalog: Catalog, request: BackfillRequest) -> str | None:
    """The newest unfinished backfill made by the same request (its window may be older)."""
    want = {**request.validated().spec()}
    for r in backfill_progress_summary(catalog, limit=500):
        spec = r["spec"] or {}
        if r["status"] in ("complete", "running"):
            continue
        if {k: spec.get(k) for k in want} == want:
            return r["backfill_id"]
    return None


# -- actions (dashboard and CLI) -------------------------------------------------------------
_live: dict[str, tuple[threading.Thread, threading.Event, str]] = {}
_live_lock = threading.Lock()


class BackfillStateError(StateError):
    """A pause or cancel the backfill's state refuses: it is complete, or cancelled.
    ``status`` is its status (``backfill_progress_summary``)."""

    error_class = "backfill_finished"

    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status


class NothingToDoError(BackfillStateError):
    """A start or resume of a backfill with no chunk left to run (it is complete; or, retrying
    failed chunks, none failed): nothing was recorded, as the CLI's "nothing left to do".
    ``status`` is the backfill's status (``complete`` for one never stored)."""

    error_class = "nothing_to_do"

    def __init__(self, message: str, backfill_id: str, status: str):
        super().__init__(message, status)
        self.backfill_id = backfill_id


@dataclass(frozen=True)
class StopRequest:
    """What ``request_stop`` did: ``run_id`` the run asked to stop (None if none was running),
    ``changed`` False when the backfill already had this intent (nothing was recorded),
    ``status`` the backfill's status before the request, and for a pause, who paused it and
    when (this request, or the first one when it was already paused)."""

    run_id: str | None
    changed: bool
    status: str
    paused_by: str | None = None
    paused_at: dt.datetime | None = None


def request_stop(catalog: Catalog, backfill_id: str, intent: str, by: str) -> StopRequest:
    """Pause (``intent='paused'``) or cancel a backfill: it stops between chunks, in any
    process. Both keep every chunk done so far; a paused or cancelled backfill can be resumed.

    Refused (``BackfillStateError``) for a complete backfill, and for a cancelled one (a pause
    of one being cancelled too); a second pause, or a cancel of one still stopping for a
    cancel, changes nothing. The state is read and the intent written under the catalog's
    lock, so the backfill cannot end in between.
    """
    if intent not in ("paused", "cancelled"):
        raise ValueError(f"intent must be 'paused' or 'cancelled', got {intent!r}")
    now = utcnow()
    with catalog.connect() as con:
        rows = backfill_progress_summary(catalog, backfill_id, now)  # nested: the same lock
        if not rows:
            raise UnknownBackfillError(f"no backfill {backfill_id}; list them with "
                                       "`python -m enrich backfill list`")
        status, held, run_id = rows[0]["status"], rows[0]["intent"], rows[0]["last_run_id"]
        running = status == "running"
        verb = "pause" if intent == "paused" else "cancel"
        if status in ("complete", "cancelled"):  # neither is running
            raise BackfillStateError(f"backfill {backfill_id} is {status}: nothing to {verb}"
                                     + ("" if status == "complete" else
                                        f"; resume it with `python -m enrich backfill resume "
                                        f"{backfill_id}`"), status)
        if held == "cancelled" and intent == "paused":  # running, stopping for a cancel
            raise StateError(f"backfill {backfill_id} is being cancelled: its run stops "
                             "after the current chunk")
        if held == intent:
            return StopRequest(run_id if running else None, False, status,
                               *((rows[0]["paused_by"], rows[0]["paused_at"])
                                 if intent == "paused" else (None, None)))
        with transaction(con):
            con.execute("UPDATE backfills SET status = ?, updated_at = ? WHERE backfill_id = ?",
                        [intent, now, backfill_id])
            if intent == "paused":
                con.execute("UPDATE backfills SET paused_by = ?, paused_at = ? "
                            "WHERE backfill_id = ?", [by, now, backfill_id])
            if running:
                runs.request_cancel_in(con, run_id, now, by)
    with _live_lock:
        live = _live.get(backfill_id)
    if live is not None:
        live[1].set()  # in this process: no need to wait for the catalog poll
    return StopRequest(run_id if running else None, True, status,
                       *((by, now) if intent == "paused" else (None, None)))


def stop_backfill(catalog: Catalog, backfill_id: str, intent: str, by: str) -> str | None:
    """``request_stop``, for callers that need only the run asked to stop (None if none was
    running)."""
    return request_stop(catalog, backfill_id, intent, by).run_id


def start_in_background(settings: Settings, request: BackfillRequest | None = None, *,
                        backfill_id: str | None = None, retry_failed: bool = False,
                        store: Store | None = None, provider: Provider | None = None,
                        on_done: Callable[[BackfillSummary | BaseException], None] | None = None
                        ) -> str:
    """Start (or resume, by ``backfill_id``) a backfill on a daemon thread; return its run id.

    The run's row is written before this returns, so pages see it at once. The provider
    queues on the rate limiter every process of the data directory shares. A backfill with
    no chunk left to run raises ``NothingToDoError`` and records no run.
    """
    from enrich.providers import make_provider

    store = store or Store.from_settings(settings)
    own_provider = provider is None
    provider = provider or make_provider(settings)
    if request is None:
        if backfill_id is None:
            raise ValueError("give a request or a backfill_id")
        request = backfill_request(store.catalog, backfill_id)
    bf = Backfiller(store, provider, settings)
    try:
        plan = bf.plan(request)
        if not plan.todo(retry_failed) and not plan.awaiting_listings:
            what = "no failed chunks to retry" if retry_failed else "nothing left to do"
            rows = backfill_progress_summary(store.catalog, plan.backfill_id)
            raise NothingToDoError(f"backfill {plan.backfill_id}: {what} — {plan.describe()}",
                                   plan.backfill_id, rows[0]["status"] if rows else "complete")
        run_id = bf.prepare(plan, retry_failed=retry_failed)
    except BaseException:
        if own_provider:
            bf.close()
        raise
    cancel = threading.Event()

    def work() -> None:
        try:
            try:
                result: BackfillSummary | BaseException = bf.execute(
                    plan, run_id, retry_failed=retry_failed, cancel=cancel)
            except BaseException as exc:  # recorded on the run by the execution itself
                result = exc
            finally:
                if own_provider:
                    bf.close()
            if on_done is not None:
                on_done(result)  # part of the backfill (a fill's re-check): still live
        finally:
            with _live_lock:
                _live.pop(plan.backfill_id, None)

    thread = threading.Thread(target=work, name=f"backfill-{plan.backfill_id}", daemon=True)
    with _live_lock:
        _live[plan.backfill_id] = (thread, cancel, run_id)
    thread.start()
    return run_id


def live_backfills() -> dict[str, str]:
    """Backfills executing in this process: backfill id -> run id."""
    with _live_lock:
        return {bid: run_id for bid, (t, _, run_id) in _live.items() if t.is_alive()}


def wait_for(backfill_id: str, timeout: float | None = None) -> bool:
    """Wait for a backfill started by this process to end; False on timeout."""
    with _live_lock:
        live = _live.get(backfill_id)
    if live is None:
        return True
    live[0].join(timeout)
    return not live[0].is_alive()


__all__ = [
    "BACKFILL_PRIORITY", "DATASETS", "BackfillBusyError", "BackfillRequest",
    "BackfillStateError", "BackfillSummary", "Backfiller", "Chunk", "NothingToDoError", "Plan",
    "Progress", "StopRequest", "UnknownBackfillError", "backfill_chunks",
    "backfill_progress_summary", "backfill_rebases", "backfill_request", "backfill_steps",
    "find_resumable", "live_backfills", "plan_backfill", "request_stop", "requests_for",
    "start_in_background", "stop_backfill", "wait_for",
]
