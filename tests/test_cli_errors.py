"""Every bad argument, file, path and permission of the hardening pass (issue 12, points 4 and
5): exit code 2 and one line on stderr naming what to fix — no traceback — and a refused
argument never leaves a run row.

The table runs in-process through ``enrich.cli.main`` (an escaping exception fails the test);
a few of its cases also run as real processes, where a traceback would show on stderr.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest

from enrich import cli
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from tests.conftest import REPO, subprocess_env


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable for this process: chmod for a user; for root (which ignores
    modes) the immutable attribute, or — on a file system without attributes — a permission
    check that sees it read-only."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    real = os.access
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "access", lambda p, mode, *a, **k: False
                   if Path(p) == path and mode & os.W_OK else real(p, mode, *a, **k))
        yield


@dataclass
class Case:
    argv: list[str]
    says: str  # a fragment of the one line expected
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    stdin: bytes | None = None
    during: Callable[[Path], contextlib.AbstractContextManager] | None = None


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    def setup(data: Path) -> None:
        (data.parent / name).write_bytes(content)
    return setup


def _file_at(rel: str) -> Callable[[Path], None]:
    def setup(data: Path) -> None:
        p = data / rel
        if p.is_dir():
            shutil.rmtree(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("not a folder")
    return setup


def _dir_at(rel: str) -> Callable[[Path], None]:
    def setup(data: Path) -> None:
        p = data / rel
        if p.exists():
            p.unlink()
        p.mkdir(parents=True)
    return setup


CASES: dict[str, Case] = {
    # -- point 4: arguments
    "runs --limit -1": Case(["runs", "--limit", "-1"], "--limit: -1 is out of range"),
    "runs --limit huge": Case(["runs", "--limit", "99999999999999999999"],
                              "--limit: 99999999999999999999 is out of range"),
    "runs --limit not a number": Case(["runs", "--limit", "ten"], "'ten' is not a whole"),
    "run --lookback-days huge": Case(["run", "--symbols", "AAPL", "--lookback-days",
                                      "99999999"], "--lookback-days: 99999999 is out of range"),
    "run --lookback-days 0": Case(["run", "--lookback-days", "0"],
                                  "--lookback-days: 0 is out of range"),
    # -- point 4: CSV files (the Settings page's import is tested in test_pages_hardening)
    "import: not UTF-8": Case(["symbols", "import", "{tmp}/latin1.csv"], "is not UTF-8 text",
                              setup=_write("latin1.csv", "symbol,name\nAAPL,Société\n"
                                           .encode("latin-1"))),
    "import: not UTF-8 on stdin": Case(["symbols", "import", "-"], "standard input is not UTF-8",
                                       stdin=b"AAPL\n\xff\xfe\n"),
    "import: a field over 128 KiB": Case(["symbols", "import", "{tmp}/huge.csv"],
                                         "field larger than field limit",
                                         setup=_write("huge.csv", b"AAPL," + b"x" * 140_000)),
    "import: missing file": Case(["symbols", "import", "{tmp}/nope.csv"], "cannot read"),
    "import: a folder": Case(["symbols", "import", "{tmp}"], "cannot read"),
    # -- point 4: configuration
    "MASSIVE_BASE_URL=http://[::1": Case(["status"], "MASSIVE_BASE_URL='http://[::1' is not",
                                         env={"MASSIVE_BASE_URL": "http://[::1"}),
    "MASSIVE_BASE_URL port out of range": Case(["status"], "is not an http(s) base URL",
                                               env={"MASSIVE_BASE_URL": "http://h:99999"}),
    "ENRICH_NOW=1900-01-01": Case(["run"], "ENRICH_NOW='1900-01-01' is outside",
                                  env={"ENRICH_NOW": "1900-01-01"}),
    "ENRICH_NOW far ahead": Case(["status"], "is outside the exchange calendar",
                                 env={"ENRICH_NOW": "2999-01-01"}),
    "ENRICH_NOW not a time": Case(["status"], "is not an ISO instant",
                                  env={"ENRICH_NOW": "yesterday"}),
    # -- point 4: data dir, catalog and lock paths
    "data dir under a file": Case(["symbols", "add", "IBM"], "cannot create the folder",
                                  env={"ENRICH_DATA_DIR": "{tmp}/afile/data"},
                                  setup=_write("afile", b"x")),
    "data dir is a file": Case(["status"], "exists and is not a directory",
                               env={"ENRICH_DATA_DIR": "{tmp}/afile"},
                               setup=_write("afile", b"x")),
    # Found by a QA pass: the option named what the user did not type (ENRICH_DATA_DIR).
    "--data-dir is a file": Case(["--data-dir", "{tmp}/afile", "status"],
                                 "afile' exists and is not a directory: name the data",
                                 setup=_write("afile", b"x")),
    "lake is a file": Case(["status"], "lake is a file", setup=_file_at("lake")),
    "locks is a file": Case(["run", "--symbols", "AAPL"], "locks is a file",
                            setup=_file_at("locks")),
    "symbol locks folder is a file": Case(["run", "--symbols", "AAPL"], "symbols is a file",
                                          setup=_file_at("locks/symbols")),
    "catalog is a folder": Case(["status"], "enrich.duckdb is a folder",
                                setup=_dir_at("enrich.duckdb")),
    "catalog lock is a folder": Case(["status"], "cannot open the catalog",
                                     setup=_dir_at("enrich.duckdb.lock")),
    "read-only data dir": Case(["run", "--symbols", "AAPL"], "is not writable by this user",
                               during=lambda data: read_only(data)),
    "read-only lake": Case(["status"], "lake is not writable", during=lambda d: read_only(
        d / "lake")),
    "read-only catalog": Case(["symbols", "add", "IBM"], "is not readable and writable",
                              during=lambda d: read_only(d / "enrich.duckdb")),
    # -- point 5
    "run --symbols ''": Case(["run", "--symbols", ""], "--symbols is empty"),
    "run --symbols ' , '": Case(["run", "--symbols", " , "], "--symbols is empty"),
    "run --datasets ''": Case(["run", "--datasets", ""], "--datasets is empty"),
    "run a symbol not in the universe": Case(["run", "--symbols", "NOPE"],
                                             "NOPE not in the universe"),
    "run a refused symbol": Case(["run", "--symbols", "AAPL,bad/sym"], "invalid symbol"),
    "run ß": Case(["run", "--symbols", "ß"], "invalid symbol 'ß'"),
    "symbols add ß": Case(["symbols", "add", "ß"], "invalid symbol 'ß'"),
    "status --symbol ß": Case(["status", "--symbol", "ß"], "invalid symbol 'ß'"),
    "symbols remove NOPE": Case(["symbols", "remove", "NOPE"], "NOPE is not in the universe"),
    "symbols remove a known and an unknown": Case(["symbols", "remove", "AAPL", "NOPE"],
                                                  "nothing was changed"),
    "symbols deactivate NOPE": Case(["symbols", "deactivate", "NOPE"], "NOPE is not in"),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("cli") / "data"
    add_symbols(Store(data).catalog, [("AAPL", None, None), ("MSFT", None, None)])
    return data


@pytest.fixture
def seeded(template, tmp_path, monkeypatch) -> Path:
    data = tmp_path / "data"
    shutil.copytree(template, data)
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    monkeypatch.setenv("ENRICH_HISTORY_YEARS", "1")
    return data


def _runs(data: Path) -> int:
    if not (data / "enrich.duckdb").is_file():
        return 0
    con = duckdb.connect(str(data / "enrich.duckdb"), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        con.close()


def _fill(value: str, tmp: Path) -> str:
    return value.replace("{tmp}", str(tmp))


@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_input_exits_2_with_one_line(name, seeded, monkeypatch, capsys):
    case = CASES[name]
    data, tmp = seeded, seeded.parent
    if case.setup:
        case.setup(data)
    for k, v in case.env.items():
        monkeypatch.setenv(k, _fill(v, tmp))
    if case.stdin is not None:
        monkeypatch.setattr(sys, "stdin", _Stdin(case.stdin))
    before = _runs(data)
    with case.during(data) if case.during else contextlib.nullcontext():
        try:
            code = cli.main([_fill(a, tmp) for a in case.argv])
        except SystemExit as done:  # argparse refuses a value by exiting
            code = done.code
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (name, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
    assert case.says in lines[0], (name, lines[0])
    assert "Traceback" not in err + out
    assert _runs(data) == before, name  # a refused argument never leaves a run row


class _Stdin:
    def __init__(self, data: bytes):
        import io

        self.buffer = io.BytesIO(data)


@pytest.mark.parametrize("name", ["runs --limit -1", "MASSIVE_BASE_URL=http://[::1",
                                  "import: not UTF-8", "ENRICH_NOW=1900-01-01"])
def test_the_same_as_a_real_process(name, seeded):
    case = CASES[name]
    data, tmp = seeded, seeded.parent
    if case.setup:
        case.setup(data)
    env = subprocess_env(data, **{k: _fill(v, tmp) for k, v in case.env.items()})
    p = subprocess.run([sys.executable, "-m", "enrich", *[_fill(a, tmp) for a in case.argv]],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and case.says in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_a_csv_with_a_byte_order_mark_is_simply_read(seeded, capsys):
    (seeded.parent / "bom.csv").write_bytes("symbol,asset_class,name\nIBM,stocks,IBM\n"
                                            .encode("utf-8-sig"))
    assert cli.main(["symbols", "import", str(seeded.parent / "bom.csv")]) == 0
    assert "added 1 symbol(s)" in capsys.readouterr().out


def test_base_url_user_info_is_never_shown(seeded, capsys, monkeypatch):
    monkeypatch.setenv("MASSIVE_BASE_URL", "https://alice:s3cretpass@api.example.com:8443")
    from enrich.config import load_settings

    s = load_settings(dotenv_path=None)
    assert s.base_host == "api.example.com:8443"
    assert "s3cretpass" not in repr(s.public()) and "alice" not in repr(s.public())
    assert cli.main(["health", "--json", "--no-probe"]) in (0, 1)
    out = capsys.readouterr()
    assert "s3cretpass" not in out.out + out.err and "alice" not in out.out + out.err
    monkeypatch.setenv("MASSIVE_BASE_URL", "https://alice:s3cretpass@[::1")
    assert cli.main(["status"]) == 2
    assert "s3cretpass" not in capsys.readouterr().err


def test_an_internal_error_is_one_line_and_logged(seeded, capsys, monkeypatch):
    import enrich.views.status

    def broken(*a, **k):
        raise KeyError("boom")

    monkeypatch.setattr(enrich.views.status, "status_grid", broken)
    assert cli.main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (KeyError" in err
    log = seeded / "logs" / "errors.log"
    assert str(log) in err and "Traceback" in log.read_text()


def test_streamlit_shows_no_error_details():
    import tomllib

    config = tomllib.loads((Path(REPO) / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"


def test_a_reader_that_goes_away_stops_the_cli_quietly(tmp_path):
    """`enrich symbols list | head -1`: the pipe closes before the listing is written. The
    CLI stops with the shell's SIGPIPE status, no traceback and no misleading "check
    ENRICH_DATA_DIR" line (a BrokenPipeError is an OSError)."""
    data = tmp_path / "data"
    add_symbols(Store(data).catalog, [(f"S{i:04d}", "stocks", None) for i in range(50)])
    # The reader is gone before the child starts (closing it after the start raced the
    # child, which a slow test process could let write its 50 lines into the pipe first).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "enrich", "symbols", "list"],
                                stdout=write_end, stderr=subprocess.PIPE,
                                env=subprocess_env(data), cwd=REPO)
    finally:
        os.close(write_end)
    try:
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == cli.EXIT_PIPE, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stderr.close()
    assert err == "", err
