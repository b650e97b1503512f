"""The alert watcher: evaluation and delivery on a thread of ``enrich.service.Services``,
every ``ALERT_EVERY_S`` seconds and whenever poked (after every run).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from enrich.alerts.lifecycle import Evaluation, deliver_pending, evaluate
from enrich.channels import Channels
from enrich.config import Settings
from enrich.pipeline.scheduler import SchedulerState
from enrich.store.catalog import host_and_pid, utcnow
from enrich.store.store import Store

log = logging.getLogger(__name__)


ALERT_EVERY_S = 60.0


class Watcher:
    """Evaluates the rules and delivers events on its own thread: every ``every_s`` seconds,
    and when poked. Never raises into the service; ``stop`` interrupts a backoff wait.

    ``clock`` is the wall clock (events, runs, heartbeats); ``now`` the data's instant
    (freshness; ``settings.now`` by default).
    """

    def __init__(self, settings: Settings, store: Store, *,
                 clock: Callable[[], dt.datetime] | None = None,
                 now: Callable[[], dt.datetime] | None = None,
                 every_s: float = ALERT_EVERY_S, channels: Channels | None = None):
        self.settings = settings
        self.store = store
        self.clock = clock or utcnow
        self.now = now or settings.now
        self.every_s = float(every_s)
        self._halt = threading.Event()
        self._poke = threading.Event()
        self.channels = channels if channels is not None else Channels(
            settings.alert_urls, halt=self._halt)
        self.channels.halt = self._halt  # stopping the watcher cuts its retries short
        self._thread: threading.Thread | None = None
        self._takeover: SchedulerState | None = None
        self._lock = threading.Lock()
        self.evaluations = 0  # finished rounds (tests wait on it)
        self.last_error: str | None = None

    def start(self) -> Watcher:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="enrich-alerts",
                                                daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._halt.set()
        self._poke.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def poke(self) -> None:
        """Evaluate now (after a run ended, a schedule was taken over)."""
        self._poke.set()

    def note_takeover(self, previous: SchedulerState, now: dt.datetime) -> None:
        """This process takes the schedule over; if its owner had died, say so once."""
        if previous.pid is not None and previous.liveness(now) == "dead" \
                and (previous.host, previous.pid) != host_and_pid():
            with self._lock:
                self._takeover = previous
            self.poke()

    def run_once(self) -> Evaluation:
        """One round: evaluate, then deliver what is pending."""
        with self._lock:
            takeover = self._takeover
        result = evaluate(self.store.catalog, self.now(), self.clock(),
                          channels=bool(self.channels), takeover=takeover)
        if takeover is not None and "scheduler" not in result.failed_rules:
            with self._lock:
                if self._takeover is takeover:
                    self._takeover = None  # reported; the next round resolves it
                    self._poke.set()
        if self.channels:
            deliver_pending(self.store.catalog, self.channels, self.clock)
        return result

    def _loop(self) -> None:
        while not self._halt.is_set():
            self._poke.wait(self.every_s)
            self._poke.clear()
            if self._halt.is_set():
                return
            try:
                self.run_once()
                self.last_error = None
            except Exception as exc:  # a busy catalog: next round
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("alerts: %s", self.channels.scrub(self.last_error)
                            if self.channels else self.last_error)
            self.evaluations += 1
