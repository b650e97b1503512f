"""Shared fixtures. Tests never depend on the developer's environment or network."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from enrich.config import Settings, load_settings

# Property tests time nothing: no per-example deadline (200 ms by default, which a loaded
# 2-core machine overruns) and no too-slow health check on generating the examples.
hypothesis_settings.register_profile("enrich", deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("enrich")

# A fixed instant: Wednesday 2026-11-25 22:00 UTC, after that session's close.
FIXED_NOW = dt.datetime(2026, 11, 25, 22, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session", autouse=True)
def feature_kernel_compiled():
    """Compile the features' kernel and the American option tree (or load them from numba's
    cache) before any test: on a fresh checkout the first compilation takes 10-30 s, which
    must not fall inside a timed wait (a page that waits for a run, a child process); every
    later process loads the cached machine code in about a second."""
    from enrich.quant import american
    from enrich.quant.features import load_kernel

    load_kernel()
    american.load_kernel()  # the option chains' tree, likewise


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("ENRICH_", "MASSIVE_", "POLYGON_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings(
        {"ENRICH_DATA_DIR": str(tmp_path / "data"), "ENRICH_SCHEDULER": "off"},
        dotenv_path=None,
    )


@pytest.fixture
def fixed_clock():
    return lambda: FIXED_NOW


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(data_dir, **extra) -> dict[str, str]:
    """A minimal environment for running ``python -m enrich`` in a child process."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": REPO,
        "ENRICH_DATA_DIR": str(data_dir),
        "ENRICH_SCHEDULER": "off",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env
