"""``python -m enrich serve`` serves the API on a real socket, next to the scheduler.

One test, a subprocess: the sample provider, a temporary data directory, port 0 (the
process says which port it got), a run started and followed over HTTP, then SIGTERM. The
latency of ``POST /api/v1/runs`` is measured and printed (``-s`` shows it), never asserted:
the test asserts behaviour, and timing belongs to ``bench/``.
"""

from __future__ import annotations

import datetime as dt
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

import httpx

from tests.conftest import subprocess_env

TOKEN = "serve-token-0123456789abcdef"
# serve runs on the real clock: its daily run must not fire mid-test (at the default 01:30 UTC
# it would, for a test started just before, and fill the run queue ahead of the test's runs).
FAR = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=12)).strftime("%H:%M")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = 180.0
FINAL = ("succeeded", "partial", "failed", "cancelled", "interrupted")


def _lines(stream, sink: queue.Queue) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)


def _wait_for_line(lines: queue.Queue, pattern: str, seen: list[str]) -> re.Match:
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"serve did not say {pattern!r}:\n{''.join(seen)}"
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        assert line is not None, f"serve exited before {pattern!r}:\n{''.join(seen)}"
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m


def _follow(client: httpx.Client, run_id: str) -> dict:
    deadline = time.monotonic() + TIMEOUT
    while True:
        r = client.get(f"/api/v1/runs/{run_id}")
        assert r.status_code == 200, r.text
        if r.json()["state"] in FINAL:
            return r.json()
        assert time.monotonic() < deadline, r.json()
        time.sleep(0.2)


def test_serve_starts_a_run_over_http_and_stops_on_sigterm(tmp_path):
    data = tmp_path / "data"
    env = subprocess_env(data, ENRICH_SCHEDULER="on", ENRICH_API_ADDRESS="127.0.0.1:0",
                         ENRICH_API_TOKEN=TOKEN, ENRICH_HISTORY_YEARS=1,
                         ENRICH_SCHEDULE_UTC=FAR)
    # serve's own heartbeat interval: at 1 s (dead after 3 s without a beat) a loaded machine
    # comes within a factor of two of a health check answering 503 "scheduler dead".
    proc = subprocess.Popen([sys.executable, "-m", "enrich", "serve"],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []
    reader = threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    try:
        url = _wait_for_line(lines, r"api listening on (http://127\.0\.0\.1:\d+)/api/v1",
                             seen).group(1)
        with httpx.Client(base_url=url, timeout=30) as client:
            health = client.get("/api/v1/health")
            assert health.status_code == 200, health.text
            assert health.json()["scheduler"]["state"] == "running"

            t0 = time.perf_counter()
            r = client.post("/api/v1/runs", json={"symbols": ["AAPL"], "lookback": 30},
                            headers=AUTH)
            first_ms = (time.perf_counter() - t0) * 1000
            assert r.status_code == 202, r.text
            run = _follow(client, r.json()["run_id"])
            assert run["state"] == "succeeded" and run["kind"] == "api"
            assert [(t["symbol"], t["state"]) for t in run["tasks"]] == [("AAPL", "ok")]
            assert run["progress"]["done"] == 1 and run["records_written"] > 0

            # The latency of POST /api/v1/runs on a warm service, for the report.
            times, ids = [], []
            for _ in range(9):
                t0 = time.perf_counter()
                r = client.post("/api/v1/runs", json={"symbols": ["AAPL"]}, headers=AUTH)
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 202
                ids.append(r.json()["run_id"])
            for run_id in ids:
                assert _follow(client, run_id)["state"] == "succeeded"
            print(f"\nPOST /api/v1/runs -> 202: first {first_ms:.1f} ms; warm median "
                  f"{statistics.median(times):.1f} ms, max {max(times):.1f} ms "
                  f"({len(times)} requests)")

            assert client.post("/api/v1/runs", json={}).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        _wait_for_line(lines, r"^stopped", seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        reader.join(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def test_serve_refuses_a_taken_port_with_exit_2(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = subprocess_env(tmp_path / "data", ENRICH_SCHEDULER="on",
                             ENRICH_API_ADDRESS=f"127.0.0.1:{port}")
        p = subprocess.run([sys.executable, "-m", "enrich", "serve"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert f"ENRICH_API_ADDRESS 127.0.0.1:{port}" in p.stderr and "Traceback" not in p.stderr
