"""Imported once by the forkserver that forks a run's worker processes
(``enrich.pipeline.workers``).

Everything a worker needs is loaded here, before any fork, so each worker starts warm:

- polars gets one thread per worker, set before polars loads: a run in worker processes
  already keeps every core busy with one symbol per process, and more polars threads would
  only contend for the same cores (measured: a quarter less CPU per symbol);
- the engine and the sample provider are imported, with the scipy filter its option chains
  use, and the exchange calendars are built (about 0.4 s each, once instead of per worker);
- the features' compiled kernel is loaded (numba and its machine code, ~1 s), and the
  American option tree of the option chains (``enrich.quant.american``).
"""

import datetime as dt
import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import scipy.signal  # noqa: E402, F401  - the sample option chains' volatility filter

import enrich.pipeline.engine  # noqa: E402, F401
import enrich.providers.sample.provider  # noqa: E402, F401
from enrich import calendars  # noqa: E402
from enrich.quant import american, features  # noqa: E402

for _cal in calendars.CALENDARS:
    calendars.latest_session(_cal, dt.datetime.now(dt.UTC))
features.load_kernel()
american.load_kernel()
