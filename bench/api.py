"""Benchmark the JSON API against the read model it serves: ``GET /api/v1/overview`` at 5,000
symbols.

Builds the dashboard benchmark's synthetic catalog (``bench/dashboard.py``: 5,000 symbols,
their status, runs, fetch and compute logs) plus a few open alert incidents, then measures,
in the same run, sequential requests of the overview:

* the reference: the read models called directly (``status_view.overview`` and
  ``alerts_view.open_incidents``, exactly what the endpoint calls), no HTTP, no JSON;
* through the app in-process (httpx's ASGI transport): routing, dependencies, JSON;
* over a real socket (uvicorn on 127.0.0.1, one keep-alive httpx client), as ``serve`` does.

Prints the median latency and requests per second of each and the API's overhead as a ratio
of the reference. The four are measured interleaved, one call of each per round. Usage::

    PYTHONPATH=. .venv/bin/python bench/api.py [--symbols 5000 --log-rows 200000 --repeat 21]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from anyio.from_thread import start_blocking_portal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dashboard import NOW, build  # noqa: E402
from enrich.alerts import lifecycle as alert_lifecycle  # noqa: E402
from enrich.api.app import create_app  # noqa: E402
from enrich.api.common import plain  # noqa: E402
from enrich.api.serving import ApiServer  # noqa: E402
from enrich.config import load_settings  # noqa: E402
from enrich.service import Services  # noqa: E402
from enrich.store.store import Store  # noqa: E402
from enrich.views import alerts as alerts_view  # noqa: E402
from enrich.views import status as status_view  # noqa: E402

PATH = "/api/v1/overview"


def medians(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median ms of each function, measured interleaved (one call of each per round), so a
    busy machine slows them alike and the ratios hold."""
    for fn in fns.values():
        fn()  # warm: first-call imports and caches are not what a polling client pays
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def ok(r: httpx.Response) -> None:
    assert r.status_code == 200, r.text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", type=int, default=5000)
    ap.add_argument("--log-rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=21)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="enrich-bench-api-") as tmp:
        settings = load_settings({"ENRICH_DATA_DIR": tmp, "ENRICH_SCHEDULER": "off",
                                  "ENRICH_NOW": NOW.isoformat(),
                                  "ENRICH_API_TOKEN": "bench-token-0123456789"},
                                 dotenv_path=None)
        store = Store.from_settings(settings)
        build(store, args.symbols, args.log_rows)
        wall = dt.datetime.now(dt.UTC)
        opened = alert_lifecycle.evaluate(store.catalog, NOW + dt.timedelta(days=7), wall,
                                          channels=False).opened
        print(f"{args.symbols:,} symbols, {args.log_rows:,} log rows, {len(opened)} open "
              f"incident(s); median of {args.repeat} sequential requests each\n")
        svc = Services(settings, store=store, alerts=False)  # the API reads through it
        app = create_app(settings, svc)

        def direct() -> object:
            return (status_view.overview(store.catalog, NOW),
                    alerts_view.open_incidents(store.catalog, wall))

        server = ApiServer("127.0.0.1", 0).start(app)
        asgi = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")
        try:
            with start_blocking_portal() as portal, \
                    httpx.Client(base_url=server.url, timeout=60) as client:
                m = medians({
                    "direct": direct,
                    "plain": lambda: plain(direct()),
                    "asgi": lambda: ok(portal.call(asgi.get, PATH)),
                    "socket": lambda: ok(client.get(PATH)),
                }, args.repeat)
                portal.call(asgi.aclose)
        finally:
            server.stop()
        ref, encode, asgi_ms, sock = m["direct"], m["plain"], m["asgi"], m["socket"]
        rows = [("read models called directly (reference)", ref),
                ("  + JSON-ready values (plain)", encode),
                ("GET /api/v1/overview, ASGI in-process", asgi_ms),
                ("GET /api/v1/overview, uvicorn socket", sock)]
        for name, ms in rows:
            print(f"  {name:<42} {ms:8.1f} ms  {1000 / ms:7.1f} req/s")
        print(f"\nthe API adds {asgi_ms - ref:+.1f} ms in-process ({asgi_ms / ref:.2f}x the read "
              f"model) and {sock - ref:+.1f} ms over the socket ({sock / ref:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
