"""Commands for the scheduler and services: ``schedule``, ``serve``, ``health``,
``runs retry|cancel`` and the hand-off behind ``run --background``.

Imported by ``enrich.cli``; registers through ``command`` and ``extend_parser``.
Exit codes as everywhere: 0 success (a pause of a paused schedule, or a resume of one not
paused, changes nothing and says so), 1 failed (some symbols, an unhealthy check), 2 bad usage
(unknown run, no live ``serve`` for ``--background``) or a run whose state refuses the action
(cancel or retry of a run that ended, retry of one without failures).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import sys
import threading
import time

from enrich import ui
from enrich.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    bounded_float,
    command,
    extend_parser,
    held_symbols,
    print_json,
    report_run,
    run_in_foreground,
    who,
)
from enrich.cli.progress import TerminalProgress
from enrich.config import Settings
from enrich.errors import EnrichError, StateError
from enrich.pipeline import scheduler as sched
from enrich.store import runs
from enrich.store.catalog import utcnow

SERVE_STOP_S = 3.0  # grace for runs to reach a symbol boundary; serve exits within ~5 s


def _store(settings: Settings):
    from enrich.store.store import Store

    return Store.from_settings(settings)


def _ts(v: dt.datetime | None) -> str:
    return "never" if v is None else v.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- schedule -------------------------------------------------------------------------------
@command("schedule")
def cmd_schedule(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    action = args.schedule_cmd or "show"
    now = utcnow()
    if action == "pause":
        changed, state = sched.set_paused(store.catalog, args.by or who(), args.reason, now)
        if not changed:  # a second pause: the first one's record stands (exit 0: it is paused)
            print(f"schedule already paused by {state.paused_by} at {_ts(state.paused_at)}"
                  + (f" ({state.pause_reason})" if state.pause_reason else "")
                  + "; nothing changed")
            return EXIT_OK
        print(f"schedule paused by {state.paused_by}"
              + (f" ({state.pause_reason})" if state.pause_reason else "")
              + "; it stays paused across restarts until `python -m enrich schedule resume`")
        return EXIT_OK
    if action == "resume":
        changed, state = sched.set_resumed(store.catalog, args.by or who(), now)
        nxt = sched.next_fire_after(settings.schedule_utc, now)
        if not changed:
            print("schedule not paused; nothing changed"
                  + (f" (last resumed by {state.resumed_by} at {_ts(state.resumed_at)})"
                     if state.resumed_by else "") + f"; next fire {sched.fire_label(nxt)}")
            return EXIT_OK
        print(f"schedule resumed; next fire {sched.fire_label(nxt)}")
        return EXIT_OK
    state = sched.read_state(store.catalog)
    live = state.liveness(now)
    # The running owner's next fire (its own ENRICH_SCHEDULE_UTC, which this shell's may not
    # be); else what this shell's setting gives.
    owners = live == "running" and state.next_fire_at is not None and state.next_fire_at > now
    upcoming = None if state.paused else (
        state.next_fire_at if owners else sched.next_fire_after(settings.schedule_utc, now))
    daily = (state.next_fire_at.astimezone(dt.UTC).time() if owners and state.next_fire_at
             else settings.schedule_utc)
    if args.json:
        print_json({
            "schedule_utc": daily.strftime("%H:%M"), "state": live,
            "paused": state.paused, "paused_by": state.paused_by, "paused_at": state.paused_at,
            "pause_reason": state.pause_reason, "resumed_by": state.resumed_by,
            "resumed_at": state.resumed_at, "pid": state.pid, "host": state.host,
            "heartbeat_at": state.heartbeat_at, "next_fire_utc": upcoming,
            "next_fire_exchange": sched.in_exchange_time(upcoming) if upcoming else None,
        })
        return EXIT_OK
    local = sched.in_exchange_time(sched.next_fire_after(daily, now))
    print(f"daily at {daily:%H:%M} UTC ({local:%H:%M} {local.tzname()} in New York)"
          + (f"; this shell's ENRICH_SCHEDULE_UTC says {settings.schedule_utc:%H:%M}, the "
             "running scheduler's own setting holds" if daily != settings.schedule_utc else ""))
    if state.paused:
        print(f"paused by {state.paused_by} at {_ts(state.paused_at)}"
              + (f": {state.pause_reason}" if state.pause_reason else ""))
    else:
        print(f"next fire {sched.fire_label(upcoming)}"
              + ("" if live in ("running", "paused") else " (if a scheduler is running)"))
    owner = {"running": f"running in pid {state.pid} on {state.host}",
             "paused": f"running (paused) in pid {state.pid} on {state.host}",
             "dead": f"dead: pid {state.pid} on {state.host} last beat at "
                     f"{_ts(state.heartbeat_at)}",
             "stopped": "not running: start `python -m enrich serve` or the dashboard"}[live]
    print(f"scheduler {owner}")
    return EXIT_OK


# -- serve ----------------------------------------------------------------------------------
def log_handler(stream) -> logging.Handler:
    """``serve``'s log lines on ``stream``, each stamped with its instant in UTC, the zone
    named (logging's default is the host's local time, unnamed)."""
    formatter = logging.Formatter("%(asctime)s UTC %(levelname)s %(name)s: %(message)s",
                                  datefmt="%Y-%m-%d %H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    return handler


@command("serve", creates=lambda args: True)
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.service import Services
    from enrich.store.universe import ensure_demo_universe

    if not settings.scheduler:
        raise UsageError("`serve` runs the daily scheduler, but ENRICH_SCHEDULER=off; "
                         "unset it (or set it to on)")
    if args.heartbeat_s <= 0:
        raise UsageError("--heartbeat-s must be positive")
    logging.basicConfig(level=logging.INFO, handlers=[log_handler(sys.stderr)])
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every URL at INFO
    from enrich.redact import protect_handlers

    protect_handlers()  # no log line shows the API key, whoever wrote it
    store = _store(settings)
    ensure_demo_universe(store.catalog)
    bound = None
    if settings.api_host is not None:  # bind first: a taken port exits 2 before anything runs
        from enrich.api.serving import ApiServer

        bound = ApiServer(settings.api_host, settings.api_port)
    svc = Services(settings, store=store, heartbeat_s=args.heartbeat_s)
    stop = threading.Event()
    api = None

    def on_signal(signum, _frame) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        svc.start()
        owner = "" if svc.owns_schedule else (
            " (standing by: another process owns the schedule; this one takes over when "
            "it stops)")
        print(f"serving {settings.data_dir.resolve()} (pid {os.getpid()}): daily at "
              f"{settings.schedule_utc:%H:%M} UTC, next fire "
              f"{sched.fire_label(svc.next_fire_time())}{owner}; Ctrl-C to stop",
              file=sys.stderr, flush=True)
        if bound is not None:
            from enrich.api.serving import serve as serve_api

            try:
                api, source = serve_api(settings, svc, bound)
            except BaseException:
                svc.stop(timeout=SERVE_STOP_S)
                raise
            shown = source if source == "ENRICH_API_TOKEN" else "`python -m enrich api token`"
            print(f"api listening on {api.url}/api/v1 (docs {api.url}/docs); actions need "
                  f"the token ({shown})", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping: running runs stop after their current symbols", file=sys.stderr,
              flush=True)
        if api is not None:
            api.stop()
        svc.stop(timeout=SERVE_STOP_S)
    finally:
        if bound is not None and api is None:
            bound.sock.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print("stopped", file=sys.stderr, flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        # A symbol still mid-fetch (e.g. waiting on the rate limiter): its run is already
        # marked interrupted and lake writes are atomic, so do not wait for it.
        os._exit(EXIT_OK)
    return EXIT_OK


# -- run --background -----------------------------------------------------------------------
@command("__background_run")
def cmd_background_run(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.pipeline.requests import NoLiveSchedulerError, hand_off_run
    from enrich.store.universe import ensure_demo_universe

    params = args.params
    store = _store(settings)
    ensure_demo_universe(store.catalog)
    if params.symbols:
        held_symbols(store.catalog, list(params.symbols))  # in any case, as in the foreground
    try:
        run_id, owner = hand_off_run(store, params, settings.provider, utcnow())
    except NoLiveSchedulerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"run {run_id} queued for serve (pid {owner.pid} on {owner.host}); "
          f"follow it with `python -m enrich runs`, stop it with "
          f"`python -m enrich runs cancel {run_id}`")
    return EXIT_OK


# -- runs retry | cancel --------------------------------------------------------------------
@command("runs retry")
def cmd_runs_retry(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.pipeline.engine import Engine
    from enrich.pipeline.requests import UnknownRunError, retry_params
    from enrich.providers import make_provider

    store = _store(settings)
    try:
        params = retry_params(store.catalog, args.run_id)
    except UnknownRunError as exc:
        raise UsageError(str(exc)) from None
    engine = Engine(store, make_provider(settings), settings)
    as_json = getattr(args, "json", False)
    if not as_json:
        print(f"retrying {len(params.symbols or [])} failed symbol(s) of {args.run_id}: "
              f"{', '.join(params.symbols or [])}", file=sys.stderr)
    run_id = engine.create_run(params, "retry", parent_run_id=args.run_id)
    summary = run_in_foreground(engine, params, "retry", run_id,
                                None if as_json else TerminalProgress().symbol_done)
    return report_run(summary, as_json, parent_run_id=args.run_id)


@command("runs cancel")
def cmd_runs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.pipeline.requests import UnknownRunError, request_cancel

    store = _store(settings)
    runs.close_dead_runs(store)  # a run whose process is gone is not cancelled: it ended
    try:
        before = request_cancel(store.catalog, args.run_id, args.by or who(), utcnow())
    except UnknownRunError as exc:
        raise UsageError(str(exc)) from None
    if before == "queued":
        print(f"run {args.run_id} cancelled before it started")
        return EXIT_OK
    if before != "running":  # nothing recorded on it (request_cancel leaves it alone)
        raise StateError(f"run {args.run_id} already ended: {before}")
    print(f"cancel requested: run {args.run_id} stops after its current symbols "
          "(symbols already enriched keep their data)")
    if args.wait:
        deadline = time.monotonic() + args.wait
        state: str | None = before
        while time.monotonic() < deadline:
            state = runs.state_of(store.catalog, args.run_id)
            if state not in ("queued", "running"):
                break
            time.sleep(0.5)
        print(f"run {args.run_id}: {state}")
        return EXIT_OK if state not in ("queued", "running") else EXIT_FAILED
    return EXIT_OK


# -- health ---------------------------------------------------------------------------------
@command("health")
def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.health import health, shared_probes
    from enrich.providers import make_provider

    store = _store(settings)
    runs.close_dead_runs(store)  # a killed run's process is gone: shown interrupted
    try:
        provider = make_provider(settings)
    except EnrichError as exc:
        provider = None
        print(f"provider: {exc}", file=sys.stderr)
    # The probe's answer is shared with the desk's other processes for a minute: `health`
    # from cron every minute spends at most one request of the plan's quota a minute.
    try:
        h = health(settings, store, provider, probe=not args.no_probe,
                   probes=shared_probes(settings))
    finally:
        close = getattr(provider, "close", None)  # its connection pool (Massive)
        if close is not None:
            close()
    if args.json:
        print_json(h)
        return EXIT_OK if h["ok"] else EXIT_FAILED
    s = h.get("scheduler") or {}
    cat = h["catalog"]
    prov = h["provider"]
    print(f"overall      {'ok' if h['ok'] else 'NOT OK'}")
    if s:
        extra = ""
        if s["state"] in ("running", "paused"):
            extra = f" (pid {s['pid']} on {s['host']}, heartbeat {s['heartbeat_age_s']}s ago)"
        elif s["state"] == "dead":
            extra = f" (pid {s['pid']} on {s['host']}, last beat {_ts(s['heartbeat_at'])})"
        print(f"scheduler    {s['state']}{extra}")
        if s["paused"]:
            print(f"paused       by {s['paused_by']} at {_ts(s['paused_at'])}"
                  + (f": {s['pause_reason']}" if s["pause_reason"] else ""))
        print(f"next fire    {h['schedule']['next_fire_label']}")
        missed = h["schedule"].get("missed_fires") or []
        if missed:
            print(f"missed       {ui.plural(len(missed), 'daily run')} in 30 days (paused, or "
                  f"no scheduler running; last {_ts(missed[-1])})")
        last = h.get("last_run")
        if last:
            print(f"last run     {last['state']} ({last['kind']}, {_ts(last['requested_at'])}): "
                  f"{last['message'] or ''}")
        else:
            print("last run     none yet")
    print(f"catalog      {'ok' if cat['ok'] else 'FAILED'} "
          + (f"({cat['query_ms']} ms to open and query)" if cat["ok"] else f"({cat['error']})"))
    size = h["lake"]["bytes"]
    print(f"lake         {size / 1e6:.1f} MB" if size is not None else "lake         unknown")
    for f in h["lake"].get("quarantined_now", []):
        print(f"lake file    {f['path']} is unreadable ({f['reason']}): moved to "
              f"{f['moved_to']}; the next run fetches it again")
    for f in h["lake"].get("unreadable", []):
        print(f"lake file    {f['path']} is unreadable ({f['reason']}) and could not be moved "
              "aside now; `health` tries again")
    shown = {f["moved_to"] for f in h["lake"].get("quarantined_now", [])}
    for f in h["lake"].get("awaiting_refetch", []):
        if f["moved_to"] not in shown:
            print(f"lake file    {f['original']} was unreadable ({f['reason']}); quarantined "
                  f"at {_ts(f['quarantined_at'])} in {f['moved_to']}, awaiting the next run")
    jr = h.get("journal") or {}
    for name in jr.get("set_aside", []):
        print(f"journal      {jr['path']}/{name} could not be recorded: the restatements a "
              "stopped process found before it are not in the catalog (see the log); delete "
              "the file once looked at")
    if jr.get("pending"):
        print(f"journal      {len(jr['pending'])} file(s) of restatements not recorded yet in "
              f"{jr['path']}: the next catalog write records those a stopped process left")
    probe = (f"{prov['status']} ({prov['latency_ms']} ms)" if prov["ok"] is not None
             else prov["status"])
    if prov.get("probe_age_s"):  # another process's probe, shared for a minute
        probe += f", probed {prov['probe_age_s']:.0f} s ago"
    print(f"provider     {prov['name']}{' (demo data)' if prov['is_demo'] else ''}: {probe}"
          + (f" — {prov['message']}" if prov["ok"] is False and prov["message"] else ""))
    print(f"api key      {h['api_key']}")
    fails = h.get("failures_24h") or {}
    # Counted in fetch steps (one dataset of one symbol), as the Health page's table says.
    print("failures 24h " + ("failed fetch steps by error class: "
                             + ", ".join(f"{k} {v}" for k, v in fails.items()) if fails
                             else "none"))
    return EXIT_OK if h["ok"] else EXIT_FAILED


# -- parser ---------------------------------------------------------------------------------
@extend_parser
def _add_commands(sub: argparse._SubParsersAction) -> None:
    sc = sub.add_parser("schedule", help="show, pause or resume the daily schedule")
    sc.add_argument("--json", action="store_true")
    ssub = sc.add_subparsers(dest="schedule_cmd", metavar="ACTION")
    show = ssub.add_parser("show", help="schedule, next fire, paused or not, scheduler state")
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    pause = ssub.add_parser("pause", help="pause the daily run (persists across restarts)")
    pause.add_argument("--reason")
    pause.add_argument("--by", help="who pauses (default: user@host)")
    resume = ssub.add_parser("resume", help="resume the daily run")
    resume.add_argument("--by", help="who resumes (default: user@host)")

    sv = sub.add_parser("serve", help="run the scheduler headless until SIGINT/SIGTERM")
    sv.add_argument("--heartbeat-s", type=bounded_float(0.1, 3600), default=sched.HEARTBEAT_S,
                    help=f"heartbeat interval in seconds (default {sched.HEARTBEAT_S:g})")

    hp = sub.add_parser("health", help="scheduler, catalog, lake, provider; exit 1 if unhealthy")
    hp.add_argument("--json", action="store_true")
    hp.add_argument("--no-probe", action="store_true",
                    help="skip the provider probe (it costs one request with Massive)")

    runs = sub.choices.get("runs")
    actions = [a for a in (runs._actions if runs else [])
               if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        return
    rsub = actions[0]
    rr = rsub.add_parser("retry", help="run again only the symbols that failed in RUN_ID")
    rr.add_argument("run_id")
    rr.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    rc = rsub.add_parser("cancel", help="stop RUN_ID between symbols (from any process)")
    rc.add_argument("run_id")
    rc.add_argument("--by", help="who cancels (default: user@host)")
    rc.add_argument("--wait", type=bounded_float(0, 86_400), default=0.0, metavar="SECONDS",
                    help="wait up to SECONDS for the run to end")
